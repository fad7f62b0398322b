"""RQ-KMeans tokenizers (docs/protocol.md §4): residual k-means level by level with faiss, and the balanced
variant (as in OneRec) whose clusters all hold N/K items (floor or ceil) at every level.

Level l clusters the residual left by levels 1..l-1; an item's code at level l is its cluster, and
the residual passed on is the item minus the cluster centroid.
"""
from __future__ import annotations

import gin
import numpy as np
import torch

from retrieval.core.errors import RecError


def check_input(x: np.ndarray, codebook_size: int, name: str) -> np.ndarray:
    """Embeddings a tokenizer can fit: 2-D, finite, at least one item per code."""
    x = np.asarray(x)
    if x.ndim != 2 or x.shape[0] == 0:
        raise RecError(f"{name}: embeddings must be a non-empty (items, dim) matrix, got shape {x.shape}")
    bad = ~np.isfinite(x).all(axis=1)
    if bad.any():
        rows = np.nonzero(bad)[0]
        raise RecError(f"{name}: {len(rows)} item embedding(s) contain NaN or inf (first rows "
                       f"{rows[:5].tolist()}, row i = item i+1); fix or recompute the embeddings")
    if x.shape[0] < codebook_size:
        smaller = 1 << max(1, int(np.log2(max(2, x.shape[0] // 4))))
        raise RecError(f"{name}: {x.shape[0]} items are fewer than the {codebook_size} codes per "
                       f"level; use a smaller codebook, e.g. make_tokenizer.codebook_size = {smaller}")
    return np.ascontiguousarray(x, dtype=np.float32)


def kmeans(x: np.ndarray, k: int, seed: int, niter: int = 25) -> np.ndarray:
    """faiss k-means centroids (k, d) float32; deterministic for a fixed seed and thread count.

    With faiss-gpu and a visible GPU the assignment step runs on one GPU (results then differ from
    the CPU ones in float rounding); the CPU path is unchanged."""
    import faiss

    from retrieval.negatives.item_index import gpu_available

    km = faiss.Kmeans(x.shape[1], k, niter=niter, seed=int(seed), verbose=False,
                      min_points_per_centroid=1, max_points_per_centroid=1 << 30,
                      gpu=1 if gpu_available() else False)
    km.train(np.ascontiguousarray(x, dtype=np.float32))
    return np.array(km.centroids, dtype=np.float32)


def sq_distances(x: np.ndarray, c: np.ndarray) -> np.ndarray:
    """(n, k) squared Euclidean distances, float32 (memory n*k, never n*n)."""
    d = (x * x).sum(1)[:, None] - 2.0 * (x @ c.T) + (c * c).sum(1)[None, :]
    return np.maximum(d, 0.0, out=d)


def nearest(x: np.ndarray, c: np.ndarray, chunk: int = 65536) -> np.ndarray:
    return np.concatenate([sq_distances(x[s:s + chunk], c).argmin(1)
                           for s in range(0, len(x), chunk)]).astype(np.int64)


def balanced_assign(x: np.ndarray, c: np.ndarray) -> np.ndarray:
    """Assign every row of x to a centroid so that cluster sizes are floor(n/k) or ceil(n/k).

    Rounds of proposals: each unassigned item proposes to its nearest cluster with room left; a
    cluster keeps the closest proposers up to its capacity and rejects the rest, who propose again.
    Each round fills a cluster or places everyone, so at most k rounds, each vectorised.
    The n mod k extra seats go to the clusters most items are nearest to.
    """
    n, k = len(x), len(c)
    dist = sq_distances(x, c)                                     # (n, k)
    demand = np.bincount(dist.argmin(1), minlength=k)
    capacity = np.full(k, n // k, dtype=np.int64)
    capacity[np.argsort(-demand, kind="stable")[: n % k]] += 1
    labels = np.full(n, -1, dtype=np.int64)
    todo = np.arange(n)
    while len(todo):
        d = dist[todo]                                            # (m, k)
        d[:, capacity == 0] = np.inf
        choice = d.argmin(1)
        dmin = d[np.arange(len(todo)), choice]
        order = np.lexsort((todo, dmin, choice))                  # by cluster, then distance
        ch = choice[order]
        first = np.searchsorted(ch, ch, side="left")
        accept = (np.arange(len(ch)) - first) < capacity[ch]
        labels[todo[order[accept]]] = ch[accept]
        capacity -= np.bincount(ch[accept], minlength=k)
        todo = todo[order[~accept]]
    return labels


def cluster_means(x: np.ndarray, labels: np.ndarray, k: int, fallback: np.ndarray) -> np.ndarray:
    counts = np.bincount(labels, minlength=k).astype(np.float64)
    sums = np.zeros((k, x.shape[1]), dtype=np.float64)
    np.add.at(sums, labels, x)
    out = fallback.astype(np.float64).copy()
    out[counts > 0] = sums[counts > 0] / counts[counts > 0, None]
    return out.astype(np.float32)


@gin.configurable
class RQKMeans:
    """Residual k-means: L levels x K faiss centroids, optionally on the top `pca_dim` principal
    components of the embeddings (reconstruction is mapped back to the embedding space)."""

    name = "rqkmeans"

    def __init__(self, levels: int = 3, codebook_size: int = 256, seed: int = 0, niter: int = 25,
                 pca_dim: int | None = None):
        self.levels, self.codebook_size, self.seed, self.niter = int(levels), int(codebook_size), int(seed), int(niter)
        self.pca_dim = int(pca_dim) if pca_dim else None
        self.codebooks: list[np.ndarray] = []
        self.mean: np.ndarray | None = None
        self.components: np.ndarray | None = None      # (d, pca_dim) or None
        self.reconstruction: np.ndarray | None = None
        self.history: list[dict] = []

    def _level(self, r: np.ndarray, level: int) -> tuple[np.ndarray, np.ndarray]:
        c = kmeans(r, self.codebook_size, self.seed + level, self.niter)
        return nearest(r, c), c

    def fit(self, x: np.ndarray) -> np.ndarray:
        """(N, d) embeddings -> (N, L) int64 codes."""
        x = check_input(x, self.codebook_size, self.name)
        z = self._project(x)                                           # (N, pca_dim) or x
        r = z.copy()
        codes, self.codebooks, self.history = [], [], []
        for level in range(self.levels):
            labels, c = self._level(r, level)
            r = r - c[labels]
            codes.append(labels)
            self.codebooks.append(c)
            self.history.append({"level": level + 1, "residual_mse": float((r ** 2).sum(1).mean())})
        self.reconstruction = self._unproject(z - r)
        return np.stack(codes, axis=1)

    def encode(self, x: np.ndarray) -> np.ndarray:
        """(n, d) embeddings of unseen items -> (n, L) codes: the fitted projection, then the
        nearest centroid of each level on the residual (balanced k-means: no capacity here)."""
        if not self.codebooks:
            raise RecError(f"{self.name}.encode: the tokenizer is not fitted")
        z = np.asarray(x, dtype=np.float32)
        if self.components is not None:
            z = np.ascontiguousarray((z - self.mean) @ self.components, dtype=np.float32)
        r, codes = z.copy(), []
        for c in self.codebooks:
            labels = nearest(r, c)
            r = r - c[labels]
            codes.append(labels)
        return np.stack(codes, axis=1)

    def _project(self, x: np.ndarray) -> np.ndarray:
        """Top `pca_dim` principal components of x (identity when pca_dim is None or >= d).

        Why: residual k-means in 384-d leaves many near-duplicate items on one ID (Beauty: 14% of
        items need d > 0); in ~24-32 dims, the RQ-VAE's latent width, 256 codes tile the space
        finely enough that few collide (docs/results.md, "Semantic IDs (stage 1)").
        """
        self.mean, self.components = None, None
        if self.pca_dim is None or self.pca_dim >= x.shape[1]:
            return x
        self.mean = x.mean(0, dtype=np.float64)
        xc = x - self.mean
        evals, evecs = np.linalg.eigh(xc.T.astype(np.float64) @ xc)    # (d, d): memory O(d^2)
        v = evecs[:, ::-1][:, : self.pca_dim]                          # largest first
        v *= np.sign(v[np.abs(v).argmax(0), np.arange(v.shape[1])])    # fixed signs: reproducible
        self.components = v.astype(np.float32)
        self.mean = self.mean.astype(np.float32)
        return np.ascontiguousarray(xc @ self.components, dtype=np.float32)

    def _unproject(self, z: np.ndarray) -> np.ndarray:
        return z if self.components is None else z @ self.components.T + self.mean

    def weights(self) -> dict:
        w = {f"codebook_{l}": torch.from_numpy(c) for l, c in enumerate(self.codebooks)}
        if self.components is not None:
            w["pca_mean"] = torch.from_numpy(self.mean)
            w["pca_components"] = torch.from_numpy(self.components)
        return w


@gin.configurable
class BalancedRQKMeans(RQKMeans):
    """Residual k-means whose clusters are equal-size at every level: faiss centroids, then
    `balance_iters` rounds of (capacity-constrained assignment, centroid = cluster mean)."""

    name = "balanced_rqkmeans"

    def __init__(self, levels: int = 3, codebook_size: int = 256, seed: int = 0, niter: int = 25,
                 pca_dim: int | None = None, balance_iters: int = 5):
        super().__init__(levels, codebook_size, seed, niter, pca_dim)
        self.balance_iters = int(balance_iters)

    def _level(self, r: np.ndarray, level: int) -> tuple[np.ndarray, np.ndarray]:
        c = kmeans(r, self.codebook_size, self.seed + level, self.niter)
        labels = balanced_assign(r, c)
        for _ in range(self.balance_iters):
            c = cluster_means(r, labels, self.codebook_size, c)
            labels = balanced_assign(r, c)
        return labels, cluster_means(r, labels, self.codebook_size, c)
