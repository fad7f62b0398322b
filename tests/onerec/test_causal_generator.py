"""The default generator (onerec.causal_generator): item-level windows, exact constrained decoding
against brute-force enumeration, validity of every output, and learning."""
from __future__ import annotations

import itertools

import numpy as np
import pytest
import torch

from onerec.causal_generator import CausalSidGenerator, head_log_prob
from onerec.item_windows import ItemWindows
from retrieval.data.batch import HistoryBatch
from retrieval.core.errors import RecError

from onerec_helpers import random_sids
from tiny_splits import make_split


def _model(sids, seed=0, **kw) -> CausalSidGenerator:
    torch.manual_seed(seed)
    args = dict(d_model=16, num_layers=1, num_heads=2, head_hidden=16, dropout=0.0, max_len=8,
                beam_width=10, exclude_history=False)
    args.update(kw)
    return CausalSidGenerator(sids, **args).eval()


def _history(rows) -> HistoryBatch:
    width = max(len(r) for r in rows)
    items = torch.tensor([[0] * (width - len(r)) + list(r) for r in rows], dtype=torch.long)
    return HistoryBatch(torch.arange(len(rows)), items, torch.zeros_like(items))


# ---- windows ---------------------------------------------------------------------------------

def test_every_training_interaction_is_a_target_exactly_once():
    train = [[1, 2, 3, 4, 5, 6, 7], [8], [9, 10], list(range(1, 13))]
    split = make_split(train, [1] * 4, [1] * 4, 12)
    w = ItemWindows(split, max_len=3)
    b = w.batch(np.arange(len(w)))
    # user 0: 6 targets -> windows of 3 + 3; user 1: none; user 2: 1; user 3: 11 -> 3+3+3+2
    assert sorted(w.lengths().tolist()) == sorted([3, 3, 1, 3, 3, 3, 2])
    assert w.num_positions == 6 + 0 + 1 + 11
    got = sorted((int(u), int(t)) for u, row in zip(w.users, b.targets.numpy()) for t in row if t)
    want = sorted((u, t) for u, s in enumerate(train) for t in s[1:])
    assert got == want
    # inputs are the targets shifted by one: the item just before each target
    tgt, inp = b.targets.numpy(), b.items.numpy()
    for u, ti, ii in zip(w.users, tgt, inp):
        seq = train[u]
        for t, i in zip(ti, ii):
            if t:
                assert i != 0 and seq[seq.index(t) - 1] == i


def test_epoch_batches_are_a_permutation_and_a_function_of_seed_and_epoch():
    split = make_split([[1, 2, 3]] * 10 + [[1, 2, 3, 4, 5, 6]] * 7, [1] * 17, [1] * 17, 6)
    w = ItemWindows(split, max_len=4)
    a = w.epoch_batches(4, seed=3, epoch=1)
    assert sorted(np.concatenate(a).tolist()) == list(range(len(w)))
    assert [x.tolist() for x in a] == [x.tolist() for x in w.epoch_batches(4, seed=3, epoch=1)]
    assert [x.tolist() for x in a] != [x.tolist() for x in w.epoch_batches(4, seed=3, epoch=2)]


# ---- decoding --------------------------------------------------------------------------------

def _brute_force(model, hist: HistoryBatch) -> torch.Tensor:
    """log p(item | history) of every item (U, N) by teacher-forcing every full ID."""
    h = model.encode(hist.items)[:, -1]                                  # (U, d)
    U, N = h.shape[0], model.num_items
    tokens = model.item_tokens[1:]                                       # (N, L+1)
    lp = head_log_prob(model, h.repeat_interleave(N, 0), tokens.repeat(U, 1))
    return lp.view(U, N)


@pytest.mark.parametrize("seed,trie_softmax,temperature",
                         [(0, True, 0.0), (1, True, 0.0), (2, True, 0.0), (0, False, 0.0), (1, True, 0.1)])
def test_beam_search_equals_brute_force_enumeration_on_a_tiny_catalogue(seed, trie_softmax, temperature):
    sids = random_sids(14, levels=2, codebook_size=3, seed=seed)       # collisions -> d codes
    model = _model(sids, seed=seed, beam_width=14, trie_softmax=trie_softmax,
                   head_temperature=temperature)
    hist = _history([[1, 2, 3], [5], [14, 13, 12, 11, 10, 9, 8, 7, 6, 5]])
    res = model.beam_search(hist)
    brute = _brute_force(model, hist)                                    # (U, N)
    order = torch.argsort(brute, dim=1, descending=True)
    assert torch.equal(res.items, order + 1)
    torch.testing.assert_close(res.scores, brute.gather(1, order), atol=1e-5, rtol=1e-5)


