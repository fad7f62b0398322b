"""The two model interfaces the one evaluator accepts (after RecBole's single model API).

A Scorer scores every item for each history; a Generator returns a ranked list of items. The
evaluator never learns a model's name.
"""
from __future__ import annotations

from typing import Protocol, runtime_checkable

import torch

from retrieval.data.batch import HistoryBatch


@runtime_checkable
class Scorer(Protocol):
    def score_all(self, batch: HistoryBatch) -> torch.Tensor:
        """Scores (B, N+1) for item ids 0..N (column 0 is padding and is ignored)."""
        ...


@runtime_checkable
class Generator(Protocol):
    def generate(self, batch: HistoryBatch, num_items: int) -> torch.Tensor:
        """Ranked item ids (B, num_items), best first, distinct per row; 0 fills unused slots."""
        ...
