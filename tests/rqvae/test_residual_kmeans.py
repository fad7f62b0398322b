"""RQ-KMeans and balanced RQ-KMeans tokenizers, and the shared tokenizer switch."""
import numpy as np
import pytest

from retrieval.core.errors import RecError
from rqvae.residual_kmeans import BalancedRQKMeans, RQKMeans, balanced_assign
from rqvae.tokenizer import make_tokenizer


def _clusters(n_per: int = 40, k: int = 8, dim: int = 16, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    centres = rng.standard_normal((k, dim)) * 5
    labels = np.repeat(np.arange(k), n_per)
    return (centres[labels] + rng.standard_normal((len(labels), dim))).astype(np.float32), labels


def test_rqkmeans_items_of_one_cluster_share_level1_codes_far_more_than_random_pairs():
    x, labels = _clusters()
    codes = RQKMeans(levels=2, codebook_size=8, seed=0).fit(x)
    assert codes.shape == (320, 2) and codes.dtype == np.int64
    same = labels[:, None] == labels[None, :]
    share = codes[:, None, 0] == codes[None, :, 0]
    off_diag = ~np.eye(len(x), dtype=bool)
    within = share[same & off_diag].mean()
    between = share[~same].mean()
    assert within > 0.6 and between < 0.15


def test_rqkmeans_residual_error_falls_level_by_level_and_matches_reconstruction():
    x, _ = _clusters()
    tok = RQKMeans(levels=3, codebook_size=8, seed=0)
    codes = tok.fit(x)
    errs = [h["residual_mse"] for h in tok.history]
    assert errs[0] > errs[1] > errs[2]
    recon = sum(tok.codebooks[l][codes[:, l]] for l in range(3))
    np.testing.assert_allclose(tok.reconstruction, recon, rtol=1e-5, atol=1e-5)
    assert errs[2] == pytest.approx(float(((x - recon) ** 2).sum(1).mean()), rel=1e-4)
    assert [w.shape for w in tok.weights().values()] == [(8, 16)] * 3


def test_rqkmeans_same_seed_same_codes():
    x, _ = _clusters(seed=3)
    a = RQKMeans(levels=3, codebook_size=8, seed=5).fit(x)
    b = RQKMeans(levels=3, codebook_size=8, seed=5).fit(x)
    assert np.array_equal(a, b)


def test_balanced_assignment_gives_equal_sizes_and_prefers_near_centroids():
    rng = np.random.default_rng(0)
    # 10 points near centroid 0, 2 near centroid 1: capacity 6 each moves 4 points to centroid 1,
    # and those are the 4 that are least far from it.
    c = np.array([[0.0, 0.0], [10.0, 0.0]], dtype=np.float32)
    near0 = np.stack([np.arange(10, dtype=np.float32), np.zeros(10, np.float32)], 1) * 0.5
    near1 = np.array([[10, 1], [10, -1]], dtype=np.float32)
    x = np.concatenate([near0, near1])
    labels = balanced_assign(x, c)
    assert np.bincount(labels).tolist() == [6, 6]
    assert labels[:10].tolist() == [0] * 6 + [1] * 4         # the 4 largest x-coordinates move
    x2 = rng.standard_normal((103, 4)).astype(np.float32)
    sizes = np.bincount(balanced_assign(x2, x2[:10]), minlength=10)
    assert sorted(sizes.tolist()) == [10] * 7 + [11] * 3


def test_balanced_rqkmeans_uses_every_code_equally_at_every_level():
    x, _ = _clusters(n_per=20, k=5)                          # 100 items, uneven structure for K=8
    codes = BalancedRQKMeans(levels=3, codebook_size=8, seed=0).fit(x)
    for l in range(3):
        assert sorted(set(np.bincount(codes[:, l], minlength=8).tolist())) == [12, 13]


def test_nan_embeddings_are_refused_with_the_rows():
    x, _ = _clusters()
    x[7, 3] = np.nan
    with pytest.raises(RecError, match=r"NaN or inf \(first rows \[7\]") as e:
        RQKMeans(levels=2, codebook_size=8).fit(x)
    assert "\n" not in str(e.value)


def test_fewer_items_than_codes_suggests_a_smaller_codebook():
    x = np.random.default_rng(0).standard_normal((100, 8)).astype(np.float32)
    for tok in (RQKMeans(codebook_size=256), BalancedRQKMeans(codebook_size=256),
                make_tokenizer("rqvae", codebook_size=256)):
        with pytest.raises(RecError, match="100 items are fewer than the 256 codes.*smaller codebook"):
            tok.fit(x)


def test_unknown_tokenizer_name_lists_the_choices():
    with pytest.raises(RecError, match="'kmeans' is unknown; choose one of: rqvae, rqkmeans, balanced_rqkmeans"):
        make_tokenizer("kmeans")


def test_pca_projection_keeps_the_main_directions_and_maps_reconstruction_back():
    rng = np.random.default_rng(0)
    # 3 strong directions in 12-d plus weak noise: 3 components carry almost everything
    basis = np.linalg.qr(rng.standard_normal((12, 3)))[0]
    x = (rng.standard_normal((300, 3)) * [5, 4, 3]) @ basis.T + 0.01 * rng.standard_normal((300, 12))
    x = x.astype(np.float32) + 7.0
    tok = RQKMeans(levels=2, codebook_size=8, seed=0, pca_dim=3)
    codes = tok.fit(x)
    assert tok.components.shape == (12, 3) and tok.reconstruction.shape == (300, 12)
    # the learned subspace is the true one: projecting the basis onto it loses nothing
    np.testing.assert_allclose(np.linalg.norm(tok.components.T @ basis, axis=0), 1.0, atol=1e-3)
    recon = sum(tok.codebooks[l][codes[:, l]] for l in range(2)) @ tok.components.T + tok.mean
    np.testing.assert_allclose(tok.reconstruction, recon, rtol=1e-4, atol=1e-4)
    assert set(tok.weights()) == {"codebook_0", "codebook_1", "pca_mean", "pca_components"}
    again = RQKMeans(levels=2, codebook_size=8, seed=0, pca_dim=3).fit(x)
    assert np.array_equal(codes, again)
    assert RQKMeans(levels=2, codebook_size=8, pca_dim=64).fit(x).shape == (300, 2)  # >= d: no PCA