def test_with_the_trie_softmax_the_item_probabilities_sum_to_one():
    sids = random_sids(20, levels=3, codebook_size=3, seed=4)
    model = _model(sids)
    p = _brute_force(model, _history([[1, 2], [7]])).exp().sum(1)
    torch.testing.assert_close(p, torch.ones(2), atol=1e-5, rtol=0)


def test_label_smoothing_ignores_the_codes_the_trie_rules_out():
    sids = random_sids(20, levels=2, codebook_size=4, seed=4)
    split = make_split([[1, 2, 3, 4], [5, 6, 7]], [1, 1], [1, 1], 20)
    w = ItemWindows(split, max_len=8)
    batch = w.batch(np.arange(len(w)))
    plain = _model(sids, label_smoothing=0.0)(batch)
    smooth = _model(sids, label_smoothing=0.1)(batch)
    assert torch.isfinite(smooth) and smooth.item() != pytest.approx(plain.item())


def test_a_narrow_beam_is_the_top_of_the_exact_list_when_the_trie_is_narrower():
    # every prefix node has <= 2 children and the beam keeps 4: nothing is ever pruned
    prefixes = np.array(list(itertools.product(range(2), range(2))))     # 4 items, distinct IDs
    from onerec_helpers import sids_from_prefixes
    sids = sids_from_prefixes(prefixes, codebook_size=2)
    model = _model(sids, beam_width=4)
    hist = _history([[1], [2, 3]])
    brute = _brute_force(model, hist)
    assert torch.equal(model.beam_search(hist).items, torch.argsort(brute, 1, descending=True) + 1)


def test_decoding_never_returns_an_invalid_or_repeated_or_history_item():
    sids = random_sids(60, levels=3, codebook_size=4, seed=5)
    model = _model(sids, beam_width=50, exclude_history=True)
    rng = np.random.default_rng(0)
    rows = [rng.choice(np.arange(1, 61), size=rng.integers(1, 30), replace=False).tolist()
            for _ in range(25)]
    hist = _history(rows)
    items = model.generate(hist, 50)
    for row, out in zip(rows, items.tolist()):
        real = [i for i in out if i]
        assert all(1 <= i <= 60 for i in real)
        assert len(set(real)) == len(real)
        assert not set(real) & set(row)
        assert len(real) == min(50, 60 - len(row))        # every remaining item is reachable here


def test_a_new_item_needs_no_retraining_to_be_read_or_generated():
    """An item is its codes: two catalogues that give item 3 the same codes give item 3 the same
    input vector, so nothing is indexed by item id."""
    sids = random_sids(10, levels=2, codebook_size=4, seed=1)
    model = _model(sids)
    vec = model.code_emb(model.item_tokens).sum(-2)                      # (N+1, d)
    same = (model.item_tokens[:, None, :] == model.item_tokens[None, :, :]).all(-1)
    assert torch.equal(same, torch.eye(11, dtype=torch.bool))           # IDs are unique
    assert torch.all(vec[0] == 0)
    assert not any(n.startswith("item") for n, _ in model.named_parameters())


def test_generate_refuses_more_items_than_beams():
    model = _model(random_sids(10, levels=2, codebook_size=4), beam_width=5)
    with pytest.raises(RecError, match="beam_width=5 is smaller than the 10 items"):
        model.generate(_history([[1]]), 10)


@pytest.mark.parametrize("kw,msg", [(dict(d_model=10, num_heads=3), "multiple of num_heads"),
                                    (dict(max_len=0), "max_len=0"),
                                    (dict(dropout=1.5), "dropout=1.5")])
def test_bad_sizes_are_one_clear_error(kw, msg):
    with pytest.raises(RecError, match=msg):
        _model(random_sids(10, levels=2, codebook_size=4), **kw)


# ---- learning --------------------------------------------------------------------------------

def test_all_position_training_learns_the_transitions_and_decodes_them_first():
    """item i -> i+1 on a ring of 24 items with random semantic IDs: after training, the top
    generated item for every prefix of the sequence is the true next item."""
    N = 24
    train = [[(u + k) % N + 1 for k in range(8)] for u in range(N)]
    split = make_split(train, [1] * N, [1] * N, N)
    model = _model(random_sids(N, levels=2, codebook_size=4, seed=0), d_model=32, head_hidden=32,
                   beam_width=5)
    windows = ItemWindows(split, max_len=8)
    batch = windows.batch(np.arange(len(windows)))
    opt = torch.optim.AdamW(model.parameters(), lr=1e-2)
    model.train()
    first = None
    for _ in range(150):
        loss = model(batch)
        first = first if first is not None else loss.item()
        opt.zero_grad()
        loss.backward()
        opt.step()
    assert loss.item() < 0.05 * first
    top = model.generate(_history(train), 5)[:, 0]
    assert top.tolist() == [s[-1] % N + 1 for s in train]
