"""Semantic-consistency and interest-contrast losses: exact values on hand-made inputs, the sign of
their gradients, and the similar-item tables (never the item itself)."""
import math

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from retrieval.core.errors import RecError
from retrieval.scorers.semantic_losses import (InterestContrastLoss, SemanticConsistencyLoss, bpr,
                                       draw_similar, interest_contrast_loss, interest_proxies,
                                       neighbour_table, pos_neg_loss, positive_only_loss,
                                       prefix_table)


def softplus(x: float) -> float:
    return math.log1p(math.exp(x))


# -- semantic consistency -----------------------------------------------------------------------
def test_positive_only_exact_values_for_both_labels():
    s_item, s_sim = torch.tensor([1.0, 1.0]), torch.tensor([3.0, 3.0])
    assert positive_only_loss(s_item[:1], s_sim[:1], torch.tensor([1])).item() == \
        pytest.approx(softplus(-2.0))                                    # y=1: item' above item is cheap
    assert positive_only_loss(s_item[:1], s_sim[:1], torch.tensor([0])).item() == \
        pytest.approx(softplus(2.0))                                     # y=0: item' should be below
    both = positive_only_loss(s_item, s_sim, torch.tensor([1, 0]))
    assert both.item() == pytest.approx((softplus(-2.0) + softplus(2.0)) / 2)


def test_pos_neg_exact_values_average_over_negatives():
    s_sim, s_neg = torch.tensor([1.0]), torch.tensor([[0.0, 3.0]])
    assert pos_neg_loss(s_sim, s_neg, torch.tensor([1])).item() == \
        pytest.approx((softplus(-1.0) + softplus(2.0)) / 2)
    assert pos_neg_loss(s_sim, s_neg, torch.tensor([0])).item() == \
        pytest.approx((softplus(1.0) + softplus(-2.0)) / 2)


@pytest.mark.parametrize("label", [0, 1])
def test_gradient_pushes_the_similar_item_in_the_labels_direction(label):
    s_item = torch.tensor([0.5])
    s_sim = torch.tensor([0.2], requires_grad=True)
    positive_only_loss(s_item, s_sim, torch.tensor([label])).backward()
    step = -s_sim.grad.item()                                            # gradient-descent direction
    assert step > 0 if label == 1 else step < 0
    s_sim2 = torch.tensor([0.2], requires_grad=True)
    pos_neg_loss(s_sim2, torch.tensor([[0.1, 0.9]]), torch.tensor([label])).backward()
    step = -s_sim2.grad.item()
    assert step > 0 if label == 1 else step < 0


def test_mask_leaves_pairs_without_a_similar_item_out_of_the_mean():
    s_item, s_sim = torch.tensor([1.0, 100.0]), torch.tensor([3.0, -100.0])
    loss = positive_only_loss(s_item, s_sim, torch.ones(2), mask=torch.tensor([True, False]))
    assert loss.item() == pytest.approx(softplus(-2.0))


def test_semantic_consistency_module_modes_and_weight():
    s_pos, s_pos_sim = torch.tensor([1.0]), torch.tensor([3.0])
    s_neg, s_neg_sim = torch.tensor([[0.0, 2.0]]), torch.tensor([[1.0, 1.0]])
    only = SemanticConsistencyLoss("positive_only", weight=0.5)
    assert only(s_pos, s_neg, s_pos_sim).item() == pytest.approx(0.5 * softplus(-2.0))
    with_neg = only(s_pos, s_neg, s_pos_sim, s_neg_sim)
    # negatives are y = 0 pairs: softplus(+(s(neg') - s(neg))) averaged over the two negatives
    neg_term = (softplus(1.0) + softplus(-1.0)) / 2
    assert with_neg.item() == pytest.approx(0.5 * (softplus(-2.0) + neg_term))
    pn = SemanticConsistencyLoss("pos_neg", weight=2.0)
    assert pn(s_pos, s_neg, s_pos_sim).item() == pytest.approx(2.0 * (softplus(-3.0) + softplus(-1.0)) / 2)
    with pytest.raises(RecError, match="mode"):
        SemanticConsistencyLoss("both")


# -- similar-item tables ------------------------------------------------------------------------
def test_neighbour_table_on_content_embeddings_excludes_the_item_itself():
    # Content layout (N, d), row i-1 = item i; items 1,2 point one way, 3,4 another, 5 alone.
    emb = np.array([[1, 0], [0.9, 0.1], [0, 1], [0.1, 0.9], [-1, -1]], dtype=np.float32)
    table = neighbour_table(emb, k=1, num_items=5)
    np.testing.assert_array_equal(table[:5, 0], [0, 2, 1, 4, 3])
    assert table[5, 0] in (1, 3)                                         # cosine -0.71 for both
    assert not (table[1:] == np.arange(1, 6)[:, None]).any()


@settings(max_examples=30, deadline=None)
@given(n=st.integers(2, 60), levels=st.integers(1, 3), prefix_len=st.integers(1, 3),
       k=st.integers(1, 4), seed=st.integers(0, 1000))
