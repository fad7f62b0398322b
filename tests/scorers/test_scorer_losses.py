"""Every scorer loss on a case small enough to compute by hand."""
import math

import pytest
import torch
import torch.nn.functional as F

from retrieval.core.errors import RecError
from retrieval.scorers.losses import LOSSES, ScorerLoss, full_softmax_cross_entropy

# Items 1..3 with 1-d embeddings 1, 2, -1 (row 0 = padding); two positions with hidden 1 and 0.5.
EMB = torch.tensor([[0.0], [1.0], [2.0], [-1.0]])
H = torch.tensor([[1.0], [0.5]])
POS = torch.tensor([1, 2])                  # s+ = 1·1 = 1 and 0.5·2 = 1
NEG = torch.tensor([[2, 3], [3, 1]])        # s- = (2, -1) and (-0.5, 0.5)
sp = lambda x: math.log1p(math.exp(x))      # noqa: E731  softplus


def loss(name, **kw):
    return float(ScorerLoss(name, **kw)(H, POS, NEG, EMB))


def test_bce():
    want = ((sp(-1) + (sp(2) + sp(-1)) / 2) + (sp(-1) + (sp(-0.5) + sp(0.5)) / 2)) / 2
    assert loss("bce", num_negatives=2) == pytest.approx(want, rel=1e-6)


def test_bce_with_one_negative_is_the_original_two_term_objective():
    got = float(ScorerLoss("bce")(H, POS, NEG[:, :1], EMB))
    want = (-math.log(1 / (1 + math.exp(-1))) - math.log(1 - 1 / (1 + math.exp(-2)))
            - math.log(1 / (1 + math.exp(-1))) - math.log(1 - 1 / (1 + math.exp(0.5)))) / 2
    assert got == pytest.approx(want, rel=1e-6)


def test_bpr():
    want = (sp(2 - 1) + sp(-1 - 1) + sp(-0.5 - 1) + sp(0.5 - 1)) / 4
    assert loss("bpr", num_negatives=2) == pytest.approx(want, rel=1e-6)


def test_margin():
    # max(0, 1 - 1 + s-) = (2, 0, 0, 0.5)
    assert loss("margin", num_negatives=2, margin=1.0) == pytest.approx((2 + 0.5) / 4)
    assert loss("margin", num_negatives=2, margin=3.0) == pytest.approx((4 + 1 + 1.5 + 2.5) / 4)


def test_sampled_softmax_and_logq_correction():
    lse = lambda xs: math.log(sum(math.exp(x) for x in xs))   # noqa: E731
    want = ((lse([1, 2, -1]) - 1) + (lse([1, -0.5, 0.5]) - 1)) / 2
    assert loss("sampled_softmax", num_negatives=2) == pytest.approx(want, rel=1e-6)
    t = 0.5
    want_t = ((lse([2, 4, -2]) - 2) + (lse([2, -1, 1]) - 2)) / 2
    assert loss("sampled_softmax", num_negatives=2, temperature=t) == pytest.approx(want_t, rel=1e-6)
    # logQ: logits s - log q(item); q = (_, 0.5, 0.25, 0.25)
    log_q = torch.log(torch.tensor([1.0, 0.5, 0.25, 0.25]))
    lq = [0.0, math.log(0.5), math.log(0.25), math.log(0.25)]
    row1 = [1 - lq[1], 2 - lq[2], -1 - lq[3]]
    row2 = [1 - lq[2], -0.5 - lq[3], 0.5 - lq[1]]
    want_q = ((lse(row1) - row1[0]) + (lse(row2) - row2[0])) / 2
    got_q = float(ScorerLoss("sampled_softmax", num_negatives=2, logq_correction=True)(H, POS, NEG, EMB, log_q))
    assert got_q == pytest.approx(want_q, rel=1e-6)


def test_full_cross_entropy_over_all_items_excludes_padding():
    lse = lambda xs: math.log(sum(math.exp(x) for x in xs))   # noqa: E731
    want = ((lse([1, 2, -1]) - 1) + (lse([0.5, 1, -0.5]) - 1)) / 2
    assert float(ScorerLoss("ce")(H, POS, None, EMB)) == pytest.approx(want, rel=1e-6)


def test_full_cross_entropy_gradients_match_autograd_in_every_memory_mode():
    torch.manual_seed(0)
    h = torch.randn(37, 6, requires_grad=True)
    emb = torch.randn(51, 6, requires_grad=True)
    pos = torch.randint(1, 51, (37,))
    logits = h @ emb.T
    ref = F.cross_entropy(logits[:, 1:], pos - 1)
    g_ref = torch.autograd.grad(ref, [h, emb])
    for chunk, keep in ((1024, 10**9), (8, 10**9), (8, 0)):           # kept logits / recomputed
        got = full_softmax_cross_entropy(h, pos, emb, chunk=chunk, keep_elements=keep)
        g = torch.autograd.grad(got, [h, emb])
        assert torch.allclose(got, ref, atol=1e-6)
        assert torch.allclose(g[0], g_ref[0], atol=1e-6) and torch.allclose(g[1], g_ref[1], atol=1e-6)


def test_in_batch_infonce_uses_distinct_positives_as_candidates():
    pos = torch.tensor([1, 2, 1])
    h = torch.tensor([[1.0], [0.5], [2.0]])
    # candidates: items {1, 2} (item 1 appears twice but is one candidate), temperature 0.5
    lse = lambda xs: math.log(sum(math.exp(x) for x in xs))   # noqa: E731
    rows = [([1 / 0.5, 2 / 0.5], 0), ([0.5 / 0.5, 1 / 0.5], 1), ([2 / 0.5, 4 / 0.5], 0)]
    want = sum(lse(r) - r[t] for r, t in rows) / 3
    got = float(ScorerLoss("infonce", temperature=0.5)(h, pos, None, EMB))
    assert got == pytest.approx(want, rel=1e-6)


def test_negative_counts_requested_by_each_loss():
    assert ScorerLoss("bce", num_negatives=3).num_negatives == 3
    assert ScorerLoss("ce", num_negatives=3).num_negatives == 0
    assert ScorerLoss("infonce").num_negatives == 0


def test_unknown_loss_name_lists_the_choices():
    with pytest.raises(RecError) as e:
        ScorerLoss("softmaxx")
    msg = str(e.value)
    assert "softmaxx" in msg and "ScorerLoss.name" in msg and all(n in msg for n in LOSSES)
