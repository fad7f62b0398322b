"""Fixed-output models for the evaluator tests: a score table and ranked lists, row = user."""
from __future__ import annotations

import numpy as np
import torch

from retrieval.data.batch import HistoryBatch


class TableScorer:
    """Scores from a fixed (U, N+1) table, row = user; remembers the batches it was shown."""

    def __init__(self, table):
        self.table = torch.as_tensor(np.asarray(table, dtype=np.float64))
        self.batches = []

    def score_all(self, batch: HistoryBatch) -> torch.Tensor:
        self.batches.append(batch)
        return self.table[batch.users]


class ListGenerator:
    """Returns fixed ranked lists (row = user), right-padded with 0 to the requested length."""

    def __init__(self, lists):
        self.lists = lists

    def generate(self, batch: HistoryBatch, num_items: int) -> torch.Tensor:
        out = torch.zeros(len(batch.users), num_items, dtype=torch.long)
        for b, u in enumerate(batch.users.tolist()):
            row = self.lists[u][:num_items]
            out[b, :len(row)] = torch.tensor(row, dtype=torch.long)
        return out
