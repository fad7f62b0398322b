"""Long semantic IDs by optimized product quantization (OPQ + PQ, with faiss), as RPG uses them.

    x (N, d) ── OPQ rotation R (d_out x d, learned jointly with the PQ) ── split into M sub-vectors
        of d_out / M dims ── sub-vector m goes to the nearest of the K centroids of codebook m

An item's ID is the M codes (one per codebook, M = `levels`, e.g. 32). Unlike residual
quantization, the codes are not a coarse-to-fine hierarchy: every codebook describes a different
rotated subspace, so the IDs suit a generator that predicts all codes in parallel and scores an item
by the sum of its codes' log-probabilities (onerec.parallel_generator), not a prefix trie.

`encode` assigns codes to embeddings the fit never saw (new items) with the trained rotation and
codebooks, exactly as `fit` did for the training embeddings.
"""
from __future__ import annotations

import gin
import numpy as np

from retrieval.core.errors import RecError
from rqvae.residual_kmeans import check_input, nearest


@gin.configurable
class OPQTokenizer:
    """OPQ rotation + product quantizer, M = `levels` codebooks of K = `codebook_size` codes.

    K must be a power of two (faiss PQ: K = 2^nbits). opq_iterations: alternations between the
    rotation and the PQ codebooks (0 = plain PQ, no rotation). kmeans_iterations: per codebook.
    The rotation's output width is the input width rounded up to a multiple of M.
    """

    name = "opq"

    def __init__(self, levels: int = 32, codebook_size: int = 256, seed: int = 0,
                 opq_iterations: int = 20, kmeans_iterations: int = 25):
        nbits = int(codebook_size).bit_length() - 1
        if codebook_size < 2 or (1 << nbits) != codebook_size or nbits > 16:
            raise RecError(f"OPQ needs a power-of-two codebook size in [2, 65536]; got "
                           f"make_tokenizer.codebook_size = {codebook_size}")
        if levels < 1:
            raise RecError(f"make_tokenizer.levels = {levels}: OPQ needs at least 1 codebook")
        if opq_iterations < 0 or kmeans_iterations < 1:
            raise RecError(f"OPQTokenizer.opq_iterations={opq_iterations} must be >= 0 and "
                           f"kmeans_iterations={kmeans_iterations} >= 1")
        self.levels, self.codebook_size, self.seed = int(levels), int(codebook_size), int(seed)
        self.nbits, self.opq_iterations, self.kmeans_iterations = nbits, int(opq_iterations), int(kmeans_iterations)
        self.rotation: np.ndarray | None = None       # (d_out, d) float32
        self.centroids: np.ndarray | None = None      # (M, K, d_out / M) float32
        self.reconstruction: np.ndarray | None = None
        self.history: list = []

    def fit(self, x: np.ndarray) -> np.ndarray:
        import faiss

        x = check_input(x, self.codebook_size, self.name)
        d, M = x.shape[1], self.levels
        d_out = -(-d // M) * M
        faiss.omp_set_num_threads(max(1, faiss.omp_get_max_threads()))
        np.random.seed(self.seed)                      # faiss draws its OPQ init from its own RNG
        if self.opq_iterations > 0:
            opq = faiss.OPQMatrix(d, M, d_out)
            opq.niter = self.opq_iterations
            opq.verbose = False
            opq.train(x)
            self.rotation = faiss.vector_to_array(opq.A).reshape(d_out, d).astype(np.float32)
        else:
            self.rotation = np.eye(d_out, d, dtype=np.float32)
        pq = faiss.ProductQuantizer(d_out, M, self.nbits)
        pq.cp.seed = self.seed
        pq.cp.niter = self.kmeans_iterations
        pq.train(self._rotate(x))
        self.centroids = faiss.vector_to_array(pq.centroids).reshape(M, self.codebook_size, -1)
        codes = self.encode(x)
        self.reconstruction = self.decode(codes)
        self.history = [{"opq_iterations": self.opq_iterations, "d_out": int(d_out),
                         "kmeans_iterations": self.kmeans_iterations}]
        return codes

    def _rotate(self, x: np.ndarray) -> np.ndarray:
        return np.ascontiguousarray(x @ self.rotation.T, dtype=np.float32)

    def encode(self, x: np.ndarray) -> np.ndarray:
        """(n, d) embeddings -> (n, M) int64 codes with the fitted rotation and codebooks."""
        if self.centroids is None:
            raise RecError("OPQTokenizer.encode: the tokenizer is not fitted (call fit or load_weights)")
        x = np.asarray(x, dtype=np.float32)
        if x.ndim != 2 or x.shape[1] != self.rotation.shape[1]:
            raise RecError(f"OPQTokenizer.encode: embeddings of shape {x.shape} do not match the "
                           f"fitted width {self.rotation.shape[1]}")
        sub = self._rotate(x).reshape(len(x), self.levels, -1)
        return np.stack([nearest(np.ascontiguousarray(sub[:, m]), self.centroids[m])
                         for m in range(self.levels)], axis=1)

    def decode(self, codes: np.ndarray) -> np.ndarray:
        """(n, M) codes -> (n, d) reconstructed embeddings (rotation is orthonormal: Rᵀ undoes it)."""
        parts = self.centroids[np.arange(self.levels)[None, :], np.asarray(codes)]   # (n, M, dsub)
        return parts.reshape(len(codes), -1) @ self.rotation

    def weights(self) -> dict:
        import torch

        return {"rotation": torch.from_numpy(self.rotation), "centroids": torch.from_numpy(self.centroids)}

    def load_weights(self, tensors: dict) -> None:
        rot, cen = tensors["rotation"].numpy(), tensors["centroids"].numpy()
        if cen.shape[:2] != (self.levels, self.codebook_size):
            raise RecError(f"OPQ weights hold {cen.shape[0]} x {cen.shape[1]} codes, the config "
                           f"{self.levels} x {self.codebook_size}")
        self.rotation, self.centroids = rot.astype(np.float32), cen.astype(np.float32)
