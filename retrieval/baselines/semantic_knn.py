"""Semantic-KNN, the content baseline of the cold-start protocol (docs/protocol.md §2.7): the
catalogue items whose text embeddings are nearest (cosine) to the mean embedding of the user's
`recent` latest items. It needs no training interaction of an item, so it ranks new items like any
other; a generator has to beat it on them.
"""
from __future__ import annotations

import gin
import numpy as np
import torch
import torch.nn.functional as F

from retrieval.baselines.counting import _Fitted
from retrieval.core.errors import RecError
from retrieval.data.batch import HistoryBatch
from retrieval.data.types import SplitData


@gin.configurable
class SemanticKNN(_Fitted):
    """score(i) = cos(e_i, mean of the e of the history's last `recent` items); e: content
    embeddings (N, d), row i-1 = item i, bound with `bind` before `fit`."""

    def __init__(self, recent: int = 3):
        if isinstance(recent, bool) or not isinstance(recent, int) or recent < 1:
            raise RecError(f"SemanticKNN.recent = {recent!r} must be an integer >= 1")
        self.recent, self.vectors = recent, None

    def bind(self, vectors: np.ndarray) -> "SemanticKNN":
        self.vectors = np.asarray(vectors, dtype=np.float32)
        return self

    def fit(self, split: SplitData) -> "SemanticKNN":
        if self.vectors is None or self.vectors.shape[0] != split.num_items:
            raise RecError(f"SemanticKNN needs the content embeddings of the {split.num_items} items of "
                           f"{split.name!r} (evaluate_baseline binds them)")
        e = F.normalize(torch.from_numpy(self.vectors), dim=-1)
        self.table = torch.cat([torch.zeros(1, e.shape[1]), e])          # (N+1, d); row 0: padding
        self._fitted = True
        return self

    def score_all(self, batch: HistoryBatch) -> torch.Tensor:
        self._check()
        items = batch.items[:, -self.recent:]                              # right-aligned: the latest
        q = self.table[items].sum(1) / (items > 0).sum(1, keepdim=True).clamp(min=1)
        return F.normalize(q, dim=-1) @ self.table.T                       # (B, N+1)
