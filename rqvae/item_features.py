"""Item vectors for catalogues without (enough) text: attribute multi-hot and item co-occurrence,
both reduced by truncated SVD, and the per-item fallback that fills items with no text.

Everything is sparse (scipy) and chunked, so ML-25M-sized data (25M events, 62k items) never builds
a dense items x items or events x window matrix.
"""
from __future__ import annotations

import numpy as np
import scipy.sparse as sp
from scipy.sparse.linalg import svds

from retrieval.data.types import ItemCatalogue, SplitData
from retrieval.core.errors import RecError

_CHUNK = 4_000_000  # positions per chunk when counting co-occurrences


def _unit_rows(x: np.ndarray) -> np.ndarray:
    n = np.linalg.norm(x, axis=1, keepdims=True)
    return x / np.where(n > 0, n, 1.0)


def _random_unit_rows(rows: np.ndarray, dim: int, seed: int) -> np.ndarray:
    """Deterministic random unit vectors for items with no signal (so they do not all collide)."""
    rng = np.random.default_rng([seed, 7919])
    x = rng.standard_normal((len(rows), dim)).astype(np.float32)
    return _unit_rows(x)


def truncated_svd(m: sp.spmatrix, dim: int, seed: int = 0) -> np.ndarray:
    """Left singular vectors scaled by sqrt(singular values), (rows, dim), unit rows, float32.

    A fixed start vector makes ARPACK (and so the result) deterministic.
    """
    m = sp.csr_matrix(m, dtype=np.float64)
    k = int(min(dim, min(m.shape) - 1))
    if k < 1:
        raise RecError(f"cannot factorise a {m.shape} matrix into {dim} dimensions; "
                       "the catalogue is too small for this embedding source")
    v0 = np.random.default_rng(seed).uniform(-1, 1, size=min(m.shape))
    u, s, _ = svds(m, k=k, v0=v0, solver="arpack")
    order = np.argsort(-s, kind="stable")
    u, s = u[:, order], s[order]
    # Fix each component's sign (largest |entry| positive) so re-runs agree exactly.
    signs = np.sign(u[np.abs(u).argmax(axis=0), np.arange(k)])
    x = u * (signs * np.sqrt(np.maximum(s, 0)))
    return _unit_rows(x).astype(np.float32)


def cooccurrence_matrix(split: SplitData, window: int = 3) -> sp.csr_matrix:
    """Symmetric (N, N) counts of items i, j appearing within `window` steps in one training
    sequence (row/col k = item k+1)."""
    n = split.num_items
    items = split.train_items - 1
    user = np.repeat(np.arange(split.num_users, dtype=np.int64), split.train_lengths)
    total = sp.csr_matrix((n, n), dtype=np.float64)
    for k in range(1, int(window) + 1):
        for start in range(0, max(0, len(items) - k), _CHUNK):
            stop = min(start + _CHUNK, len(items) - k)
            a, b = items[start:stop], items[start + k:stop + k]
            same = user[start:stop] == user[start + k:stop + k]
            a, b = a[same], b[same]
            rows, cols = np.concatenate([a, b]), np.concatenate([b, a])
            total = total + sp.csr_matrix((np.ones(len(rows)), (rows, cols)), shape=(n, n))
    total.setdiag(0)
    total.eliminate_zeros()
    return total


def ppmi(c: sp.csr_matrix) -> sp.csr_matrix:
    """Positive pointwise mutual information of a symmetric count matrix (sparse in, sparse out)."""
    c = sp.coo_matrix(c)
    row_sum = np.asarray(c.sum(axis=1)).ravel()
    total = row_sum.sum()
    pmi = np.log(c.data * total / (row_sum[c.row] * row_sum[c.col]))
    keep = pmi > 0
    return sp.csr_matrix((pmi[keep], (c.row[keep], c.col[keep])), shape=c.shape)


def cooccurrence_embeddings(split: SplitData, dim: int = 64, window: int = 3,
                            seed: int = 0) -> np.ndarray:
    """Collaborative item vectors: SVD of the PPMI co-occurrence matrix, (N, dim) unit rows."""
    c = cooccurrence_matrix(split, window)
    if c.nnz == 0:
        raise RecError(f"dataset {split.name!r}: no two items co-occur in the training sequences, "
                       "so collaborative embeddings are empty; use item_embeddings.source = 'text'")
    x = truncated_svd(ppmi(c), dim, seed)
    empty = np.linalg.norm(x, axis=1) == 0        # items never seen in training
    x[empty] = _random_unit_rows(np.nonzero(empty)[0], x.shape[1], seed)
    return x


def attribute_matrix(cat: ItemCatalogue) -> sp.csr_matrix:
    """(N, V) TF-IDF weighted multi-hot of every `field=value` token of the catalogue's fields."""
    rows, tokens = [], []
    for name in sorted(cat.fields):
        col = cat.fields[name]
        for item in range(1, cat.num_items + 1):
            for v in str(col[item]).split("|"):
                if v:
                    rows.append(item - 1)
                    tokens.append(f"{name}={v}")
    if not tokens:
        raise RecError("the item catalogue has no attribute fields (genres, brand, categories, ...); "
                       "use item_embeddings.source = 'text' or 'collaborative'")
    vocab, cols = np.unique(np.array(tokens, dtype=object), return_inverse=True)
    m = sp.csr_matrix((np.ones(len(cols)), (np.array(rows), cols)), shape=(cat.num_items, len(vocab)))
    m.data[:] = 1.0                                   # multi-hot, duplicates counted once
    df = np.asarray((m > 0).sum(axis=0)).ravel()
    idf = np.log(cat.num_items / df) + 1.0
    return sp.csr_matrix(m.multiply(idf[None, :]))


def attribute_embeddings(cat: ItemCatalogue, dim: int = 64, seed: int = 0) -> np.ndarray:
    """Attribute multi-hot (TF-IDF) reduced by SVD, (N, dim) unit rows."""
    x = truncated_svd(attribute_matrix(cat), dim, seed)
    empty = np.linalg.norm(x, axis=1) == 0        # items without attributes
    x[empty] = _random_unit_rows(np.nonzero(empty)[0], x.shape[1], seed)
    return x


def fill_from_neighbours(x: np.ndarray, missing: np.ndarray, split: SplitData,
                         window: int = 3, seed: int = 0) -> np.ndarray:
    """Rows `missing` (bool, (N,)) replaced by the normalised co-occurrence-weighted mean of the
    other items' rows; rows with no such neighbour get a deterministic random unit vector."""
    x = x.copy()
    c = cooccurrence_matrix(split, window)[missing]          # (M, N)
    c = c.multiply((~missing)[None, :].astype(np.float64))   # only neighbours that have text
    filled = np.asarray(sp.csr_matrix(c) @ x.astype(np.float64))
    filled = _unit_rows(filled).astype(np.float32)
    none = np.linalg.norm(filled, axis=1) == 0
    filled[none] = _random_unit_rows(np.nonzero(none)[0], x.shape[1], seed)
    x[missing] = filled
    return x
