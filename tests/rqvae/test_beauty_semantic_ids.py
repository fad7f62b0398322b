"""Semantic IDs on real data: the first 1,500 Amazon Beauty items (text = title; brand; categories).

Items of one category should share ID prefixes far more often than random pairs do.
"""
import numpy as np
import pytest

from rqvae.disambiguation import disambiguate, level_stats, prefix_sharing
from rqvae.embeddings import TextEncoder
from rqvae.residual_kmeans import BalancedRQKMeans, RQKMeans
from rqvae.rqvae_model import RQVAETokenizer

# Real data end to end: loading Beauty and encoding 1,500 texts with the MiniLM encoder takes ~20 s.
pytestmark = pytest.mark.slow

N_ITEMS = 1500


@pytest.fixture(scope="module")
def beauty_subset():
    from retrieval.data.registry import get_source

    cat = get_source("amazon-beauty").load().catalogue
    texts = [cat.text(i) for i in range(1, N_ITEMS + 1)]
    categories = np.array([str(c) for c in cat.fields["categories"][1:N_ITEMS + 1]])
    x = TextEncoder(max_length=64, show_progress=False).encode(texts)
    return x, categories


def _pairs(categories: np.ndarray, n: int = 200_000, seed: int = 0):
    rng = np.random.default_rng(seed)
    a, b = rng.integers(0, len(categories), n), rng.integers(0, len(categories), n)
    keep = (a != b) & (categories[a] != "")
    same = keep & (categories[a] == categories[b])
    return (a[same], b[same]), (a[keep], b[keep])


@pytest.mark.parametrize("make", [
    lambda: RQKMeans(levels=3, codebook_size=16, seed=0),
    lambda: BalancedRQKMeans(levels=3, codebook_size=16, seed=0),
    lambda: RQVAETokenizer(levels=3, codebook_size=16, seed=0, hidden_dims=(256, 128), latent_dim=16,
                           steps=150, batch_size=256, kmeans_init_size=512, reset_every=50,
                           log_every=50),
], ids=["rqkmeans", "balanced_rqkmeans", "rqvae"])
def test_items_of_one_category_share_level1_codes_far_more_than_random_pairs(beauty_subset, make):
    x, categories = beauty_subset
    tok = make()
    codes = tok.fit(x)
    (sa, sb), (ra, rb) = _pairs(categories)
    same_cat = prefix_sharing(codes, sa, sb)
    random_pairs = prefix_sharing(codes, ra, rb)
    assert same_cat[0] > 4 * random_pairs[0]
    assert same_cat[1] > 4 * random_pairs[1]
    full = disambiguate(codes)
    assert len(np.unique(full, axis=0)) == N_ITEMS
    assert min(s["usage"] for s in level_stats(codes, 16)) >= 0.75