def test_prefix_table_entries_share_the_prefix_and_are_never_the_item(n, levels, prefix_len, k, seed):
    prefix_len = min(prefix_len, levels)
    rng = np.random.default_rng(seed)
    codes = np.concatenate([np.full((1, levels + 1), -1),
                            np.concatenate([rng.integers(0, 3, size=(n, levels)),
                                            np.zeros((n, 1), dtype=np.int64)], axis=1)])
    table = prefix_table(codes, prefix_len=prefix_len, k=k, seed=seed)
    assert table.shape == (n + 1, k) and (table[0] == 0).all()
    items = np.arange(1, n + 1)
    group_size = np.array([(codes[1:, :prefix_len] == codes[i, :prefix_len]).all(1).sum() for i in items])
    for i in items:                                                      # reference check, small n
        row = table[i]
        if group_size[i - 1] == 1:
            assert (row == 0).all()
        else:
            assert (row != i).all() and (row > 0).all()
            assert (codes[row, :prefix_len] == codes[i, :prefix_len]).all()


def test_prefix_table_rejects_a_prefix_longer_than_the_codes():
    with pytest.raises(RecError, match="prefix_len"):
        prefix_table(np.zeros((3, 4), dtype=np.int64), prefix_len=5)


def test_draw_similar_picks_only_real_entries_and_zero_when_none():
    table = torch.tensor([[0, 0, 0], [2, 0, 3], [0, 0, 0], [1, 1, 1]])
    items = torch.tensor([1, 2, 3, 0] * 50)
    g = torch.Generator().manual_seed(0)
    out = draw_similar(table, items, generator=g).view(50, 4)
    assert set(out[:, 0].tolist()) == {2, 3}                             # both columns get drawn
    assert (out[:, 1] == 0).all() and (out[:, 2] == 1).all() and (out[:, 3] == 0).all()


# -- long/short-term interest contrast ----------------------------------------------------------
def test_interest_proxies_mask_padding_and_take_the_last_k():
    vec = torch.tensor([[[0.0, 0.0], [1.0, 0.0], [0.0, 1.0], [2.0, 2.0]],
                        [[0.0, 0.0], [0.0, 0.0], [0.0, 0.0], [4.0, 6.0]],
                        [[0.0, 0.0], [0.0, 0.0], [0.0, 0.0], [0.0, 0.0]]])
    items = torch.tensor([[0, 7, 8, 9], [0, 0, 0, 5], [0, 0, 0, 0]])
    long_p, short_p = interest_proxies(vec, items, short_k=2)
    torch.testing.assert_close(long_p, torch.tensor([[1.0, 1.0], [4.0, 6.0], [0.0, 0.0]]))
    torch.testing.assert_close(short_p, torch.tensor([[1.0, 1.5], [4.0, 6.0], [0.0, 0.0]]))


def test_bpr_is_the_batch_mean_of_softplus_neg_minus_pos():
    a, p, n = torch.tensor([[1.0, 0.0], [0.0, 1.0]]), torch.tensor([[2.0, 0.0], [0.0, 0.0]]), \
        torch.tensor([[0.0, 5.0], [0.0, 3.0]])
    assert bpr(a, p, n).item() == pytest.approx((softplus(-2.0) + softplus(3.0)) / 2)


def test_interest_contrast_exact_value():
    l_int, s_int = torch.tensor([[2.0, 0.0]]), torch.tensor([[0.0, 1.0]])
    l_p, s_p = torch.tensor([[1.0, 1.0]]), torch.tensor([[0.0, 2.0]])
    # term1 a=L_int: <a,S_p>-<a,L_p> = 0-2; term2 a=S_int: 1-2; term3 a=L_p: 1-2; term4 a=S_p: 0-2
    expected = 2 * softplus(-2.0) + 2 * softplus(-1.0)
    assert interest_contrast_loss(l_int, s_int, l_p, s_p).item() == pytest.approx(expected)


def test_interest_contrast_module_builds_proxies_and_applies_the_weight():
    vec = torch.tensor([[[1.0, 0.0], [1.0, 0.0], [0.0, 2.0]]])          # L_p = [2/3, 2/3], S_p = [0, 2]
    items = torch.tensor([[1, 2, 3]])
    l_int, s_int = torch.tensor([[1.0, 0.0]]), torch.tensor([[0.0, 1.0]])
    l_p, s_p = torch.tensor([[2 / 3, 2 / 3]]), torch.tensor([[0.0, 2.0]])
    loss = InterestContrastLoss(short_k=1, weight=0.3)(l_int, s_int, vec, items)
    assert loss.item() == pytest.approx(0.3 * interest_contrast_loss(l_int, s_int, l_p, s_p).item(),
                                        rel=1e-6)
    with pytest.raises(RecError, match="short_k"):
        InterestContrastLoss(short_k=0)
