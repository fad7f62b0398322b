"""Ranking metrics from pessimistic 0-based ranks (docs/protocol.md §3): exact values and properties."""
import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from retrieval.evaluation.metrics import MISS, metric_names, metrics_from_ranks, per_user_metric

RANKS = np.array([0, 1, 4, 9, MISS])


def test_hit_rate_counts_ranks_below_k():
    assert per_user_metric(RANKS, "hr@5").tolist() == [1, 1, 1, 0, 0]
    assert per_user_metric(RANKS, "hr@10").tolist() == [1, 1, 1, 1, 0]
    assert per_user_metric(RANKS, "hr@1").tolist() == [1, 0, 0, 0, 0]


def test_recall_is_hit_rate_with_one_target():
    assert per_user_metric(RANKS, "recall@5").tolist() == per_user_metric(RANKS, "hr@5").tolist()


def test_ndcg_is_inverse_log2_of_rank_plus_two():
    got = per_user_metric(RANKS, "ndcg@5")
    assert got == pytest.approx([1.0, 1 / math.log2(3), 1 / math.log2(6), 0.0, 0.0], abs=1e-15)
    assert per_user_metric(RANKS, "ndcg@10")[3] == pytest.approx(1 / math.log2(11), abs=1e-15)


def test_mrr_at_k_and_full_mrr():
    assert per_user_metric(RANKS, "mrr@5") == pytest.approx([1.0, 0.5, 0.2, 0.0, 0.0], abs=1e-15)
    assert per_user_metric(RANKS, "mrr") == pytest.approx([1.0, 0.5, 0.2, 0.1, 0.0], abs=1e-15)


def test_a_miss_scores_zero_at_any_cutoff():
    for name in ("hr@1000000", "ndcg@1000000", "mrr@1000000", "mrr"):
        assert per_user_metric(np.array([MISS]), name).tolist() == [0.0]


def test_means_over_users_exact():
    m = metrics_from_ranks(np.array([0, 2, 7]), ks=(5,))
    assert m["hr@5"] == pytest.approx(2 / 3, abs=1e-15)
    assert m["ndcg@5"] == pytest.approx((1 + 0.5 + 0) / 3, abs=1e-15)    # 1/log2(4) = 0.5
    assert m["mrr@5"] == pytest.approx((1 + 1 / 3) / 3, abs=1e-15)
    assert m["mrr"] == pytest.approx((1 + 1 / 3 + 1 / 8) / 3, abs=1e-15)


def test_metric_names_and_full_mrr_switch():
    assert metric_names((5, 10)) == ["hr@5", "ndcg@5", "mrr@5", "hr@10", "ndcg@10", "mrr@10", "mrr"]
    assert "mrr" not in metrics_from_ranks(np.array([0]), (5,), full_mrr=False)


def test_no_users_gives_zeros():
    assert set(metrics_from_ranks(np.array([], dtype=np.int64), (5,)).values()) == {0.0}


def test_unknown_metric_is_rejected():
    with pytest.raises(ValueError, match="map@5"):
        per_user_metric(RANKS, "map@5")


rank_lists = st.lists(st.one_of(st.integers(0, 200), st.just(MISS)), min_size=1, max_size=50)


@settings(max_examples=200, deadline=None)
@given(rank_lists)
def test_metrics_are_in_unit_interval_and_monotone_in_k(ranks):
    ranks = np.array(ranks, dtype=np.int64)
    ks = (1, 5, 10, 20, 50, 100, 500)
    m = metrics_from_ranks(ranks, ks)
    assert all(0.0 <= v <= 1.0 for v in m.values())
    for kind in ("hr", "ndcg", "mrr"):
        vals = [m[f"{kind}@{k}"] for k in ks]
        assert vals == sorted(vals)
    # at every cut-off: mrr@K <= ndcg@K <= hr@K (1/(r+1) <= 1/log2(r+2) <= 1)
    for k in ks:
        assert m[f"mrr@{k}"] <= m[f"ndcg@{k}"] + 1e-12 <= m[f"hr@{k}"] + 2e-12
    assert m["mrr"] >= m["mrr@500"]
