"""Semantic IDs under the cold-start protocol: the tokenizer never sees the new items, encodes them
afterwards exactly as the fitted model would, and their collisions come after the existing IDs."""
from __future__ import annotations

import numpy as np
import pytest

from retrieval.data.cold_start import hold_out_new_items
from rqvae.embeddings import ItemEmbeddings
from rqvae.pipeline import build_semantic_ids
from rqvae.product_quantizer import OPQTokenizer
from rqvae.residual_kmeans import RQKMeans
from rqvae.rqvae_model import RQVAETokenizer

from tiny_splits import synthetic_split


class SpyRQKMeans(RQKMeans):
    """Records the rows it is fitted on."""

    def fit(self, x):
        self.fitted_on = np.array(x, copy=True)
        return super().fit(x)


def _embeddings(n: int, d: int = 8, seed: int = 0) -> ItemEmbeddings:
    centres = np.random.default_rng(seed).normal(size=(6, d))
    rng = np.random.default_rng(seed + 1)
    x = centres[rng.integers(0, 6, n)] + 0.3 * rng.normal(size=(n, d))
    return ItemEmbeddings(x.astype(np.float32), fingerprint=f"emb-{n}", source="test")


def test_the_tokenizer_is_fitted_on_seen_items_only_and_new_items_are_encoded_after():
    split = hold_out_new_items(synthetic_split(num_users=150, num_items=80, k=2, mean_length=12.0), 0.1)
    emb = _embeddings(split.num_items)
    tok = SpyRQKMeans(levels=2, codebook_size=4, seed=0)
    out = build_semantic_ids(split, tokenizer=tok, embeddings=emb)
    new = split.new_items[1:]
    assert np.array_equal(tok.fitted_on, emb.vectors[~new])          # the fit never saw a new item
    codes = out.ids.codes[1:]                                        # (N, L+1), row = item - 1
    assert np.array_equal(codes[new, :2], tok.encode(emb.vectors[new]))
    # the existing items keep the IDs a fit on them alone gives
    alone = RQKMeans(levels=2, codebook_size=4, seed=0).fit(emb.vectors[~new])
    assert np.array_equal(codes[~new, :2], alone)
    assert len(np.unique(codes, axis=0)) == len(codes)              # every ID unique
    for prefix in np.unique(codes[new, :2], axis=0):                 # new items last in their group
        group = (codes[:, :2] == prefix).all(1)
        if (group & ~new).any():
            assert codes[group & new, 2].min() > codes[group & ~new, 2].max()
    assert out.results["new_items"] == int(new.sum())


@pytest.mark.parametrize("make", [
    lambda: RQKMeans(levels=3, codebook_size=8, seed=0),
    lambda: OPQTokenizer(levels=4, codebook_size=8, seed=0),
    lambda: RQVAETokenizer(levels=2, codebook_size=4, seed=0, hidden_dims=(16,), latent_dim=4,
                           steps=30, batch_size=16, kmeans_init_size=16, reset_every=10),
], ids=["rqkmeans", "opq", "rqvae"])
def test_encoding_an_embedding_gives_the_codes_the_fitted_model_gives_it(make):
    x = _embeddings(300, d=8).vectors                               # OPQ trains 256 centroids
    tok = make()
    fitted = tok.fit(x)
    assert np.array_equal(tok.encode(x), fitted)
