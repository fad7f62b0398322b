"""Similarity functions: hand-computed values, full-catalogue form == pairwise form, gin selection."""
import math

import gin
import pytest
import torch

from retrieval.core.errors import RecError
from retrieval.scorers.similarity import (SIMILARITIES, BilinearSimilarity, CosineSimilarity, DotSimilarity,
                                  FusionSimilarity, MultiHeadSimilarity, ScaledDotSimilarity,
                                  make_similarity)

X = torch.tensor([1.0, 2.0])
Y = torch.tensor([3.0, 4.0])
COS = 11.0 / (math.sqrt(5.0) * 5.0)                                    # <x,y> / (|x| |y|)


def test_dot():
    assert DotSimilarity()(X, Y).item() == pytest.approx(11.0)


def test_cosine_divides_by_the_temperature():
    assert CosineSimilarity(temperature=0.5)(X, Y).item() == pytest.approx(COS / 0.5, rel=1e-6)
    assert CosineSimilarity(temperature=1.0)(X, 3 * X).item() == pytest.approx(1.0, rel=1e-6)


def test_scaled_dot_divides_by_sqrt_d():
    assert ScaledDotSimilarity()(X, Y).item() == pytest.approx(11.0 / math.sqrt(2.0))


def test_bilinear_is_x_w_y_and_starts_as_dot():
    sim = BilinearSimilarity(2)
    assert sim(X, Y).item() == pytest.approx(11.0)                      # W = I at init
    with torch.no_grad():
        sim.weight.copy_(torch.tensor([[1.0, 2.0], [0.0, 1.0]]))
    assert sim(X, Y).item() == pytest.approx(19.0)                      # [1, 2] W = [1, 4]; · [3, 4]


def test_fusion_is_the_weighted_sum_and_its_weights_learn():
    sim = FusionSimilarity(alpha=1.0, beta=2.0, gamma=3.0)
    expected = 11.0 + 2.0 * COS + 3.0 * 11.0 / math.sqrt(2.0)
    out = sim(X, Y)
    assert out.item() == pytest.approx(expected, rel=1e-6)
    out.backward()
    assert sim.alpha.grad.item() == pytest.approx(11.0)
    assert sim.beta.grad.item() == pytest.approx(COS, rel=1e-6)
    assert sim.gamma.grad.item() == pytest.approx(11.0 / math.sqrt(2.0))


def test_multi_head_mean_and_learned_weights():
    x = torch.tensor([1.0, 2.0, 3.0, 4.0])
    y = torch.tensor([1.0, 1.0, 2.0, 0.0])                              # head dots: 3 and 6
    mean = MultiHeadSimilarity(4, num_heads=2)
    torch.testing.assert_close(mean.head_scores(x, y), torch.tensor([3.0, 6.0]))
    assert mean(x, y).item() == pytest.approx(4.5)
    learned = MultiHeadSimilarity(4, num_heads=2, combine="learned")
    assert learned(x, y).item() == pytest.approx(4.5)                   # initialised to the mean
    with torch.no_grad():
        learned.head_weights.copy_(torch.tensor([2.0, -1.0]))
    assert learned(x, y).item() == pytest.approx(0.0)
    assert learned.head_weights.requires_grad and not mean.head_weights.requires_grad


def _randomised(name, dim):
    """The similarity `name` with its parameters moved away from their (identity-like) init."""
    sim = SIMILARITIES[name](dim)
    if name == "multi_head":
        sim = MultiHeadSimilarity(dim, num_heads=4, combine="learned", project=True)
    g = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for p in sim.parameters():
            p.add_(0.3 * torch.randn(p.shape, generator=g))
    return sim


@pytest.mark.parametrize("name", sorted(SIMILARITIES))
def test_full_catalogue_form_equals_pairwise_form(name):
    torch.manual_seed(1)
    dim = 8
    sim = _randomised(name, dim)
    x, items = torch.randn(5, dim), torch.randn(7, dim)
    full = sim.all_items(x, items)                                       # (5, 7)
    pairwise = sim(x[:, None, :], items[None, :, :])                    # broadcast to (5, 7)
    assert full.shape == (5, 7)
    torch.testing.assert_close(full, pairwise, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("name", sorted(SIMILARITIES))
def test_factored_form_is_one_dot_product_equal_to_the_full_catalogue_form(name):
    """all_items = q @ k.T: what lets the (dot-only) full-softmax loss train every similarity."""
    torch.manual_seed(2)
    sim = _randomised(name, 8)
    x, items = torch.randn(5, 8), torch.randn(7, 8)
    q, k = sim.factors(x, items)
    assert q.shape[0] == 5 and k.shape[0] == 7 and q.shape[1] == k.shape[1]
    torch.testing.assert_close(q @ k.T, sim.all_items(x, items), rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("name", sorted(SIMILARITIES))
def test_pairwise_form_broadcasts_one_state_against_k_items(name):
    sim = _randomised(name, 8)
    h, items = torch.randn(3, 8), torch.randn(3, 4, 8)
    out = sim(h[:, None, :], items)                                     # (3, 4)
    ref = torch.stack([sim(h[b].expand(4, 8), items[b]) for b in range(3)])
    torch.testing.assert_close(out, ref, rtol=1e-5, atol=1e-5)


def test_gin_selects_the_similarity_and_binds_its_settings():
    gin.clear_config()
    try:
        gin.parse_config(["make_similarity.name = 'cosine'", "CosineSimilarity.temperature = 0.25"])
        sim = make_similarity(dim=2)
        assert isinstance(sim, CosineSimilarity)
        assert sim(X, Y).item() == pytest.approx(COS / 0.25, rel=1e-6)
    finally:
        gin.clear_config()


def test_unknown_name_and_bad_settings_raise_recerror():
    with pytest.raises(RecError, match="make_similarity.name"):
        make_similarity(name="euclid", dim=4)
    with pytest.raises(RecError, match="num_heads"):
        MultiHeadSimilarity(6, num_heads=4)
    with pytest.raises(RecError, match="temperature"):
        CosineSimilarity(temperature=0.0)
