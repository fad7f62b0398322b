"""The disambiguation code (docs/protocol.md §4) and the statistics that say how good a set of codes is.

d = the item's index within its group of items sharing all L codes (0 for the lowest item id), so
(c1, ..., cL, d) is unique. One lexsort, O(N log N); never a pairwise comparison.
"""
from __future__ import annotations

import numpy as np


def _groups(codes: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(order, group_start): items sorted by (codes, item index), and where each run of equal codes
    starts in that order."""
    n = codes.shape[0]
    keys = (np.arange(n),) + tuple(codes[:, l] for l in range(codes.shape[1] - 1, -1, -1))
    order = np.lexsort(keys)                                         # primary key: level 1
    s = codes[order]
    new = np.ones(n, dtype=bool)
    new[1:] = (s[1:] != s[:-1]).any(axis=1)
    return order, new


def disambiguate(codes: np.ndarray) -> np.ndarray:
    """(N, L) int codes -> (N, L+1) int64 with the disambiguation code appended."""
    codes = np.asarray(codes, dtype=np.int64)
    n = codes.shape[0]
    d = np.zeros(n, dtype=np.int64)
    if n:
        order, new = _groups(codes)
        pos = np.arange(n)
        start = np.maximum.accumulate(np.where(new, pos, 0))        # index of the run's first item
        d[order] = pos - start
    return np.concatenate([codes, d[:, None]], axis=1)


def collision_stats(codes: np.ndarray) -> dict:
    """Fraction of items whose L codes collide with a lower-id item (d > 0), largest group size,
    and the number of distinct L-code prefixes."""
    codes = np.asarray(codes, dtype=np.int64)
    n = codes.shape[0]
    if n == 0:
        return {"collision_fraction": 0.0, "largest_group": 0, "distinct_ids": 0}
    _, new = _groups(codes)
    sizes = np.diff(np.append(np.nonzero(new)[0], n))
    return {"collision_fraction": float((n - len(sizes)) / n),
            "largest_group": int(sizes.max()),
            "distinct_ids": int(len(sizes))}


def level_stats(codes: np.ndarray, codebook_size: int) -> list[dict]:
    """Per level: usage (fraction of the K codes used) and perplexity (exp of the code entropy;
    K when codes are uniform, 1 when all items share one code)."""
    out = []
    for l in range(codes.shape[1]):
        counts = np.bincount(codes[:, l], minlength=codebook_size).astype(np.float64)
        p = counts[counts > 0] / counts.sum()
        out.append({"level": l + 1, "usage": float((counts > 0).sum() / codebook_size),
                    "perplexity": float(np.exp(-(p * np.log(p)).sum()))})
    return out


def prefix_sharing(codes: np.ndarray, a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """For item-row pairs (a[i], b[i]): the fraction of pairs sharing the first 1..L codes, (L,)."""
    same = codes[a] == codes[b]                                      # (P, L)
    return np.cumprod(same, axis=1).mean(axis=0)
