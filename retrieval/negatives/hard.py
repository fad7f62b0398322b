"""FAISS hard negatives (docs/protocol.md §5): the items nearest to the sequence state, the
sequence's latest state or the positive's embedding, never in the user's training history.
Registered as 'hard' in NEGATIVE_SAMPLERS; retrieval.negatives.samplers composes it.
"""
from __future__ import annotations

from typing import Any, Callable

import gin
import numpy as np

from retrieval.data.types import SplitData
from retrieval.core.errors import RecError
from retrieval.negatives.item_index import ItemIndex
from retrieval.negatives.base import BatchHistory, NegativeSampler, history_keys, register_sampler



@register_sampler("hard")
@gin.configurable
class HardNegativeSampler(NegativeSampler):
    """FAISS hard negatives: the items nearest to the sequence state (`query='state'`, needs
    `hidden`; one search per position), to the sequence's latest state (`query='sequence'`: one
    search per sequence, with the state at its last position, shared by all its positions; every
    positive of a training sequence is in the history, so no position gets its own positive), or
    to the positive's embedding (`query='target'`), never in the user's training history and never
    the positive itself. n negatives are drawn uniformly without replacement from
    the `pool_size` nearest (pool_size <= n: exactly the n nearest), which softens false negatives.

    The index is built over the bound item embeddings: a callable (the model's live table, re-read
    every `refresh_every` calls of `sample`, i.e. training steps, counted from each epoch start,
    see set_epoch) or a fixed matrix (content embeddings, built once). Index kind/metric come from
    gin bindings of ItemIndex.
    `embeddings='content'` mines in the content-embedding space of the semantic-ID stage instead
    of the model's: the sampler then keeps the fixed matrix the training script binds
    (`wants_content_embeddings`) and ignores the trainer's live table; it needs query='target'
    (sequence states live in the model's space).

    With query='target' the queries are the indexed vectors themselves, so between two refreshes
    the same target always has the same nearest items: they are searched once per index build for
    every item (enough of them to survive any user's history), and each step only looks them up and
    drops the user's history. Per step that replaces a P-query search by a table lookup.
    """

    MAX_CANDIDATE_ENTRIES = 50_000_000     # items x width above which target mode searches per step
    HISTORY_COLUMNS = 64                   # target mode: table columns kept for a user's history;
                                           # rows of longer histories (3% of Beauty's) search per step

    QUERIES = ("state", "sequence", "target")

    def __init__(self, split: SplitData, seed: int = 0, query: str = "state", pool_size: int = 0,
                 refresh_every: int = 100, embeddings: str = "model"):
        if query not in self.QUERIES:
            raise RecError(f"HardNegativeSampler.query={query!r} is unknown; use 'state', 'sequence' "
                           "or 'target'")
        if embeddings not in ("model", "content"):
            raise RecError(f"HardNegativeSampler.embeddings={embeddings!r} is unknown; use 'model' or "
                           "'content'")
        if embeddings == "content" and query != "target":
            raise RecError("HardNegativeSampler.embeddings='content' needs query='target': sequence "
                           "states are not in the content-embedding space")
        self.embeddings = embeddings
        if refresh_every < 1:
            raise RecError(f"HardNegativeSampler.refresh_every={refresh_every} must be >= 1")
        self.num_items, self.query, self.pool_size = split.num_items, query, pool_size
        self.refresh_every = refresh_every
        self.keys = history_keys(split)
        # Distinct history items per user: bounds what a row excludes, so one search fetches enough.
        self.history_size = np.bincount(self.keys // (split.num_items + 1), minlength=split.num_users)
        self.rng = np.random.default_rng(seed)
        self.source: Callable[[], Any] | None = None
        self.static = False
        self.index: ItemIndex | None = None
        self.calls = 0
        self.refreshes = 0
        self.candidates: np.ndarray | None = None   # target mode: (N+1, width) per index build

    def bind_item_embeddings(self, source: Any) -> None:
        """A callable returning the current (N+1, d) item table, or a fixed (N+1, d)/(N, d) matrix."""
        if self.embeddings == "content" and callable(source):
            return                           # mines in content space: keep the bound matrix
        self.static = not callable(source)
        self.source = source
        self.index = None

    def _maybe_refresh(self) -> None:
        if self.source is None:
            raise RecError("HardNegativeSampler has no item embeddings: the trainer must call "
                           "sampler.bind_item_embeddings(lambda: model.item_emb.weight) (or bind a "
                           "content-embedding matrix) before sampling")
        stale = self.index is None or (not self.static and self.calls % self.refresh_every == 0)
        if stale:
            emb = self.source() if not self.static else self.source
            if self.index is None:
                self.index = ItemIndex(emb, num_items=self.num_items)
            else:
                self.index.refresh(emb)
            self.refreshes += 1
            self.candidates = None

    def sample(self, users, positives, n, hidden=None) -> np.ndarray:
        self._maybe_refresh()
        self.calls += 1
        users = np.asarray(users, dtype=np.int64)
        positives = np.asarray(positives, dtype=np.int64)
        if self.query != "target":
            if hidden is None:
                raise RecError(f"HardNegativeSampler.query={self.query!r} needs the sequence states: "
                               "the trainer must pass hidden=(P, d) to sample(), or use "
                               "query='target'")
            queries = hidden
        else:
            queries = self.index.item_vectors(positives)                  # (P, d)
        pool = max(n, self.pool_size)

        history = BatchHistory(self.keys, users, self.num_items)

        def excluded(rows, ids):
            return history.contains(rows, ids) | (ids == positives[rows][:, None])

        bound = int(self.history_size[users].max(initial=0)) + 1         # history + the positive
        width = min(self.num_items,
                    pool + min(int(self.history_size.max(initial=0)), self.HISTORY_COLUMNS) + 1)
        if self.query == "target" and width * (self.num_items + 1) <= self.MAX_CANDIDATE_ENTRIES:
            ids = self._from_candidates(users, positives, pool, width, excluded)
        elif self.query == "sequence":
            # The last position of each user's rows holds the sequence's latest state.
            # Distinct users in sorted order, as BatchHistory numbers them (history.row).
            last = len(users) - 1 - np.unique(users[::-1], return_index=True)[1]
            ids = self.index.search(queries[last], pool, exclude=lambda rows, got: excluded(
                last[rows], got), max_excluded=bound).ids[history.row]
        else:
            ids = self.index.search(queries, pool, exclude=excluded, max_excluded=bound).ids
        # ids: (P, pool), 0 = none
        # n of the pool, uniformly without replacement: the n largest of random keys; empty slots
        # (tiny catalogues) get key -1 so they are taken last.
        keys = np.where(ids > 0, self.rng.random(ids.shape), -1.0)
        pick = np.argpartition(-keys, n - 1, axis=1)[:, :n]                # n <= pool columns
        out = np.take_along_axis(ids, pick, axis=1)
        if (out == 0).any():
            raise RecError(f"HardNegativeSampler found fewer than n={n} items outside a user's "
                           "history; lower the number of negatives")
        return out

    def _from_candidates(self, users, positives, pool, width, excluded) -> np.ndarray:
        """(P, pool): the pool nearest allowed items of each positive, read from the per-item
        candidate table of `width` columns (the nearest items in rank order): the first `pool`
        that survive the exclusions are exactly the pool nearest allowed ones. A row where fewer
        survive (a history of more than width - pool - 1 items crowding the target's
        neighbourhood) is searched."""
        if self.candidates is None or self.candidates.shape[1] < width:
            table = np.zeros((self.num_items + 1, width), dtype=np.int64)
            for start in range(1, self.num_items + 1, 4096):             # chunks bound memory
                items = np.arange(start, min(start + 4096, self.num_items + 1))
                table[items] = self.index.search(self.index.vectors[items - 1], width).ids
            self.candidates = table
        hist = self.history_size[users]
        used = min(width, pool + int(hist.max(initial=0)) + 1)          # enough for most rows
        cand = self.candidates[positives, :used]                          # (P, used)
        keep = (cand > 0) & ~excluded(np.arange(len(positives)), cand)
        # As ItemIndex.search compacts: the first `pool` survivors, in rank order, then zeros.
        rank = np.cumsum(keep, axis=1) - 1
        long_rows = np.flatnonzero(rank[:, -1] + 1 < pool)               # too few survivors
        keep &= rank < pool
        r, c = np.nonzero(keep)
        ids = np.zeros((len(positives), pool), dtype=np.int64)
        ids[r, rank[r, c]] = cand[r, c]
        if long_rows.size:
            ids[long_rows] = self.index.search(
                self.index.item_vectors(positives[long_rows]), pool,
                exclude=lambda rows, got: excluded(long_rows[rows], got),
                max_excluded=int(hist[long_rows].max()) + 1).ids
        return ids

    def set_epoch(self, epoch: int) -> None:
        """Rebuild the index from the live table at the next call and count the refresh period
        from there: refreshes fall at steps 0, R, 2R, ... of every epoch. The trainer calls this at
        every epoch start, and checkpoints fall at epoch ends, so a resumed run (whose index is
        rebuilt from the restored weights) uses the same index as an unbroken one: resume stays
        exact, at no extra build per epoch."""
        if not self.static:
            self.index = None
            self.calls = 0

    def log_q(self):
        return None                          # the hard distribution has no fixed q

    def state(self) -> dict:
        # RNG + counters; the index is rebuilt after a resume (and at every epoch start, see set_epoch).
        return {"bit_generator": self.rng.bit_generator.state, "calls": self.calls}

    def load_state(self, state: dict) -> None:
        self.rng.bit_generator.state = state["bit_generator"]
        self.calls = int(state["calls"])
        self.index = None
