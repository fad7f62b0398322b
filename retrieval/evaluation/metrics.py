"""Ranking metrics from 0-based pessimistic ranks (SPEC §3).

rank = number of other candidates scoring >= the target; a miss (target not ranked at all, e.g. past
the beam of a generator) is MISS. HR@K = [rank < K], NDCG@K = 1/log2(rank+2) if rank < K,
MRR@K = 1/(rank+1) if rank < K, MRR = 1/(rank+1) (0 for a miss).
"""
from __future__ import annotations

import numpy as np

MISS = np.iinfo(np.int64).max // 2
DEFAULT_KS = (5, 10, 20, 50)


def per_user_metric(ranks: np.ndarray, name: str) -> np.ndarray:
    """Per-user values of metric `name` ("hr@10", "ndcg@10", "mrr@10", "mrr")."""
    ranks = np.asarray(ranks, dtype=np.int64)
    hit_any = ranks < MISS
    if name == "mrr":
        return np.where(hit_any, 1.0 / (np.minimum(ranks, MISS - 1) + 1.0), 0.0)
    kind, _, k = name.partition("@")
    k = int(k)
    hit = ranks < k
    r = np.minimum(ranks, k).astype(np.float64)
    if kind in ("hr", "recall"):
        return hit.astype(np.float64)
    if kind == "ndcg":
        return np.where(hit, 1.0 / np.log2(r + 2.0), 0.0)
    if kind == "mrr":
        return np.where(hit, 1.0 / (r + 1.0), 0.0)
    raise ValueError(f"unknown metric {name!r}")


def metric_names(ks=DEFAULT_KS, full_mrr: bool = True) -> list[str]:
    names = [f"{m}@{k}" for k in ks for m in ("hr", "ndcg", "mrr")]
    return names + (["mrr"] if full_mrr else [])


def metrics_from_ranks(ranks: np.ndarray, ks=DEFAULT_KS, full_mrr: bool = True) -> dict[str, float]:
    return {n: float(per_user_metric(ranks, n).mean()) if len(ranks) else 0.0
            for n in metric_names(ks, full_mrr)}
