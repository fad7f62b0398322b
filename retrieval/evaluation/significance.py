"""Paired significance tests between two models on the same users (docs/protocol.md §3).

Both EvalResults must come from the same stage, protocol and `exclude_history` setting, over the
same set of users; the per-user metric (e.g. ndcg@10) is recomputed from the kept ranks and the
two arrays are paired user by user. Differences are a - b.

- paired t-test (scipy.stats.ttest_rel), two-sided;
- Wilcoxon signed-rank (scipy.stats.wilcoxon), two-sided, zero differences dropped ("wilcox").
  In ranking metrics most users often tie (both miss); `n_nonzero` says how many pairs it used.

When every difference is exactly zero the two models are indistinguishable on these users: the
statistic is 0 and the p-value 1 (scipy would return NaN for the t-test).
"""
from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np
from scipy import stats

from retrieval.core.errors import RecError
from retrieval.evaluation.evaluator import FULL, EvalResult
from retrieval.evaluation.metrics import per_user_metric

TESTS = ("paired-t", "wilcoxon")


@dataclass(frozen=True)
class PairedTest:
    """Outcome of one paired test of model a against model b (differences are a - b)."""

    test: str
    metric: str
    protocol: str
    stage: str
    n: int            # paired users
    n_nonzero: int    # users whose metric differs between a and b
    mean_a: float
    mean_b: float
    mean_diff: float
    statistic: float
    p_value: float

    def to_json(self) -> dict:
        return asdict(self)


def paired_metric(a: EvalResult, b: EvalResult, metric: str = "ndcg@10",
                  protocol: str = FULL) -> tuple[np.ndarray, np.ndarray]:
    """Per-user `metric` of a and b, aligned on user rows: two (n,) float64 arrays."""
    if a.stage != b.stage:
        raise RecError(f"cannot pair a {a.stage!r} result with a {b.stage!r} result; "
                       "compare two models on the same stage")
    if a.exclude_history != b.exclude_history:
        raise RecError("cannot pair results with different exclude_history settings "
                       f"({a.exclude_history} vs {b.exclude_history}); evaluate both the same way")
    for name, r in (("a", a), ("b", b)):
        if protocol not in r.ranks:
            raise RecError(f"result {name} has no {protocol!r} ranks (it has: "
                           f"{', '.join(sorted(r.ranks))}); choose a protocol both results have")
    ua, ub = np.asarray(a.users), np.asarray(b.users)
    ra, rb = np.asarray(a.ranks[protocol]), np.asarray(b.ranks[protocol])
    if not np.array_equal(ua, ub):
        if len(np.unique(ua)) != len(ua) or not np.array_equal(np.sort(ua), np.sort(ub)):
            raise RecError("the two results were evaluated on different users; evaluate both "
                           "models on the same users before a paired test")
        oa, ob = np.argsort(ua, kind="stable"), np.argsort(ub, kind="stable")
        ra, rb = ra[oa], rb[ob]
    try:
        return per_user_metric(ra, metric), per_user_metric(rb, metric)
    except ValueError:
        raise RecError(f"unknown metric {metric!r}; use hr@K, ndcg@K, mrr@K or mrr") from None


def paired_test(a: EvalResult, b: EvalResult, metric: str = "ndcg@10", protocol: str = FULL,
                test: str = "paired-t") -> PairedTest:
    """Paired test of a against b on the per-user `metric` (`test`: "paired-t" or "wilcoxon")."""
    if test not in TESTS:
        raise RecError(f"unknown test {test!r}; choose one of: {', '.join(TESTS)}")
    xa, xb = paired_metric(a, b, metric, protocol)
    n = len(xa)
    if n < 2:
        raise RecError(f"a paired test needs at least 2 users, got {n}")
    diff = xa - xb
    nonzero = int(np.count_nonzero(diff))
    if nonzero == 0:
        statistic, p = 0.0, 1.0
    elif test == "paired-t":
        res = stats.ttest_rel(xa, xb)
        statistic, p = float(res.statistic), float(res.pvalue)
    else:
        res = stats.wilcoxon(xa, xb, zero_method="wilcox", alternative="two-sided")
        statistic, p = float(res.statistic), float(res.pvalue)
    return PairedTest(test=test, metric=metric, protocol=protocol, stage=a.stage, n=n,
                      n_nonzero=nonzero, mean_a=float(xa.mean()), mean_b=float(xb.mean()),
                      mean_diff=float(diff.mean()), statistic=statistic, p_value=p)


def compare(a: EvalResult, b: EvalResult, metric: str = "ndcg@10",
            protocol: str = FULL) -> dict[str, PairedTest]:
    """Both tests at once: {"paired-t": ..., "wilcoxon": ...}."""
    return {t: paired_test(a, b, metric, protocol, t) for t in TESTS}
