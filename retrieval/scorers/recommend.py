"""A finished scorer run as a ranker: its top-K for one history, shown beside a generator's
recommendations (scripts/recommend.py --scorer_run; onerec.recommend.Recommender's `beside`).

    scorer = ScorerRun("runs/beauty-sasrec")    # a --run_dir of scripts/train_sasrec.py
    Recommender("runs/beauty-onerec", beside=[scorer])

Importing this module registers every configurable a scorer run's config.gin binds.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

import retrieval.negatives  # noqa: F401  (registers every negative sampler)
import retrieval.scorers.losses  # noqa: F401  (registers ScorerLoss)
import retrieval.scorers.trainer  # noqa: F401  (registers ScorerTrainer)
from retrieval.core.checkpoints import BEST, load_checkpoint
from retrieval.core.errors import RecError
from retrieval.core.io import read_json
from retrieval.data.batch import HistoryBatch
from retrieval.data.types import SplitData
from retrieval.scorers.registry import make_scorer


class ScorerRun:
    """The best checkpoint of a scorer run (SASRec, GRU4Rec, BERT4Rec), listed as "scorer"."""

    name = "scorer"
    trained_by = "scripts/train_sasrec.py"

    def __init__(self, run_dir):
        self.run_dir = Path(run_dir)
        self.model = None
        self.num_items = 0

    def load(self, split: SplitData) -> None:
        """Build the gin-bound scorer for `split` and load its best checkpoint; a run trained on
        another split is refused."""
        fp = read_json(self.run_dir / "results.json").get("dataset", {}).get("fingerprint")
        if fp != split.fingerprint:
            raise RecError(f"{self.run_dir} was trained on another dataset split "
                           f"({fp} != {split.fingerprint}); use runs on the same data")
        self.model = make_scorer(num_items=split.num_items)
        load_checkpoint(self.run_dir / BEST, self.model, restore_rng=False)
        self.model.eval()
        self.num_items = split.num_items

    @torch.no_grad()
    def top_k(self, batch: HistoryBatch, exclude: torch.Tensor | None, k: int
              ) -> tuple[np.ndarray, np.ndarray]:
        """(items (k',), scores (k',)) best first, k' = min(k, N); never item 0 nor `exclude`."""
        scores = self.model.score_all(batch)[0].float()                 # (N+1,)
        scores[0] = -torch.inf
        if exclude is not None:
            scores[exclude] = -torch.inf
        top = torch.topk(scores, min(k, self.num_items))
        return top.indices.numpy(), top.values.numpy()
