"""TiSASRec: the vectorised relation matrix and the memory-light attention against direct versions."""
import math

import numpy as np
import torch

from retrieval.scorers.sasrec import AttentionContext
from retrieval.scorers.time_interval import TimeIntervalAttention, time_relation_matrix


def _relation_by_pairs(times: np.ndarray, valid: np.ndarray, time_span: int) -> np.ndarray:
    """The docs/protocol.md §5 definition, one pair at a time in plain Python."""
    B, L = times.shape
    out = np.zeros((B, L, L), dtype=np.int64)
    for b in range(B):
        idx = [i for i in range(L) if valid[b, i]]
        gaps = [abs(int(times[b, i]) - int(times[b, j])) for i in idx for j in idx]
        nonzero = [g for g in gaps if g > 0]
        gap = min(nonzero) if nonzero else 1
        for i in idx:
            for j in idx:
                out[b, i, j] = min(round(abs(int(times[b, i]) - int(times[b, j])) / gap), time_span)
    return out


def test_relation_matrix_equals_direct_per_pair_computation():
    rng = np.random.default_rng(0)
    for trial in range(20):
        B, L = 4, int(rng.integers(1, 12))
        steps = rng.choice([0, 0, 1, 3, 7, 86_400, 1_000_000], size=(B, L))  # ties, small and big gaps
        times = 1_500_000_000 + np.cumsum(steps, axis=1)
        lengths = rng.integers(0, L + 1, size=B)
        valid = np.arange(L)[None, :] >= (L - lengths)[:, None]             # left padding
        times = np.where(valid, times, 0)
        span = int(rng.choice([3, 16, 256]))
        got = time_relation_matrix(torch.from_numpy(times), torch.from_numpy(valid), span).numpy()
        np.testing.assert_array_equal(got, _relation_by_pairs(times, valid, span), err_msg=f"trial {trial}")


def test_relation_matrix_hand_example():
    # gaps 10, 0, 25 -> smallest nonzero gap 10; |t_i - t_j| / 10 rounded half to even, clipped at 3.
    times = torch.tensor([[0, 100, 110, 110, 135]])
    valid = torch.tensor([[False, True, True, True, True]])
    want = torch.tensor([[[0, 0, 0, 0, 0],
                          [0, 0, 1, 1, 3],        # 35/10 = 3.5 -> 4 -> clipped 3
                          [0, 1, 0, 0, 2],        # 25/10 = 2.5 -> 2 (half to even)
                          [0, 1, 0, 0, 2],
                          [0, 3, 2, 2, 0]]])
    assert torch.equal(time_relation_matrix(times, valid, time_span=3), want)


def test_positions_as_times_give_position_gaps():
    """Beauty has no timestamps (times = event positions): the relations are |i - j|."""
    times = torch.arange(6)[None] + 17
    valid = torch.ones(1, 6, dtype=torch.bool)
    rel = time_relation_matrix(times, valid, time_span=256)[0]
    assert torch.equal(rel, (torch.arange(6)[:, None] - torch.arange(6)[None]).abs())


def test_interval_attention_equals_the_reference_formula():
    """The gather/scatter formulation equals TiSASRec's explicit (B, L, L, d) computation."""
    torch.manual_seed(0)
    B, L, d, H, S = 3, 7, 8, 2, 5
    att = TimeIntervalAttention(d, H, dropout=0.0).eval()
    x = torch.randn(B, L, d)
    valid = torch.ones(B, L, dtype=torch.bool)
    valid[0, :3] = False
    rel = torch.randint(0, S + 1, (B, L, L))
    mask = (torch.ones(L, L).tril().bool() & (valid[:, None, :] | torch.eye(L, dtype=torch.bool)))[:, None]
    ctx = AttentionContext(mask=mask, pos_k=torch.randn(B, L, d), pos_v=torch.randn(B, L, d),
                           time_k=torch.randn(S + 1, d), time_v=torch.randn(S + 1, d), relation=rel)
    got = att(x, ctx)

    dh = d // H
    q, k, v = att.q(x), att.k(x), att.v(x)
    tk, tv = ctx.time_k[rel], ctx.time_v[rel]                             # (B, L, L, d)
    want = torch.zeros(B, L, d)
    for h in range(H):
        sl = slice(h * dh, (h + 1) * dh)
        s = (q[..., sl] @ k[..., sl].transpose(1, 2) + q[..., sl] @ ctx.pos_k[..., sl].transpose(1, 2)
             + torch.einsum("bid,bijd->bij", q[..., sl], tk[..., sl])) / math.sqrt(dh)
        a = s.masked_fill(~mask[:, 0], float("-inf")).softmax(-1)
        want[..., sl] = a @ v[..., sl] + a @ ctx.pos_v[..., sl] + torch.einsum("bij,bijd->bid", a, tv[..., sl])
    assert torch.allclose(got, want, atol=1e-5)
