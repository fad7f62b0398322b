"""One evaluator for every model (docs/protocol.md §3)."""
from retrieval.evaluation.evaluator import EvalResult, Evaluator
from retrieval.evaluation.metrics import (DEFAULT_KS, MISS, metrics_from_ranks, per_user_auc,
                                          per_user_metric)

__all__ = ["DEFAULT_KS", "EvalResult", "Evaluator", "MISS", "metrics_from_ranks", "per_user_auc",
           "per_user_metric"]
