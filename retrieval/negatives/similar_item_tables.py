"""Similar-item tables: for each item, up to k other items that are alike, either as FAISS
neighbours in content-embedding space (`neighbour_table`) or as items sharing a semantic-ID prefix
(`prefix_table`). Tables are (N+1, k) int64 item ids, row 0 = padding, 0 = no similar item.

They feed the scorer's semantic-consistency loss (retrieval.scorers.semantic_losses); stage 1 builds
them from its embeddings or semantic IDs (rqvae.similar_items.similar_item_table). They need only
item vectors or codes, so they sit beside the FAISS item index, below both paths.
"""
from __future__ import annotations

from typing import Any

import gin
import numpy as np

from retrieval.core.errors import RecError
from retrieval.negatives.item_index import ItemIndex


@gin.configurable
def neighbour_table(embeddings: Any, k: int = 10, num_items: int | None = None,
                    metric: str = "cosine", kind: str = "flat") -> np.ndarray:
    """(N+1, k) int64: the k nearest other items of each item in content-embedding space.

    embeddings: (N, d) content embeddings (row i-1 = item i, as rqvae.embeddings gives them) with
    `num_items=N`, or (N+1, d) with a padding row 0. Row 0 of the table is 0; an item is never its
    own neighbour.
    """
    index = ItemIndex(embeddings, num_items=num_items, kind=kind, metric=metric)
    return index.neighbour_table(k)


@gin.configurable
def prefix_table(codes: np.ndarray, prefix_len: int = 2, k: int = 10, seed: int = 0) -> np.ndarray:
    """(N+1, k) int64: k items drawn (with replacement) among the other items whose first
    `prefix_len` semantic-ID codes equal the item's; 0 where the item is alone in its prefix group.

    codes: (N+1, L+1) int64 from rqvae.artifact.SemanticIds.codes (row 0 = padding, ignored).
    Vectorised: items are sorted by prefix so each group is a contiguous run; an offset in
    [1, size-1] from the item's own position, modulo the group size, is always another member.
    """
    codes = np.asarray(codes, dtype=np.int64)
    if codes.ndim != 2 or not 1 <= prefix_len <= codes.shape[1]:
        raise RecError(f"prefix_table.prefix_len={prefix_len} must be in 1..{codes.shape[1]} "
                       f"(levels + 1 of the semantic-ID codes, shape {codes.shape})")
    n = codes.shape[0] - 1
    prefix = codes[1:, :prefix_len]                                     # (N, p)
    order = np.lexsort(prefix.T[::-1])                                  # items grouped by prefix
    sp = prefix[order]
    new_group = np.ones(n, dtype=bool)
    new_group[1:] = (sp[1:] != sp[:-1]).any(axis=1)
    group = np.cumsum(new_group) - 1                                    # group of sorted position
    starts = np.flatnonzero(new_group)
    sizes = np.diff(np.append(starts, n))
    pos_in_group = np.arange(n) - starts[group]
    size = sizes[group][:, None]                                        # (N, 1)
    rng = np.random.default_rng(seed)
    offset = 1 + np.floor(rng.random((n, k)) * np.maximum(size - 1, 1)).astype(np.int64)
    other = order[starts[group][:, None] + (pos_in_group[:, None] + offset) % size] + 1
    table = np.zeros((n + 1, k), dtype=np.int64)
    table[order + 1] = np.where(size > 1, other, 0)
    return table
