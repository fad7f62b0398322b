"""The cold-start ε knob of the parallel generator (ParallelSidGenerator.new_item_share): every
top-j of a returned list holds at most floor(ε·j) new items, and the list is the best one under
that cap (a by-hand greedy agrees); ε = 0 never returns a new item, ε = 1 can."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from onerec.parallel_generator import ParallelSidGenerator

from onerec_helpers import random_sids


def _greedy_by_hand(scores: np.ndarray, new: np.ndarray, k: int, share: float) -> list[int]:
    """Walk the items best first, skipping a new item while it would break a prefix quota."""
    picked, taken_new = [], 0
    order = [i for i in np.argsort(-scores, kind="stable") if np.isfinite(scores[i])]
    old = [i for i in order if not new[i]]
    fresh = [i for i in order if new[i]]
    while len(picked) < k and (old or fresh):
        j = len(picked) + 1
        if fresh and taken_new + 1 <= np.floor(share * j + 1e-9) and (not old or scores[fresh[0]] > scores[old[0]]):
            picked.append(fresh.pop(0))
            taken_new += 1
        else:
            picked.append(old.pop(0))
    return picked


@pytest.mark.parametrize("share", [0.0, 0.2, 0.5, 1.0])
def test_the_new_item_share_caps_every_prefix_and_is_the_best_list_under_it(share):
    sids = random_sids(60, levels=3, codebook_size=4, seed=3)
    torch.manual_seed(0)
    model = ParallelSidGenerator(sids, d_model=16, num_layers=1, num_heads=2, dropout=0.0, max_len=8,
                                 beam_width=20, exclude_history=True, score_batch=3,
                                 new_item_share=share).eval()
    new = np.zeros(61, dtype=bool)
    new[np.random.default_rng(0).choice(np.arange(1, 61), 15, replace=False)] = True
    model.set_new_items(new)
    from retrieval.data.batch import HistoryBatch
    hist = torch.tensor([[0, 3, 9, 27], [5, 6, 7, 8], [0, 0, 1, 50], [12, 40, 41, 2]])
    res = model.beam_search(HistoryBatch(torch.arange(4), hist, torch.zeros_like(hist)))
    with torch.no_grad():
        scores = model.item_scores(model.encode(hist)[:, -1])
    for b in range(4):
        items = res.items[b].tolist()
        prefix_new = np.cumsum(new[items])
        assert all(prefix_new[j] <= np.floor(share * (j + 1) + 1e-9) for j in range(20))
        sc = scores[b].clone()
        sc[hist[b]] = -torch.inf
        assert items == _greedy_by_hand(sc.numpy(), new, 20, share)
        if share == 1.0:
            assert items == torch.topk(sc, 20).indices.tolist()           # no cap: the plain top-K
    if share == 0.0:
        assert not new[res.items.numpy()].any()
    model.new_item_share = 1.0
    assert new[model.beam_search(HistoryBatch(torch.arange(4), hist, torch.zeros_like(hist))).items.numpy()].any()


def _training_batch():
    from onerec.item_windows import WindowBatch
    items = torch.tensor([[0, 3, 9, 27], [5, 6, 7, 8]])
    targets = torch.tensor([[0, 9, 27, 30], [6, 7, 8, 2]])
    return WindowBatch(items, targets)


@pytest.mark.parametrize("smoothing", [0.0, 0.1])
def test_new_items_are_no_negatives_in_training(smoothing):
    """The cold-start protocol's new items did not exist when the model was trained: the catalogue
    cross-entropy normalises over the other items only (and label smoothing stays finite)."""
    sids = random_sids(60, levels=3, codebook_size=4, seed=3)
    torch.manual_seed(0)
    model = ParallelSidGenerator(sids, d_model=16, num_layers=1, num_heads=2, dropout=0.0, max_len=8,
                                 label_smoothing=smoothing)
    batch = _training_batch()
    everything = model(batch)
    new = np.zeros(61, dtype=bool)
    new[[1, 4, 11, 12, 40, 50]] = True                     # none of them a target of the batch
    model.set_new_items(new)
    seen_only = model(batch)
    h = model.encode(batch.items)
    keep = batch.targets > 0
    logits = model._catalogue_logits(h[keep])[:, ~new]      # the catalogue without the new items
    target = torch.as_tensor(np.cumsum(~new) - 1)[batch.targets[keep]]
    want = torch.nn.functional.cross_entropy(logits[:, 1:], target - 1, label_smoothing=smoothing)
    assert torch.isfinite(seen_only) and torch.isfinite(everything)
    assert torch.allclose(seen_only, want, atol=1e-5) and not torch.allclose(seen_only, everything)
    seen_only.backward()
    assert all(torch.isfinite(p.grad).all() for p in model.parameters() if p.grad is not None)


def test_code_dropout_builds_training_item_vectors_from_a_subset_of_codes():
    sids = random_sids(40, levels=4, codebook_size=4, seed=1)
    torch.manual_seed(0)
    model = ParallelSidGenerator(sids, d_model=8, num_layers=1, num_heads=2, dropout=0.0, max_len=8,
                                 code_dropout=0.5)
    full = model.eval().item_vectors()
    emb = model.code_emb.weight
    assert torch.allclose(full[1:], emb[model.item_tokens[1:]].sum(1), atol=1e-6)   # eval: every code
    model.train()
    torch.manual_seed(3)
    dropped = model.item_vectors()
    torch.manual_seed(3)
    keep = torch.rand(model.item_tokens.shape) >= 0.5
    want = (emb[model.item_tokens] * keep[..., None]).sum(1) / 0.5
    assert torch.allclose(dropped[1:], want[1:], atol=1e-5) and not torch.allclose(dropped, full)
    assert model(_training_batch()).isfinite()
    with pytest.raises(Exception, match="code_dropout"):
        ParallelSidGenerator(sids, d_model=8, num_layers=1, num_heads=2, code_dropout=1.0)
