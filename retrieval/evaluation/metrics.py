"""Ranking metrics from 0-based pessimistic ranks (docs/protocol.md §3).

rank = number of other candidates scoring >= the target; a miss (target not ranked at all, e.g. past
the beam of a generator) is MISS. HR@K = [rank < K], NDCG@K = 1/log2(rank+2) if rank < K,
MRR@K = 1/(rank+1) if rank < K, MRR = 1/(rank+1) (0 for a miss).

AUC and GAUC need more than the rank: each user's number of candidates C (it differs per user when
history items are excluded) and, for a generator, how many candidates it ranked at all (see
`per_user_auc`). They are computed per protocol, so "full" AUC is full-ranking AUC over all of a
user's candidates and "sampled-100" AUC is over the target and its 100 sampled negatives.
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


def metric_names(ks=DEFAULT_KS, full_mrr: bool = True, auc: bool = False) -> list[str]:
    """hr/ndcg/mrr at each k, then the full MRR and (auc=True) the per-user AUC and GAUC."""
    names = [f"{m}@{k}" for k in ks for m in ("hr", "ndcg", "mrr")]
    return names + (["mrr"] if full_mrr else []) + (["auc", "gauc"] if auc else [])


def per_user_auc(ranks: np.ndarray, num_candidates: np.ndarray,
                 num_ranked: np.ndarray | None = None) -> np.ndarray:
    """Per-user AUC of the target against the user's other candidates, (U,) float64.

    AUC_u = 1 - r / (C_u - 1) with r the 0-based pessimistic rank and C_u the user's number of
    candidates, the target included; in 1-based ranks this is 1 - (rank - 1) / (N - 1). It equals
    the fraction of the other candidates scored strictly below the target: a tie counts against the
    target, as it does in the rank (so a constant scorer gets AUC 0, not 0.5). A user with no other
    candidate gets 1.

    Unranked targets (r = MISS: a generator returns only its beam, and the target was not in it):
    the target then lies somewhere in the tail of the C_u - R_u candidates the model did not rank
    (R_u = num_ranked, the valid items it did return, none of them the target). It is given the
    mean position of that tail, r = R_u + (C_u - 1 - R_u) / 2, i.e. the expected AUC when the
    unranked items are put in a random order. A beam of 50 items over 12k candidates therefore
    scores about 0.5 on a miss: AUC of a top-K generator mostly measures its hit rate, not an
    ordering of the tail that it never produced. num_ranked = None: every candidate was ranked
    (a scorer); a MISS is then impossible.
    """
    ranks = np.asarray(ranks, dtype=np.int64)
    cands = np.asarray(num_candidates, dtype=np.float64)
    miss = ranks >= MISS
    r = np.minimum(ranks, MISS - 1).astype(np.float64)
    if miss.any():
        if num_ranked is None:
            raise ValueError("a target is unranked (MISS) but num_ranked was not given")
        ranked = np.asarray(num_ranked, dtype=np.float64)
        r = np.where(miss, ranked + (cands - 1.0 - ranked) / 2.0, r)
    others = cands - 1.0
    return np.where(others > 0, 1.0 - r / np.maximum(others, 1.0), 1.0)


def metrics_from_ranks(ranks: np.ndarray, ks=DEFAULT_KS, full_mrr: bool = True,
                       num_candidates: np.ndarray | None = None, num_ranked: np.ndarray | None = None,
                       weights: np.ndarray | None = None) -> dict[str, float]:
    """Means over users of HR/NDCG/MRR@K (+ full MRR), and with `num_candidates` also "auc" (the
    plain mean of per_user_auc) and, with `weights` (e.g. each user's number of training
    interactions), "gauc": the same per-user AUCs averaged with those weights. GAUC differs from
    AUC only in this weighting: both are per-user (grouped) AUCs of one target against all of the
    user's candidates, since leave-one-out gives every user exactly one positive."""
    out = {n: float(per_user_metric(ranks, n).mean()) if len(ranks) else 0.0
           for n in metric_names(ks, full_mrr)}
    if num_candidates is not None:
        auc = per_user_auc(ranks, num_candidates, num_ranked)
        out["auc"] = float(auc.mean()) if len(auc) else 0.0
        if weights is not None:
            w = np.asarray(weights, dtype=np.float64)
            out["gauc"] = float((auc * w).sum() / w.sum()) if w.sum() > 0 else out["auc"]
    return out
