"""Typed batch records shared by every model and the evaluator."""
from __future__ import annotations

from typing import NamedTuple

import numpy as np
import torch


class HistoryBatch(NamedTuple):
    """Input histories for a batch of users, right-aligned (most recent item in the last column).

    users: (B,) int64 user rows.
    items: (B, L) int64 item ids, 0 = padding on the left.
    times: (B, L) int64 timestamps, 0 where padded.
    """

    users: torch.Tensor
    items: torch.Tensor
    times: torch.Tensor

    def to(self, device) -> "HistoryBatch":
        return HistoryBatch(*(t.to(device) for t in self))


def right_aligned(values: np.ndarray, starts: np.ndarray, ends: np.ndarray, width: int) -> np.ndarray:
    """values[starts[b]:ends[b]] (the last `width` of each), right-aligned and zero-padded:
    (B, width). Vectorised: one fancy-index gather, no per-row Python loop."""
    lengths = np.minimum(ends - starts, width)
    col = np.arange(width)[None, :]                         # (1, W)
    src = ends[:, None] - (width - col)                     # (B, W) source index
    valid = col >= (width - lengths)[:, None]               # from the first filled column on
    out = np.zeros((len(starts), width), dtype=values.dtype)
    out[valid] = values[src[valid]]
    return out


def pad_left(offsets: np.ndarray, values: np.ndarray, rows: np.ndarray, max_len: int) -> np.ndarray:
    """Last `max_len` values of each CSR row in `rows`, right-aligned, zero-padded: (len(rows), max_len)."""
    return right_aligned(values, offsets[rows], offsets[rows + 1], max_len)


def history_batch(offsets: np.ndarray, items: np.ndarray, times: np.ndarray, rows: np.ndarray,
                  max_len: int) -> HistoryBatch:
    return HistoryBatch(torch.from_numpy(np.asarray(rows, dtype=np.int64)),
                        torch.from_numpy(pad_left(offsets, items, rows, max_len)),
                        torch.from_numpy(pad_left(offsets, times, rows, max_len)))


def trim_history(items: torch.Tensor, maxlen: int) -> torch.Tensor:
    """Right-aligned histories (B, L) -> their last min(L, maxlen) columns, less the leading columns
    that are padding in every row (all columns kept when every one is padding)."""
    if items.shape[1] > maxlen:
        items = items[:, -maxlen:]
    used = (items > 0).any(0)
    if bool(used.any()) and not bool(used.all()):
        items = items[:, int(used.int().argmax()):]
    return items
