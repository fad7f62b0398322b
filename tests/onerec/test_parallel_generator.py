"""The parallel generator over long IDs (onerec.parallel_generator) and the OPQ tokenizer that makes
them (rqvae.product_quantizer): exact scoring against a brute-force sum, validity of every output,
learning, encoding unseen embeddings, and the artifact with IDs wider than an int64 key."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from onerec.item_windows import ItemWindows
from onerec.parallel_generator import ParallelSidGenerator
from retrieval.data.batch import HistoryBatch
from retrieval.core.errors import RecError
from rqvae.artifact import SemanticIds
from rqvae.disambiguation import disambiguate
from rqvae.product_quantizer import OPQTokenizer

from onerec_helpers import random_sids
from tiny_splits import make_split


def _model(sids, seed=0, **kw) -> ParallelSidGenerator:
    torch.manual_seed(seed)
    args = dict(d_model=16, num_layers=1, num_heads=2, dropout=0.0, max_len=8, beam_width=10,
                exclude_history=False, score_batch=2, objective="codes")
    args.update(kw)
    return ParallelSidGenerator(sids, **args).eval()


def _history(rows) -> HistoryBatch:
    width = max(len(r) for r in rows)
    items = torch.tensor([[0] * (width - len(r)) + list(r) for r in rows], dtype=torch.long)
    return HistoryBatch(torch.arange(len(rows)), items, torch.zeros_like(items))


def _brute_force(model, hist: HistoryBatch) -> torch.Tensor:
    """(U, N) Σ over heads of log p(code of item n), one item at a time."""
    h = model.encode(hist.items)[:, -1]
    logps = model.code_log_probs(h)
    out = torch.zeros(h.shape[0], model.num_items)
    for n in range(1, model.num_items + 1):
        for m, lp in enumerate(logps):
            out[:, n - 1] += lp[:, int(model.item_tokens[n, m] - model.vocab.offsets[m])]
    return out


@pytest.mark.parametrize("seed,temperature", [(0, 0.07), (1, 0.0), (2, 0.5)])
def test_item_scores_equal_the_brute_force_sum_of_code_log_probs(seed, temperature):
    sids = random_sids(14, levels=5, codebook_size=4, seed=seed)        # collisions -> d head
    model = _model(sids, seed=seed, head_temperature=temperature, beam_width=14)
    assert model.num_heads_out == 6
    hist = _history([[1, 2, 3], [5], [14, 13, 12, 11, 10, 9, 8, 7, 6, 5]])
    want = _brute_force(model, hist)
    got = model.item_scores(model.encode(hist.items)[:, -1])
    assert torch.isinf(got[:, 0]).all()
    assert torch.allclose(got[:, 1:], want, atol=1e-5)
    res = model.beam_search(hist, 14)                                    # exact top-K
    order = torch.argsort(want, dim=1, descending=True, stable=True) + 1
    assert torch.allclose(res.scores, torch.gather(want, 1, order - 1), atol=1e-5)
    assert torch.equal(res.tokens, model.item_tokens[res.items])


@pytest.mark.parametrize("temperature", [0.07, 0.0])
def test_the_items_objective_scores_an_item_by_its_summed_code_embeddings(temperature):
    sids = random_sids(14, levels=5, codebook_size=4, seed=4)
    model = _model(sids, objective="items", head_temperature=temperature, beam_width=14)
    hist = _history([[1, 2, 3], [9, 4]])
    h = model.encode(hist.items)[:, -1]
    want = torch.zeros(2, 14)
    for n in range(1, 15):                                               # one item at a time
        v = sum(model.code_emb.weight[int(t)] for t in model.item_tokens[n])
        want[:, n - 1] = (torch.cosine_similarity(h, v[None], dim=-1) / temperature if temperature
                          else h @ v)
    got = model.item_scores(h)
    assert torch.isinf(got[:, 0]).all() and torch.allclose(got[:, 1:], want, atol=1e-4)
    res = model.beam_search(hist, 14)
    assert torch.equal(res.items, torch.argsort(want, dim=1, descending=True, stable=True) + 1)


def test_every_codebook_is_a_distribution():
    model = _model(random_sids(20, levels=4, codebook_size=8, seed=3))
    for lp in model.code_log_probs(torch.randn(5, 16)):
        assert torch.allclose(lp.exp().sum(-1), torch.ones(5), atol=1e-5)


def test_decoding_never_returns_an_invalid_or_repeated_or_history_item():
    sids = random_sids(30, levels=6, codebook_size=4, seed=2)
    model = _model(sids, exclude_history=True, beam_width=30)
    rows = [[1, 2, 3, 4], [30], list(range(5, 30))]
    items = model.generate(_history(rows), 30)
    for row, hist in zip(items.tolist(), rows):
        real = [i for i in row if i]
        assert len(real) == len(set(real)) == 30 - len(hist)            # every other item, once
        assert not set(real) & set(hist) and all(1 <= i <= 30 for i in real)
        assert row[len(real):] == [0] * (30 - len(real))                 # padding after the items


def test_generate_refuses_more_items_than_beam_width_and_bad_sizes_are_one_error():
    sids = random_sids(10, levels=3, codebook_size=4)
    with pytest.raises(RecError, match="beam_width=5 is smaller than the 10 items"):
        _model(sids, beam_width=5).generate(_history([[1]]), 10)
    for kw, msg in [(dict(d_model=10, num_heads=3), "multiple of num_heads"),
                    (dict(score_batch=0), "score_batch=0"), (dict(head_temperature=-1.0), "head_temperature")]:
        with pytest.raises(RecError, match=msg):
            _model(sids, **kw)


@pytest.mark.parametrize("objective", ["codes", "items"])
def test_all_position_training_learns_the_transitions_and_ranks_them_first(objective):
    """item i -> i+1 on a ring of 24 items with random 6-code IDs."""
    N = 24
    train = [[(u + k) % N + 1 for k in range(8)] for u in range(N)]
    split = make_split(train, [1] * N, [1] * N, N)
    model = _model(random_sids(N, levels=6, codebook_size=4, seed=0, collide=0.0), d_model=32,
                   beam_width=5, objective=objective)
    windows = ItemWindows(split, max_len=8)
    batch = windows.batch(np.arange(len(windows)))
    opt = torch.optim.AdamW(model.parameters(), lr=1e-2)
    model.train()
    first = None
    for _ in range(200):
        loss = model(batch)
        first = first if first is not None else loss.item()
        opt.zero_grad()
        loss.backward()
        opt.step()
    assert loss.item() < 0.1 * first
    top = model.generate(_history(train), 5)[:, 0]
    assert top.tolist() == [s[-1] % N + 1 for s in train]


# ---- OPQ tokenizer and wide artifacts -------------------------------------------------------

def _clustered(n=600, d=24, seed=0):
    rng = np.random.default_rng(seed)
    centres = rng.normal(size=(20, d))
    return (centres[rng.integers(0, 20, n)] + 0.3 * rng.normal(size=(n, d))).astype(np.float32)


def test_opq_codes_are_in_range_encode_repeats_fit_and_reconstruct_better_than_the_mean():
    x = _clustered()
    tok = OPQTokenizer(levels=8, codebook_size=16, seed=0, opq_iterations=5)
    codes = tok.fit(x)
    assert codes.shape == (600, 8) and codes.min() >= 0 and codes.max() < 16
    assert np.array_equal(tok.encode(x), codes)
    err = ((x - tok.reconstruction) ** 2).sum() / ((x - x.mean(0)) ** 2).sum()
    assert err < 0.3
    rot = tok.rotation
    assert np.allclose(rot @ rot.T, np.eye(rot.shape[0]), atol=1e-4)     # orthonormal rows
    # an unseen embedding gets the codes of its nearest centroids, also after reloading the weights
    new = x[:7] + 0.01
    again = OPQTokenizer(levels=8, codebook_size=16)
    again.load_weights(tok.weights())
    assert np.array_equal(again.encode(new), tok.encode(new))


def test_opq_input_width_not_divisible_by_the_codebooks_is_padded():
    x = _clustered(d=20)
    tok = OPQTokenizer(levels=8, codebook_size=16, opq_iterations=2)
    assert tok.fit(x).shape == (600, 8) and tok.rotation.shape == (24, 20)


@pytest.mark.parametrize("kw,msg", [(dict(codebook_size=100), "power-of-two"),
                                    (dict(levels=0), "at least 1 codebook")])
def test_opq_bad_sizes_are_one_clear_error(kw, msg):
    with pytest.raises(RecError, match=msg):
        OPQTokenizer(**{"levels": 4, "codebook_size": 16, **kw})


def test_an_artifact_wider_than_an_int64_key_maps_ids_to_items_and_back(tmp_path):
    rng = np.random.default_rng(0)
    codes = rng.integers(0, 256, size=(50, 32))
    codes[7] = codes[3]                                                  # a collision: d = 1
    full = disambiguate(codes)
    sids = SemanticIds(np.concatenate([np.full((1, 33), -1), full]), 256, "fp", tokenizer="opq")
    sids.save(tmp_path)
    back = SemanticIds.load(tmp_path)
    items = np.arange(1, 51)
    assert back.items_of(back.ids_of(items)).tolist() == items.tolist()
    order = back.items_by_id()
    assert [tuple(r) for r in back.codes[order]] == sorted(tuple(r) for r in back.codes[order])
    unknown = full[:2].copy()
    unknown[:, 5] = (unknown[:, 5] + 1) % 256
    unknown[1, -1] = 9                                                   # out-of-range d
    assert back.items_of(unknown).tolist() == [0, 0]


def test_the_items_objective_is_the_catalogue_cross_entropy_of_the_item_scores():
    N = 12
    train = [[(u + k) % N + 1 for k in range(5)] for u in range(N)]
    split = make_split(train, [1] * N, [1] * N, N)
    model = _model(random_sids(N, levels=4, codebook_size=4, seed=1), objective="items")
    w = ItemWindows(split, max_len=8)
    batch = w.batch(np.arange(len(w)))
    h = model.encode(batch.items)
    keep = batch.targets[:, -h.shape[1]:] > 0
    scores = model.item_scores(h[keep])                                  # (P, N+1), col 0 -inf
    want = -torch.log_softmax(scores, -1).gather(1, batch.targets[:, -h.shape[1]:][keep][:, None]).mean()
    assert torch.allclose(model(batch), want, atol=1e-5)
    with pytest.raises(RecError, match="objective='x'"):
        _model(random_sids(N, levels=4, codebook_size=4), objective="x")


def test_the_chunked_catalogue_loss_equals_the_whole_one_with_the_same_gradients():
    N = 12
    train = [[(u + k) % N + 1 for k in range(6)] for u in range(N)]
    w = ItemWindows(make_split(train, [1] * N, [1] * N, N), max_len=8)
    batch = w.batch(np.arange(len(w)))
    grads = []
    for chunk in (4096, 7):                                              # 60 positions: 9 chunks
        model = _model(random_sids(N, levels=4, codebook_size=4, seed=1), objective="items",
                       loss_chunk=chunk)
        loss = model(batch)
        loss.backward()
        grads.append((loss.detach(), model.code_emb.weight.grad.clone()))
    assert torch.allclose(grads[0][0], grads[1][0], atol=1e-6)
    assert torch.allclose(grads[0][1], grads[1][1], atol=1e-6)
