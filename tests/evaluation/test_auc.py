"""AUC and GAUC in the one evaluator: equal to a brute-force pairwise count on random scores (full
ranking with and without history exclusion, sampled-100), the documented value for a generator's
unranked target, GAUC's weighting, and the per-user counts saved beside the ranks."""
import numpy as np
import pytest

from retrieval.evaluation import MISS, Evaluator
from retrieval.evaluation.evaluator import FULL, SAMPLED, sample_negatives
from retrieval.evaluation.metrics import metrics_from_ranks, per_user_auc
from retrieval.evaluation.report import format_table, load_result, save_ranks

from fake_models import ListGenerator, TableScorer
from tiny_splits import make_split


def random_split(rng, users=40, items=30):
    train = [list(rng.integers(1, items + 1, size=rng.integers(1, 12))) for _ in range(users)]
    valid = rng.integers(1, items + 1, size=users)
    test = rng.integers(1, items + 1, size=users)
    return make_split(train, valid, test, items)


def brute_force_auc(split, table, stage, exclude_history):
    """Per user: the fraction of the other candidates whose score is strictly below the target's."""
    offsets, items, _ = split.histories(stage)
    out = []
    for u in range(split.num_users):
        t = split.targets(stage)[u]
        history = set(items[offsets[u]:offsets[u + 1]].tolist()) - {t} if exclude_history else set()
        others = [i for i in range(1, split.num_items + 1) if i != t and i not in history]
        out.append(np.mean([table[u, i] < table[u, t] for i in others]) if others else 1.0)
    return np.array(out)


@pytest.mark.parametrize("exclude_history", [True, False])
@pytest.mark.parametrize("stage", ["valid", "test"])
def test_full_ranking_auc_equals_pairwise_brute_force(exclude_history, stage):
    rng = np.random.default_rng(7)
    split = random_split(rng)
    table = rng.integers(0, 6, size=(split.num_users, split.num_items + 1)).astype(np.float64)  # ties
    res = Evaluator(ks=(5,), exclude_history=exclude_history, sampled=False, progress=False,
                    num_generated=5).evaluate(TableScorer(table), split, stage)
    want = brute_force_auc(split, table, stage, exclude_history)
    got = per_user_auc(res.ranks[FULL], res.candidates[FULL])
    assert np.allclose(got, want, atol=1e-12)
    assert res.metrics[FULL]["auc"] == pytest.approx(want.mean(), abs=1e-12)
    w = split.train_lengths
    assert res.metrics[FULL]["gauc"] == pytest.approx((want * w).sum() / w.sum(), abs=1e-12)


def test_sampled_auc_counts_the_sampled_negatives_below_the_target():
    rng = np.random.default_rng(3)
    split = random_split(rng, users=25, items=200)
    table = rng.normal(size=(split.num_users, split.num_items + 1))
    ev = Evaluator(ks=(5,), sampled=True, progress=False, num_generated=5)
    res = ev.evaluate(TableScorer(table), split, "test")
    negs = sample_negatives(split, np.arange(split.num_users), ev.num_sampled, ev.sample_seed)
    t = table[np.arange(split.num_users), split.test_item]
    want = (table[np.arange(split.num_users)[:, None], negs] < t[:, None]).mean(1)
    assert res.metrics[SAMPLED]["auc"] == pytest.approx(want.mean(), abs=1e-12)
    assert res.candidates[SAMPLED].tolist() == [ev.num_sampled + 1] * split.num_users


def test_auc_is_one_minus_normalised_one_based_rank_on_random_ranks():
    rng = np.random.default_rng(0)
    cands = rng.integers(2, 5000, size=1000)
    ranks = (rng.random(1000) * cands).astype(np.int64)                  # 0-based, < candidates
    rank1 = ranks + 1
    assert np.allclose(per_user_auc(ranks, cands), 1 - (rank1 - 1) / (cands - 1), atol=1e-15)
    # the same as a pairwise count: `ranks` others score >= the target, the rest below
    pairwise = np.array([np.mean(np.arange(c - 1) >= r) for r, c in zip(ranks, cands)])
    assert np.allclose(per_user_auc(ranks, cands), pairwise, atol=1e-12)


def test_first_and_last_rank_and_a_lone_candidate():
    assert per_user_auc(np.array([0, 9, 0]), np.array([10, 10, 1])).tolist() == [1.0, 0.0, 1.0]


def test_a_generators_unranked_target_gets_the_mean_rank_of_the_unranked_tail():
    # 1 user, 10 items, no history to exclude: candidates = 10.
    split = make_split([[1]], valid=[2], test=[3], num_items=10)
    ev = Evaluator(ks=(1, 3), exclude_history=False, sampled=False, progress=False, num_generated=3)
    hit = ev.evaluate(ListGenerator([[4, 2, 5]]), split, "valid")             # target 2 at rank 1
    assert hit.metrics[FULL]["auc"] == pytest.approx(1 - 1 / 9)
    miss = ev.evaluate(ListGenerator([[4, 5, 6]]), split, "valid")            # target 2 not returned
    assert miss.ranks[FULL].tolist() == [MISS] and miss.ranked[FULL].tolist() == [3]
    # brute force: the target is equally likely at each of the 7 unranked places (0-based 3..9)
    expected = np.mean([1 - p / 9 for p in range(3, 10)])
    assert miss.metrics[FULL]["auc"] == pytest.approx(expected, abs=1e-12)
    # invalid and repeated items are not "ranked": only the 2 distinct valid ones count
    short = ev.evaluate(ListGenerator([[4, 4, 0]]), split, "valid")
    assert short.ranked[FULL].tolist() == [1]
    assert short.metrics[FULL]["auc"] == pytest.approx(np.mean([1 - p / 9 for p in range(1, 10)]))


def test_gauc_weights_each_users_auc_by_training_interactions():
    ranks, cands, weights = np.array([0, 4]), np.array([5, 5]), np.array([3, 1])   # AUC 1 and 0
    m = metrics_from_ranks(ranks, (5,), num_candidates=cands, weights=weights)
    assert m["auc"] == pytest.approx(0.5) and m["gauc"] == pytest.approx(0.75)
    assert "auc" not in metrics_from_ranks(ranks, (5,))                       # needs the counts


def test_counts_are_saved_with_the_ranks_and_reload(tmp_path):
    from retrieval.evaluation.report import results_json, write_results

    rng = np.random.default_rng(1)
    split = random_split(rng)
    table = rng.normal(size=(split.num_users, split.num_items + 1))
    ev = Evaluator(ks=(5,), progress=False, num_generated=5)
    res = {"m": {st: ev.evaluate(TableScorer(table), split, st) for st in ("valid", "test")}}
    write_results(tmp_path, results_json(res, ev.protocol(), split))
    save_ranks(tmp_path / "ranks.safetensors", res)
    back = load_result(tmp_path, "m", "test")
    assert set(back.ranks) == {FULL, SAMPLED}
    assert np.array_equal(back.candidates[FULL], res["m"]["test"].candidates[FULL])
    auc = per_user_auc(back.ranks[FULL], back.candidates[FULL], back.ranked[FULL]).mean()
    assert auc == pytest.approx(back.metrics[FULL]["auc"], abs=1e-12)
    table_text = format_table(res)
    assert "auc" in table_text.splitlines()[0] and "gauc" in table_text.splitlines()[0]
