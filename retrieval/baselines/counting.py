"""Non-learned baselines that exercise the evaluator on real data: most-popular and item-to-item
co-occurrence (last item -> next item). Both are Scorers (score_all(HistoryBatch) -> (B, N+1)).
`evaluate_baseline` fits and evaluates them (scripts/evaluate_baseline.py calls it).

Both are fitted on the *training sequences only* and the same fitted model serves the validation
and the test stage. For the test stage the input history ends with the validation item, which the
model reads as the "last item" but never counted in its statistics: no target and no
validation-to-test transition leaks into the fit, and valid and test numbers come from one model.
"""
from __future__ import annotations

from pathlib import Path

import gin
import numpy as np
import scipy.sparse as sp
import torch

from retrieval.data.batch import HistoryBatch
from retrieval.data import load_split
from retrieval.data.types import SplitData
from retrieval.core.errors import RecError
from retrieval.evaluation import Evaluator
from retrieval.evaluation.report import format_table, results_json, save_ranks, write_results


def item_counts(split: SplitData) -> np.ndarray:
    """(N+1,) int64 number of training events per item (index 0, padding, is 0)."""
    return np.bincount(split.train_items, minlength=split.num_items + 1).astype(np.int64)


def transition_counts(split: SplitData) -> sp.csr_matrix:
    """(N+1, N+1) sparse counts C[a, b] = #times item b directly follows item a in a training
    sequence (pairs never cross users)."""
    N = split.num_items
    items = split.train_items
    same_user = np.ones(max(len(items) - 1, 0), dtype=bool)
    ends = split.train_offsets[1:-1]                   # a user's first event is not a successor
    same_user[ends[(ends > 0) & (ends < len(items))] - 1] = False
    src, dst = items[:-1][same_user], items[1:][same_user]
    c = sp.coo_matrix((np.ones(len(src), dtype=np.float64), (src, dst)), shape=(N + 1, N + 1))
    return c.tocsr()                                   # duplicates summed


class _Fitted:
    """Raises a clear error when a baseline is used before `fit`."""

    _fitted = False

    def _check(self) -> None:
        if not self._fitted:
            raise RecError(f"{type(self).__name__} is not fitted; call .fit(split) first")


@gin.configurable
class MostPopular(_Fitted):
    """Score = number of training events of the item; the same ranking for every user."""

    def fit(self, split: SplitData) -> "MostPopular":
        self.popularity = torch.from_numpy(item_counts(split).astype(np.float64))   # (N+1,)
        self._fitted = True
        return self

    def score_all(self, batch: HistoryBatch) -> torch.Tensor:
        self._check()
        return self.popularity.expand(len(batch.users), -1)                         # (B, N+1) view


@gin.configurable
class ItemCooccurrence(_Fitted):
    """Score of item b = C[last history item, b] + epsilon * popularity(b) / (max popularity + 1).

    C are last-item -> next-item transition counts from the training sequences. With
    0 < epsilon <= 1 the popularity term is below 1, the smallest count difference, so it only
    orders items with equal counts (ties, and every item when the last item has no recorded
    successor) by popularity. Scores are float64 so the tiny term survives on large counts.
    """

    def __init__(self, epsilon: float = 1e-3):
        if not 0 < epsilon <= 1:
            raise RecError(f"ItemCooccurrence.epsilon={epsilon}: must be in (0, 1] so popularity "
                           "only breaks ties between equal transition counts")
        self.epsilon = float(epsilon)

    def fit(self, split: SplitData) -> "ItemCooccurrence":
        self.transitions = transition_counts(split)
        pop = item_counts(split).astype(np.float64)
        self.backoff = torch.from_numpy(self.epsilon * pop / (pop.max() + 1.0))       # (N+1,)
        self._fitted = True
        return self

    def score_all(self, batch: HistoryBatch) -> torch.Tensor:
        self._check()
        last = batch.items[:, -1].cpu().numpy()            # right-aligned: most recent item; 0 if empty
        counts = torch.from_numpy(self.transitions[last].toarray())                  # (B, N+1)
        return counts.add_(self.backoff)


BASELINES = ("popularity", "cooccurrence", "semantic_knn")


def make_baseline(name: str, content_embeddings=None):
    """A baseline by its name in `BASELINES` (constructed through gin); 'semantic_knn' needs
    `content_embeddings`, a callable giving the (N, d) item embeddings (called only for it)."""
    if name == "popularity":
        return MostPopular()
    if name == "cooccurrence":
        return ItemCooccurrence()
    if name == "semantic_knn":
        from retrieval.baselines.semantic_knn import SemanticKNN
        if content_embeddings is None:
            raise RecError("the semantic_knn baseline needs the items' content embeddings; run it "
                           "through scripts/evaluate_baseline.py")
        return SemanticKNN().bind(content_embeddings())
    raise RecError(f"unknown baseline {name!r}; choose one of: {', '.join(BASELINES)}")


@gin.configurable
def evaluate_baseline(run_dir: Path, model=("popularity", "cooccurrence"),
                      content_embeddings=None) -> dict:
    """Fit each baseline in `model` (a name or a list of names) on the training sequences of the
    gin-selected split, evaluate it on valid and test with the gin-configured Evaluator, print a
    table and write run_dir/results.json (the first model fills the top-level "valid"/"test") and
    run_dir/ranks.safetensors. Returns the results.json record. content_embeddings: a function
    split -> (N, d) item embeddings, for 'semantic_knn' (the script passes stage 1's)."""
    names = [model] if isinstance(model, str) else list(model)
    if not names:
        raise RecError("evaluate_baseline.model is empty; name one or more of: " + ", ".join(BASELINES))
    for n in names:
        if n not in BASELINES:
            raise RecError(f"evaluate_baseline.model: unknown baseline {n!r}; "
                           f"choose from: {', '.join(BASELINES)}")
    split = load_split()
    evaluator = Evaluator()
    results = {}
    for n in names:
        embed = (lambda: content_embeddings(split)) if content_embeddings is not None else None
        scorer = make_baseline(n, embed).fit(split)
        results[n] = {st: evaluator.evaluate(scorer, split, st) for st in ("valid", "test")}
    print(f"dataset {split.name} ({split.fingerprint}): {split.num_users:,} users, "
          f"{split.num_items:,} items; exclude_history={evaluator.exclude_history}")
    print(format_table(results))
    record = results_json(results, evaluator.protocol(), split)
    write_results(run_dir, record)
    save_ranks(Path(run_dir) / "ranks.safetensors", results)
    return record
