"""Training examples of the item-level causal generator: one position per item, every position
supervised (docs/protocol.md §6: the cost of an epoch grows with the number of training interactions).

A user's training sequence i_1 .. i_n gives the predictions i_{t+1} | i_1..i_t for t = 1..n-1. They
are cut into windows of at most `max_len` targets, the most recent window first; a window with
targets i_{a+1} .. i_e reads the inputs i_a .. i_{e-1}. A user with n - 1 <= max_len has one window;
a longer user gets extra windows, so every training interaction is a target exactly once per epoch.

Batches are right-aligned (left-padded with item 0) and trimmed to their longest window, like the
scorer's; windows are bucketed by length so that little of a batch is padding.
"""
from __future__ import annotations

from typing import NamedTuple

import numpy as np
import torch

from retrieval.data.batch import right_aligned
from retrieval.data.types import SplitData
from retrieval.core.errors import RecError


class WindowBatch(NamedTuple):
    """One training batch of windows.

    items:   (B, T) int64 input item ids, right-aligned, 0 = padding.
    targets: (B, T) int64 next item ids, 0 where `items` is padding.
    """

    items: torch.Tensor
    targets: torch.Tensor

    def to(self, device) -> "WindowBatch":
        return WindowBatch(*(t.to(device) for t in self))


class ItemWindows:
    """All training windows of a split; window w covers targets train_items[starts[w]+1 : ends[w]]."""

    def __init__(self, split: SplitData, max_len: int):
        if max_len < 1:
            raise RecError(f"max_len={max_len}: must be >= 1")
        off = split.train_offsets
        n = np.diff(off)                                                   # (U,) items per user
        num_targets = np.maximum(n - 1, 0)
        per_user = -(-num_targets // max_len)                              # ceil, 0 for n <= 1
        self.users = np.repeat(np.arange(split.num_users, dtype=np.int64), per_user)     # (W,)
        k = np.arange(per_user.sum()) - np.repeat(np.cumsum(per_user) - per_user, per_user)
        self.ends = off[1:][self.users] - k * max_len                      # (W,) exclusive end
        self.starts = np.maximum(off[:-1][self.users], self.ends - max_len - 1)
        self.max_len = int(max_len)
        self.items = split.train_items

    def __len__(self) -> int:
        return len(self.users)

    def lengths(self) -> np.ndarray:
        """(W,) targets per window."""
        return self.ends - self.starts - 1

    @property
    def num_positions(self) -> int:
        return int(self.lengths().sum())

    def row_counts(self, idx: np.ndarray) -> np.ndarray:
        """Supervised positions of each window in `idx` (the weights of their mean loss)."""
        return self.lengths()[idx]

    def count(self, idx: np.ndarray) -> int:
        return int(self.row_counts(idx).sum())

    def batch(self, idx: np.ndarray) -> WindowBatch:
        s, e = self.starts[idx], self.ends[idx]
        width = int((e - s - 1).max())
        return WindowBatch(torch.from_numpy(right_aligned(self.items, s, e - 1, width)),
                           torch.from_numpy(right_aligned(self.items, s + 1, e, width)))

    def epoch_batches(self, batch_size: int, seed: int, epoch: int,
                      bucket_batches: int = 50) -> list[np.ndarray]:
        """Window indices of every batch of one epoch, a pure function of (seed, epoch): shuffled,
        sorted by length inside chunks of `bucket_batches` batches (0: no bucketing), and the
        batch order shuffled again."""
        rng = np.random.default_rng([seed, epoch])
        perm = rng.permutation(len(self))
        if bucket_batches > 0:
            chunk = np.arange(len(perm)) // (batch_size * bucket_batches)
            perm = perm[np.lexsort((self.lengths()[perm], chunk))]
        batches = [perm[s:s + batch_size] for s in range(0, len(perm), batch_size)]
        return [batches[i] for i in rng.permutation(len(batches))]
