"""Negative samplers beyond uniform (docs/protocol.md §5): popularity, mixtures by ratio, curriculum
phases and a growing negative count (FAISS hard negatives: retrieval.negatives.hard). They follow
retrieval.negatives.base' interface

    sample(users (P,), positives (P,), n, hidden (P, d) | None) -> (P, n) int64 items in 1..N

and register by name in NEGATIVE_SAMPLERS ('popularity', 'hard', 'mixture', 'curriculum', 'growing'),
so `build_negative_sampler.name = 'mixture'` selects one once this module is imported. Samplers
that change over training also have `set_epoch(epoch)` (curriculum, growing count; hard negatives
rebuild their index) and `bind_item_embeddings(source)` (hard negatives: a callable returning the
model's current (N+1, d) item table, or a fixed matrix such as content embeddings); composite
samplers forward both calls.
Every draw is vectorised over the P positions; history exclusion uses retrieval.negatives.base' keys.
"""
from __future__ import annotations

from typing import Any

import gin
import numpy as np
import torch

from retrieval.data.types import SplitData
from retrieval.core.errors import RecError
from retrieval.negatives.hard import HardNegativeSampler  # noqa: F401  (registers "hard"; re-exported)
from retrieval.negatives.base import (NEGATIVE_SAMPLERS, NegativeSampler, UniformNegativeSampler,
                                 history_keys, in_history, register_sampler)


def _forward(samplers, method: str, *args) -> None:
    """Call `method(*args)` on every sampler (composites pass the hooks down)."""
    for s in samplers:
        getattr(s, method)(*args)


def build_component(name: str, split: SplitData, seed: int):
    if name not in NEGATIVE_SAMPLERS:
        raise RecError(f"unknown negative sampler {name!r} in a mixture/curriculum; choose one of: "
                       f"{', '.join(sorted(NEGATIVE_SAMPLERS))}")
    return NEGATIVE_SAMPLERS[name](split=split, seed=seed)


@register_sampler("popularity")
@gin.configurable
class PopularityNegativeSampler(NegativeSampler):
    """p(i) ∝ count(i)^alpha over training interactions, excluding the user's history (and the
    positive) by rejection; alpha = 0 is uniform over items seen in training, alpha = 1 is the
    empirical popularity. Draws still rejected after `max_rounds` (a user whose history holds almost
    all the popularity mass) fall back to uniform over the non-history items."""

    def __init__(self, split: SplitData, seed: int = 0, alpha: float = 0.75, max_rounds: int = 50):
        self.num_items, self.alpha, self.max_rounds = split.num_items, alpha, max_rounds
        counts = np.bincount(split.train_items, minlength=split.num_items + 1).astype(np.float64)
        weights = counts[1:] ** alpha * (counts[1:] > 0)                # unseen items: never drawn
        if weights.sum() <= 0:
            raise RecError(f"dataset {split.name!r} has no training interactions to count popularity")
        self.probs = np.concatenate([[0.0], weights / weights.sum()])   # (N+1,), row 0 = padding
        self.cdf = np.cumsum(self.probs[1:])
        self.cdf[-1] = 1.0
        self.keys = history_keys(split)
        self.rng = np.random.default_rng(seed)
        self.fallback = UniformNegativeSampler(split=split, seed=seed + 7919)

    def _draw(self, size) -> np.ndarray:
        return np.searchsorted(self.cdf, self.rng.random(size), side="right").astype(np.int64) + 1

    def sample(self, users, positives, n, hidden=None) -> np.ndarray:
        users = np.asarray(users, dtype=np.int64)[:, None]                # (P, 1)
        positives = np.asarray(positives, dtype=np.int64)[:, None]
        out = self._draw((len(users), n))                                 # (P, n)

        def rejected(u, p, items):
            return in_history(self.keys, u, items, self.num_items) | (items == p)

        bad = rejected(users, positives, out)
        for _ in range(self.max_rounds):
            if not bad.any():
                return out
            rows = np.nonzero(bad)[0]
            out[bad] = self._draw(len(rows))
            bad[bad] = rejected(users[rows, 0], positives[rows, 0], out[bad])
        rows = np.nonzero(bad)[0]
        if rows.size:
            out[bad] = self.fallback.sample(users[rows, 0], positives[rows, 0], 1)[:, 0]
        return out

    def log_q(self) -> torch.Tensor:
        with np.errstate(divide="ignore"):
            return torch.from_numpy(np.log(self.probs)).float()

    def state(self) -> dict:
        return {"bit_generator": self.rng.bit_generator.state, "fallback": self.fallback.state()}

    def load_state(self, state: dict) -> None:
        self.rng.bit_generator.state = state["bit_generator"]
        self.fallback.load_state(state["fallback"])


