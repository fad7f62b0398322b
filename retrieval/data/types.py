"""The records every dataset produces: an interaction table, an item catalogue, and the split.

Ids: items are remapped to 1..N (0 = padding); users are rows 0..U-1 of the split arrays.
Raw ids (strings) are kept so results can be mapped back to the source files.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np


@dataclass(frozen=True)
class ItemCatalogue:
    """Item metadata, indexed by item id (row 0 is the padding item).

    raw_ids:  (N+1,) str — id in the source file ("" for padding).
    titles:   (N+1,) str — may be "" when the source has no title.
    fields:   extra text fields, each (N+1,) str, e.g. {"genres": ..., "brand": ..., "categories": ...};
              multi-valued fields are joined by "|".
    template: how `texts()` renders an item (docs/protocol.md §2): "movielens" or "amazon" or "plain".
    """

    raw_ids: np.ndarray
    titles: np.ndarray
    fields: dict = field(default_factory=dict)
    template: str = "plain"

    @property
    def num_items(self) -> int:
        return len(self.raw_ids) - 1

    def text(self, item: int) -> str:
        title = str(self.titles[item])
        parts = [title] if title else []

        def listed(name):
            v = self.fields.get(name)
            return [s for s in str(v[item]).split("|") if s] if v is not None else []

        if self.template == "movielens":
            genres = [g for g in listed("genres") if g != "(no genres listed)"]
            if genres:
                parts.append("genres: " + ", ".join(genres))
            tags = listed("tags")
            if tags:
                parts.append("tags: " + ", ".join(tags))
        elif self.template == "amazon":
            brand = listed("brand")
            if brand:
                parts.append("brand: " + brand[0])
            cats = listed("categories")
            if cats:
                parts.append("categories: " + ", ".join(cats))
        else:
            for name in sorted(self.fields):
                vals = listed(name)
                if vals:
                    parts.append(f"{name}: " + ", ".join(vals))
        return "; ".join(parts)

    def texts(self) -> list[str]:
        """Text of items 1..N (index i-1 = item i), docs/protocol.md §2 templates."""
        return [self.text(i) for i in range(1, self.num_items + 1)]

    def subset(self, keep: np.ndarray) -> "ItemCatalogue":
        """Catalogue restricted to old ids `keep` (sorted, 1-based), renumbered 1..len(keep)."""
        idx = np.concatenate([[0], keep])
        return ItemCatalogue(self.raw_ids[idx], self.titles[idx],
                             {k: v[idx] for k, v in self.fields.items()}, self.template)


@dataclass(frozen=True)
class Interactions:
    """A time-ordered interaction table (one row per event), before filtering and splitting.

    user, item: int64 (E,) — dense ids, users 0..U-1 and items 1..N (catalogue rows).
    timestamp:  int64 (E,) — seconds, or the event's position when the source has no time.
    has_time:   whether timestamps are real (TiSASRec needs them).
    user_raw_ids: (U,) str.
    Rows are sorted by (user, timestamp), ties kept in file order.
    """

    user: np.ndarray
    item: np.ndarray
    timestamp: np.ndarray
    user_raw_ids: np.ndarray
    catalogue: ItemCatalogue
    has_time: bool = True

    @property
    def num_events(self) -> int:
        return len(self.user)


@dataclass(frozen=True)
class SplitData:
    """Leave-one-out split (docs/protocol.md §2), user rows 0..U-1, item ids 1..N.

    train_offsets: (U+1,) int64 — user u's training sequence is train_items[off[u]:off[u+1]].
    train_items, train_times: (T,) int64, time-ordered within each user.
    valid_item, valid_time, test_item, test_time: (U,) int64.
    Validation input = training sequence; test input = training sequence + validation item.
    new_items: (N+1,) bool under the cold-start protocol (retrieval.data.cold_start: these items'
    events are not in the training sequences), else None.
    """

    name: str
    train_offsets: np.ndarray
    train_items: np.ndarray
    train_times: np.ndarray
    valid_item: np.ndarray
    valid_time: np.ndarray
    test_item: np.ndarray
    test_time: np.ndarray
    user_raw_ids: np.ndarray
    catalogue: ItemCatalogue
    has_time: bool
    fingerprint: str
    new_items: np.ndarray | None = None

    @property
    def num_users(self) -> int:
        return len(self.valid_item)

    @property
    def num_items(self) -> int:
        return self.catalogue.num_items

    @property
    def train_lengths(self) -> np.ndarray:
        return np.diff(self.train_offsets)

    def stats(self) -> dict:
        lengths = self.train_lengths + 2
        n_inter = int(lengths.sum())
        return {
            "users": self.num_users,
            "items": self.num_items,
            "interactions": n_inter,
            "density": n_inter / max(1, self.num_users * self.num_items),
            "mean_seq_len": float(lengths.mean()) if len(lengths) else 0.0,
            "median_seq_len": float(np.median(lengths)) if len(lengths) else 0.0,
            "train_interactions": int(len(self.train_items)),
            "valid_users": self.num_users,
            "test_users": self.num_users,
        }

    def histories(self, stage: str) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Input histories for `stage` in CSR form: (offsets (U+1,), items, times).

        stage "valid": the training sequence; "test": training sequence + validation item.
        """
        if stage == "valid":
            return self.train_offsets, self.train_items, self.train_times
        if stage != "test":
            raise ValueError(f"stage must be 'valid' or 'test', got {stage!r}")
        U = self.num_users
        lengths = self.train_lengths + 1
        offsets = np.zeros(U + 1, dtype=np.int64)
        np.cumsum(lengths, out=offsets[1:])
        items = np.empty(offsets[-1], dtype=np.int64)
        times = np.empty(offsets[-1], dtype=np.int64)
        last = offsets[1:] - 1                           # slot of the appended validation item
        mask = np.ones(offsets[-1], dtype=bool)
        mask[last] = False
        items[mask], times[mask] = self.train_items, self.train_times
        items[last], times[last] = self.valid_item, self.valid_time
        return offsets, items, times

    def targets(self, stage: str) -> np.ndarray:
        return self.valid_item if stage == "valid" else self.test_item
