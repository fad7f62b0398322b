"""Paired significance tests on per-user metrics (docs/protocol.md §3), exact values on hand-made ranks."""
import math

import numpy as np
import pytest

from retrieval.core.errors import RecError
from retrieval.evaluation import MISS, EvalResult
from retrieval.evaluation.significance import compare, paired_metric, paired_test


def result(ranks, users=None, stage="test", exclude=True, protocol="full"):
    ranks = np.array(ranks, dtype=np.int64)
    users = np.arange(len(ranks)) if users is None else np.array(users)
    return EvalResult(stage, {}, {protocol: ranks}, users, exclude)


def test_paired_t_exact_value():
    # hr@1 per user: a = [1, 1, 0, 0], b = [0, 1, 0, 0]; differences [1, 0, 0, 0]
    # mean 0.25, sd 0.5, t = 0.25 / (0.5 / 2) = 1 with 3 degrees of freedom
    a, b = result([0, 0, MISS, 3]), result([MISS, 0, MISS, 1])
    r = paired_test(a, b, "hr@1", test="paired-t")
    assert (r.n, r.n_nonzero) == (4, 1)
    assert (r.mean_a, r.mean_b, r.mean_diff) == (0.5, 0.25, 0.25)
    assert r.statistic == pytest.approx(1.0, abs=1e-12)
    x = 1 / math.sqrt(3)                     # Student t cdf, 3 dof, closed form at t = 1
    cdf = 0.5 + (x / (1 + x * x) + math.atan(x)) / math.pi
    assert r.p_value == pytest.approx(2 * (1 - cdf), abs=1e-12)


def test_wilcoxon_exact_value_and_zero_differences_dropped():
    # mrr: a always rank 0 (1.0); b ranks 1..5 -> five positive distinct differences, and three
    # users where both miss (difference 0, dropped). Exact null: P(W- = 0) = 1/32, two-sided 2/32.
    a = result([0, 0, 0, 0, 0, MISS, MISS, MISS])
    b = result([1, 2, 3, 4, 5, MISS, MISS, MISS])
    r = paired_test(a, b, "mrr", test="wilcoxon")
    assert (r.n, r.n_nonzero) == (8, 5)
    assert r.statistic == 0.0
    assert r.p_value == pytest.approx(2 / 32, abs=1e-12)
    assert r.mean_diff == pytest.approx(sum(1 - 1 / (k + 1) for k in range(1, 6)) / 8, abs=1e-15)


def test_identical_models_are_indistinguishable():
    a = result([0, 4, MISS, 2])
    for test in ("paired-t", "wilcoxon"):
        r = paired_test(a, result([0, 4, MISS, 2]), "ndcg@10", test=test)
        assert (r.statistic, r.p_value, r.mean_diff, r.n_nonzero) == (0.0, 1.0, 0.0, 0)


def test_users_are_aligned_by_id_not_by_position():
    a = result([0, 5, MISS], users=[10, 11, 12])
    b_same_order = result([1, 5, 0], users=[10, 11, 12])
    b_shuffled = result([0, 1, 5], users=[12, 10, 11])
    xa, xb = paired_metric(a, b_shuffled, "mrr")
    assert xb.tolist() == paired_metric(a, b_same_order, "mrr")[1].tolist()
    assert paired_test(a, b_shuffled, "mrr") == paired_test(a, b_same_order, "mrr")


def test_compare_runs_both_tests_on_the_sampled_protocol():
    a = result([0, 1, 2, 3], protocol="sampled-100")
    b = result([3, 2, 1, 9], protocol="sampled-100")
    out = compare(a, b, "ndcg@5", protocol="sampled-100")
    assert set(out) == {"paired-t", "wilcoxon"}
    assert all(r.protocol == "sampled-100" and r.n == 4 for r in out.values())
    assert out["paired-t"].to_json()["test"] == "paired-t"


@pytest.mark.parametrize("b, kwargs, message", [
    (result([0, 1], users=[0, 2]), {}, "different users"),
    (result([0, 1], stage="valid"), {}, "'valid'"),
    (result([0, 1], exclude=False), {}, "exclude_history"),
    (result([0, 1]), {"protocol": "sampled-100"}, "no 'sampled-100' ranks"),
    (result([0, 1]), {"metric": "auc"}, "unknown metric 'auc'"),
    (result([0, 1]), {"test": "sign"}, "unknown test 'sign'"),
])
def test_mismatched_or_unknown_inputs_are_clear_errors(b, kwargs, message):
    with pytest.raises(RecError, match=message):
        paired_test(result([1, 0]), b, **kwargs)


def test_one_user_is_too_few():
    with pytest.raises(RecError, match="at least 2 users"):
        paired_test(result([0]), result([1]))