def wants_content_embeddings(sampler) -> bool:
    """Does `sampler` (or a component of it) mine hard negatives in content-embedding space? The
    training script then binds the content embeddings before the trainer binds the live table."""
    parts = [sampler, *getattr(sampler, "components", {}).values(), getattr(sampler, "base", None)]
    return any(getattr(p, "embeddings", None) == "content" for p in parts if p is not None)


def apportion(ratios: np.ndarray, total: int) -> np.ndarray:
    """Integer counts summing to `total`, proportional to `ratios` (largest remainder; ties go to
    the earlier component)."""
    r = np.asarray(ratios, dtype=np.float64)
    exact = r / r.sum() * total
    counts = np.floor(exact).astype(np.int64)
    left = total - counts.sum()
    order = np.argsort(-(exact - counts), kind="stable")
    counts[order[:left]] += 1
    return counts


def slot_assignment(ratios: np.ndarray, rows: int, n: int, rng: np.random.Generator) -> np.ndarray:
    """(rows, n) component index of every negative slot with exact batch totals.

    Each row first gets floor(r_c · n) slots of every component c (so every row is mixed when n
    allows); the remaining slots take the batch-level remainder counts, shuffled across rows. The
    total for component c is apportion(r, rows · n)[c] exactly.
    """
    r = np.asarray(ratios, dtype=np.float64) / np.sum(ratios)
    totals = apportion(r, rows * n)
    # Per-row guaranteed slots; the epsilon absorbs float error in r·n (0.3·10 = 2.9999…), the cap
    # keeps them within the batch total.
    base = np.minimum(np.floor(r * n + 1e-9).astype(np.int64), totals // max(rows, 1))
    rest = totals - base * rows                                           # >= 0
    fixed = np.repeat(np.arange(len(r)), base)                            # (sum(base),)
    extra = np.repeat(np.arange(len(r)), rest)
    rng.shuffle(extra)
    out = np.empty((rows, n), dtype=np.int64)
    out[:, :fixed.size] = fixed[None, :]
    out[:, fixed.size:] = extra.reshape(rows, n - fixed.size)
    return out


@register_sampler("mixture")
@gin.configurable
class MixtureNegativeSampler(NegativeSampler):
    """Negatives from several samplers in fixed proportions, e.g.
    `MixtureNegativeSampler.ratios = {'hard': 0.5, 'uniform': 0.3, 'popularity': 0.2}`.

    Per batch the P·n slots are split with exact counts (see `slot_assignment`); each component is
    called once for the positions that have slots of it, with as many negatives as the fullest row
    needs, and its draws are scattered into its slots.
    """

    def __init__(self, split: SplitData, seed: int = 0, ratios: dict | None = None):
        ratios = dict(ratios or {"hard": 0.5, "uniform": 0.3, "popularity": 0.2})
        self.names = list(ratios)
        self.set_ratios(ratios)                          # validates before components are built
        self.components = {name: build_component(name, split, seed + 1 + i)
                           for i, name in enumerate(self.names)}
        self.rng = np.random.default_rng(seed)

    def set_ratios(self, ratios: dict) -> None:
        if any(v < 0 for v in ratios.values()) or sum(ratios.values()) <= 0:
            raise RecError(f"negative-sampler mixture ratios {ratios} must be non-negative with a "
                           "positive sum (MixtureNegativeSampler.ratios / "
                           "CurriculumNegativeSampler.phase_ratios)")
        unknown = set(ratios) - set(self.names)
        if unknown:
            raise RecError(f"mixture ratios name samplers {sorted(unknown)} that are not components "
                           f"({self.names})")
        self.ratios = np.array([float(ratios.get(n, 0.0)) for n in self.names])

    def sample(self, users, positives, n, hidden=None) -> np.ndarray:
        users = np.asarray(users, dtype=np.int64)
        positives = np.asarray(positives, dtype=np.int64)
        assign = slot_assignment(self.ratios, len(users), n, self.rng)    # (P, n)
        out = np.zeros((len(users), n), dtype=np.int64)
        for c, name in enumerate(self.names):
            mine = assign == c                                            # (P, n)
            per_row = mine.sum(axis=1)
            if per_row.max(initial=0) == 0:
                continue
            rows = np.nonzero(per_row)[0]
            h = hidden[torch.from_numpy(rows).to(hidden.device)] if hidden is not None else None
            draws = self.components[name].sample(users[rows], positives[rows], int(per_row.max()), h)
            # The j-th slot of component c in a row takes that row's j-th draw.
            sel = mine[rows]                                              # (R, n)
            rank = np.cumsum(sel, axis=1) - 1
            rr, cc = np.nonzero(sel)
            out[rows[rr], cc] = draws[rr, rank[rr, cc]]
        return out

    def set_epoch(self, epoch: int) -> None:
        _forward(self.components.values(), "set_epoch", epoch)

    def bind_item_embeddings(self, source: Any) -> None:
        _forward(self.components.values(), "bind_item_embeddings", source)

    def log_q(self):
        return None                          # a mixture with hard negatives has no fixed q

    def state(self) -> dict:
        return {"bit_generator": self.rng.bit_generator.state,
                "components": {k: c.state() for k, c in self.components.items()}}

    def load_state(self, state: dict) -> None:
        self.rng.bit_generator.state = state["bit_generator"]
        for k, c in self.components.items():
            c.load_state(state["components"][k])


DEFAULT_PHASES = ({"uniform": 0.8, "popularity": 0.1, "hard": 0.1},      # easy
                  {"uniform": 0.6, "popularity": 0.1, "hard": 0.3},      # medium
                  {"uniform": 0.3, "popularity": 0.1, "hard": 0.6})      # hard


@register_sampler("curriculum")
@gin.configurable
class CurriculumNegativeSampler(MixtureNegativeSampler):
    """A mixture whose ratios change by epoch: phase i applies from epoch `phase_epochs[i]` on
    (easy → medium → hard, a growing hard-negative share by default). Needs set_epoch each epoch."""

    def __init__(self, split: SplitData, seed: int = 0, phase_epochs=(0, 5, 10),
                 phase_ratios=DEFAULT_PHASES):
        phase_epochs, phase_ratios = list(phase_epochs), [dict(r) for r in phase_ratios]
        if (len(phase_epochs) != len(phase_ratios) or not phase_epochs or phase_epochs[0] != 0
                or any(b <= a for a, b in zip(phase_epochs, phase_epochs[1:]))):
            raise RecError(f"CurriculumNegativeSampler.phase_epochs={phase_epochs} must start at 0, "
                           f"increase, and have one entry per phase_ratios ({len(phase_ratios)})")
        names = {k: 0.0 for r in phase_ratios for k in r}
        super().__init__(split, seed=seed, ratios={**names, **phase_ratios[0]})
        self.phase_epochs, self.phase_ratios = phase_epochs, phase_ratios
        for ratios in phase_ratios:                      # fail at start, not at a later epoch
            self.set_ratios(ratios)
        self.phase = 0
        self.set_epoch(0)

    def set_epoch(self, epoch: int) -> None:
        self.phase = int(np.searchsorted(self.phase_epochs, epoch, side="right")) - 1
        self.set_ratios(self.phase_ratios[self.phase])
        super().set_epoch(epoch)


@gin.configurable
class NegativeCountSchedule:
    """n(epoch) = start + floor((end - start) · min(epoch, ramp_epochs) / ramp_epochs): a linear
    ramp from `start` negatives at epoch 0 to `end` at `ramp_epochs`, then constant (seed 000)."""

    def __init__(self, start: int = 1, end: int = 5, ramp_epochs: int = 10):
        if start < 1 or end < start or ramp_epochs < 1:
            raise RecError(f"NegativeCountSchedule(start={start}, end={end}, ramp_epochs={ramp_epochs})"
                           ": need 1 <= start <= end and ramp_epochs >= 1")
        self.start, self.end, self.ramp_epochs = start, end, ramp_epochs

    def __call__(self, epoch: int) -> int:
        return self.start + (self.end - self.start) * min(epoch, self.ramp_epochs) // self.ramp_epochs


@register_sampler("growing")
@gin.configurable
class GrowingCountSampler(NegativeSampler):
    """Wraps sampler `base` and draws NegativeCountSchedule()(epoch) negatives per position instead
    of the `n` the loss asks for (every sampled loss accepts any n). Needs set_epoch each epoch."""

    def __init__(self, split: SplitData, seed: int = 0, base: str = "uniform"):
        if base == "growing":
            raise RecError("GrowingCountSampler.base cannot be 'growing'")
        self.base = build_component(base, split, seed)
        self.schedule = NegativeCountSchedule()
        self.epoch = 0

    def num_negatives(self) -> int:
        return self.schedule(self.epoch)

    def sample(self, users, positives, n, hidden=None) -> np.ndarray:
        return self.base.sample(users, positives, self.num_negatives(), hidden)

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch
        _forward([self.base], "set_epoch", epoch)

    def bind_item_embeddings(self, source: Any) -> None:
        _forward([self.base], "bind_item_embeddings", source)

    def log_q(self):
        return self.base.log_q()

    def state(self) -> dict:
        return {"epoch": self.epoch, "base": self.base.state()}

    def load_state(self, state: dict) -> None:
        self.epoch = int(state["epoch"])
        self.base.load_state(state["base"])
