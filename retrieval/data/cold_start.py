"""The cold-start protocol (docs/protocol.md §2.7): a fixed random share of the catalogue is *new*.

Their events are removed from the training sequences (so from everything a model trains on: the
sequences, the semantic-ID fit, an ID model's embedding table), they stay in the catalogue with
their text, and validation / test keep their targets, so a test user whose target is a new item
asks a model for an item it never saw in training. The mask is a pure function of (number of items,
fraction, seed); the split's fingerprint records it, so artifacts and checkpoints of the cold-start
split are never mixed with the full one's.
"""
from __future__ import annotations

from dataclasses import replace

import numpy as np

from retrieval.core.errors import RecError
from retrieval.core.io import fingerprint
from retrieval.data.types import SplitData


def new_item_mask(num_items: int, fraction: float, seed: int = 0) -> np.ndarray:
    """(N+1,) bool: round(fraction * N) items drawn without replacement with `seed` (row 0 False)."""
    if isinstance(fraction, bool) or not isinstance(fraction, (int, float)) or not 0.0 <= fraction < 1.0:
        raise RecError(f"load_split.new_items = {fraction!r} must be a fraction in [0, 1), e.g. 0.05")
    mask = np.zeros(num_items + 1, dtype=bool)
    n = int(round(fraction * num_items))
    mask[1 + np.random.default_rng(seed).choice(num_items, size=n, replace=False)] = True
    return mask


def hold_out_new_items(split: SplitData, fraction: float, seed: int = 0) -> SplitData:
    """The split with the new items' events removed from every training sequence (vectorised)."""
    new = new_item_mask(split.num_items, fraction, seed)
    keep = ~new[split.train_items]
    users = np.repeat(np.arange(split.num_users), split.train_lengths)
    offsets = np.zeros(split.num_users + 1, dtype=np.int64)
    np.cumsum(np.bincount(users[keep], minlength=split.num_users), out=offsets[1:])
    return replace(split, train_offsets=offsets, train_items=split.train_items[keep],
                   train_times=split.train_times[keep], new_items=new,
                   fingerprint=fingerprint(split.fingerprint, "new-items", float(fraction), int(seed)))
