"""Negative samplers for scorer training (docs/protocol.md §5) and the small interface they share.

A sampler draws, for each training position (a user row and its positive item), n negative items.
It works on the flattened non-padding positions of a batch:

    sample(users (P,) int64, positives (P,) int64, n) -> (P, n) int64 item ids in 1..N

`hidden` (P, d), the model's sequence state at those positions, is passed along for samplers that
need it (hard negatives); the uniform sampler ignores it. `log_q()` gives log-probabilities (N+1,)
for the logQ correction of sampled softmax, or None. `state()` / `load_state()` carry the sampler's
RNG through checkpoints so a resumed run draws the same negatives. Hooks the trainer calls on every
sampler (no-ops unless a sampler needs them): `set_epoch(epoch)` before each epoch and
`bind_item_embeddings(fn)` once, with `fn()` returning the model's current (N+1, d) item table.

Samplers register by name in NEGATIVE_SAMPLERS; `build_negative_sampler(split, name=...)` is the
gin-configurable entry point (other sampler files register themselves there).
"""
from __future__ import annotations

from typing import Any, Callable

import gin
import numpy as np
import torch

from retrieval.data.types import SplitData
from retrieval.core.errors import RecError


class NegativeSampler:
    """The interface every sampler implements (sample, state, load_state) and its default hooks."""

    def sample(self, users: np.ndarray, positives: np.ndarray, n: int,
               hidden: torch.Tensor | None = None) -> np.ndarray:
        raise NotImplementedError

    def log_q(self) -> torch.Tensor | None:
        return None                     # no logQ correction (uniform: a constant shift)

    def state(self) -> dict:
        raise NotImplementedError

    def load_state(self, state: dict) -> None:
        raise NotImplementedError

    def set_epoch(self, epoch: int) -> None:
        """Called before each training epoch (1-based); curricula and growing counts use it."""

    def bind_item_embeddings(self, source: Any) -> None:
        """Called once with a callable returning the model's current (N+1, d) item table."""


NEGATIVE_SAMPLERS: dict[str, Callable[..., NegativeSampler]] = {}


def register_sampler(name: str):
    def deco(cls):
        NEGATIVE_SAMPLERS[name] = cls
        return cls
    return deco


def history_keys(split: SplitData) -> np.ndarray:
    """Sorted unique keys user·(N+1) + item of every training interaction."""
    U, N = split.num_users, split.num_items
    users = np.repeat(np.arange(U, dtype=np.int64), split.train_lengths)
    return np.unique(users * (N + 1) + split.train_items)


def in_history(keys: np.ndarray, users: np.ndarray, items: np.ndarray, num_items: int) -> np.ndarray:
    """Boolean mask, same shape as `items`: is items[...] in the history of users[...] ?

    `users` broadcasts against `items` (e.g. (P, 1) against (P, n)); binary search in the sorted keys.
    """
    if len(keys) == 0:
        return np.zeros(np.shape(items), dtype=bool)
    k = users * (num_items + 1) + items
    idx = np.minimum(np.searchsorted(keys, k), len(keys) - 1)
    return keys[idx] == k


class BatchHistory:
    """Membership in the training histories of one batch's users, for repeated tests in one step.

    `contains(rows, items)`: is items[r, j] in the history of users[rows[r]] ? With a dense boolean
    table over the batch's distinct users (built from their key ranges, one gather per test) when it
    has at most `max_cells` cells, else the binary search of `in_history`. Same answers either way.
    """

    MAX_CELLS = 1 << 26

    def __init__(self, keys: np.ndarray, users: np.ndarray, num_items: int,
                 max_cells: int = MAX_CELLS):
        self.keys, self.users, self.num_items = keys, users, num_items
        uniq, self.row = np.unique(users, return_inverse=True)
        self.mask = None
        if len(uniq) * (num_items + 1) > max_cells or len(keys) == 0:
            return
        width = num_items + 1
        lo, hi = np.searchsorted(keys, uniq * width), np.searchsorted(keys, (uniq + 1) * width)
        counts = hi - lo
        idx = np.repeat(lo - np.cumsum(counts) + counts, counts) + np.arange(counts.sum())
        self.mask = np.zeros((len(uniq), width), dtype=bool)
        owner = np.repeat(np.arange(len(uniq)), counts)
        self.mask[owner, keys[idx] - uniq[owner] * width] = True

    def contains(self, rows: np.ndarray, items: np.ndarray) -> np.ndarray:
        if self.mask is None:
            return in_history(self.keys, self.users[rows][:, None], items, self.num_items)
        return self.mask[self.row[rows][:, None], items]


@register_sampler("uniform")
class UniformNegativeSampler(NegativeSampler):
    """Uniform over the items a user has not interacted with in training (with replacement).

    Rejection sampling: draw uniformly from 1..N, redraw the draws that hit the history. Each round
    keeps a fraction ≥ 1 − (history size / N) of the remaining draws, so a few rounds suffice.
    """

    def __init__(self, split: SplitData, seed: int = 0, max_rounds: int = 100):
        self.num_items = split.num_items
        self.keys = history_keys(split)
        self.rng = np.random.default_rng(seed)
        self.max_rounds = max_rounds
        distinct = np.bincount(self.keys // (self.num_items + 1), minlength=split.num_users)
        full = np.nonzero(distinct >= split.num_items)[0]
        if len(full):
            raise RecError(f"dataset {split.name!r}: user row {int(full[0])} has interacted with every "
                           "item, so no negative exists; filter such users out")

    def sample(self, users: np.ndarray, positives: np.ndarray, n: int,
               hidden: torch.Tensor | None = None) -> np.ndarray:
        users = np.asarray(users, dtype=np.int64)[:, None]                # (P, 1)
        out = self.rng.integers(1, self.num_items + 1, size=(len(users), n))   # (P, n)
        bad = in_history(self.keys, users, out, self.num_items)
        for _ in range(self.max_rounds):
            if not bad.any():
                return out
            rows = np.nonzero(bad)[0]
            redraw = self.rng.integers(1, self.num_items + 1, size=len(rows))
            out[bad] = redraw
            bad[bad] = in_history(self.keys, users[rows, 0], redraw, self.num_items)
        raise RecError(f"uniform negative sampling did not finish in {self.max_rounds} rounds; some "
                       "user's history covers almost every item")

    def state(self) -> dict:
        return {"bit_generator": self.rng.bit_generator.state}

    def load_state(self, state: dict) -> None:
        self.rng.bit_generator.state = state["bit_generator"]


@gin.configurable
def build_negative_sampler(split: SplitData, name: str = "uniform", seed: int | None = None,
                           fallback_seed: int = 0) -> NegativeSampler:
    """The sampler called `name`; its seed is `seed` if bound, else the trainer's (`fallback_seed`)."""
    seed = fallback_seed if seed is None else seed
    if name not in NEGATIVE_SAMPLERS:
        raise RecError(f"unknown negative sampler {name!r} (build_negative_sampler.name); choose one "
                       f"of: {', '.join(sorted(NEGATIVE_SAMPLERS))}")
    return NEGATIVE_SAMPLERS[name](split=split, seed=seed)
