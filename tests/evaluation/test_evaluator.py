"""The one evaluator (docs/protocol.md §3) on hand-made cases with exact expected ranks, plus properties on
random inputs checked against a brute-force per-user reference."""
import math

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from retrieval.data.batch import HistoryBatch
from retrieval.data.split import leave_one_out
from retrieval.data.sources_synthetic import SyntheticSource
from retrieval.data.types import SplitData
from retrieval.core.errors import RecError
from retrieval.evaluation import MISS, Evaluator
from retrieval.evaluation import evaluator as evaluator_module
from retrieval.evaluation.evaluator import FULL, SAMPLED, sample_negatives

from fake_models import ListGenerator, TableScorer
from tiny_splits import make_split

NAN = float("nan")


class TopKGenerator:
    """The generator equivalent of a scorer: its top-k items, optionally without the history items
    the evaluator excludes (all but the target)."""

    def __init__(self, scorer, split, stage, mask_history):
        self.scorer, self.split, self.stage, self.mask_history = scorer, split, stage, mask_history

    def generate(self, batch: HistoryBatch, num_items: int) -> torch.Tensor:
        s = self.scorer.score_all(batch).clone()
        s[:, 0] = -math.inf
        if self.mask_history:
            off, items, _ = self.split.histories(self.stage)
            target = self.split.targets(self.stage)
            for b, u in enumerate(batch.users.tolist()):
                keep = s[b, target[u]].clone()
                s[b, torch.from_numpy(items[off[u]:off[u + 1]])] = -math.inf
                s[b, target[u]] = keep
        return s.topk(num_items, dim=1).indices


def ev(**kw) -> Evaluator:
    kw.setdefault("progress", False)
    kw.setdefault("sampled", False)
    return Evaluator(**kw)


def full_rank(model, split, stage="valid", **kw):
    return ev(**kw).evaluate(model, split, stage).ranks[FULL].tolist()


def by_id(scores_1_to_n, pad=0.0):
    """A score row [pad, s(1), ..., s(N)]."""
    return [pad, *scores_1_to_n]


# --- scorers: ties, exclusion, padding, NaN ------------------------------------------------------

def test_target_tied_with_two_others_gets_rank_two():
    split = make_split([[1]], valid=[2], test=[3], num_items=6)
    scorer = TableScorer([by_id([1.0, 0.5, 0.5, 0.5, 0.1, 0.2])])     # item 2 = target
    assert full_rank(scorer, split, exclude_history=True) == [2]
    assert full_rank(scorer, split, exclude_history=False) == [3]     # + history item 1 above


def test_padding_column_is_never_a_candidate():
    split = make_split([[1]], valid=[2], test=[3], num_items=6)
    scorer = TableScorer([by_id([1.0, 0.5, 0.5, 0.5, 0.1, 0.2], pad=1e9)])
    assert full_rank(scorer, split, exclude_history=True) == [2]
    assert full_rank(scorer, split, exclude_history=False) == [3]


def test_history_exclusion_on_and_off_valid_and_test_stage():
    # score of item i is i; history 4, 5, 6; valid target 1, test target 2 (input + valid item 1)
    split = make_split([[4, 5, 6]], valid=[1], test=[2], num_items=6)
    scorer = TableScorer([by_id([1, 2, 3, 4, 5, 6])])
    assert full_rank(scorer, split, "valid", exclude_history=True) == [2]    # 2, 3 above
    assert full_rank(scorer, split, "valid", exclude_history=False) == [5]   # 2..6 above
    assert full_rank(scorer, split, "test", exclude_history=True) == [1]     # 3 above
    assert full_rank(scorer, split, "test", exclude_history=False) == [4]    # 3..6 above


def test_target_in_history_is_never_excluded():
    split = make_split([[2, 3]], valid=[2], test=[5], num_items=6)
    scorer = TableScorer([by_id([1, 2, 3, 4, 5, 6])])
    assert full_rank(scorer, split, "valid", exclude_history=True) == [3]    # 4, 5, 6 (3 excluded)
    assert full_rank(scorer, split, "valid", exclude_history=False) == [4]
    # test input [2, 3, 2] (2 twice): candidates 1, 4, 5, 6
    assert full_rank(scorer, split, "test", exclude_history=True) == [1]


def test_exclusion_uses_whole_history_not_only_what_the_model_sees():
    split = make_split([[6, 2]], valid=[1], test=[3], num_items=6)
    scorer = TableScorer([by_id([1, 2, 3, 4, 5, 6])])
    assert full_rank(scorer, split, exclude_history=True, max_history=1) == [3]   # 3, 4, 5
    assert scorer.batches[0].items.tolist() == [[2]]


def test_nan_target_ranks_last_among_candidates():
    split = make_split([[1]], valid=[2], test=[3], num_items=6)
    scorer = TableScorer([by_id([1.0, NAN, 0.5, 0.4, 0.3, 0.2])])
    assert full_rank(scorer, split, exclude_history=True) == [4]      # 5 candidates
    assert full_rank(scorer, split, exclude_history=False) == [5]     # 6 candidates


def test_nan_competitor_counts_against_the_target():
    split = make_split([[1]], valid=[2], test=[3], num_items=6)
    scorer = TableScorer([by_id([1.0, 0.5, 0.1, NAN, 0.3, 0.2])])
    assert full_rank(scorer, split, exclude_history=True) == [1]


def test_infinite_scores_tie_pessimistically():
    split = make_split([[1]], valid=[2], test=[3], num_items=4)
    scorer = TableScorer([by_id([0.0, math.inf, math.inf, -math.inf])])
    assert full_rank(scorer, split) == [1]
    scorer = TableScorer([by_id([0.0, -math.inf, 1.0, -math.inf])])
    assert full_rank(scorer, split) == [2]                             # 3 above, 4 tied


def test_integer_scores_are_ranked_exactly():
    split = make_split([[1]], valid=[2], test=[3], num_items=4)

    class IntScorer:
        def score_all(self, batch):
            return torch.tensor([[0, 9, 5, 5, 7]], dtype=torch.int64)
    assert full_rank(IntScorer(), split) == [2]


def test_ndcg_mrr_hr_exact_through_the_evaluator():
    # three users, item i scores i; targets placed to rank 0, 2 and 7 (history = item 10)
    split = make_split([[10], [10], [10]], valid=[9, 7, 2], test=[1, 1, 1], num_items=10)
    table = [by_id(list(range(1, 11)))] * 3
    res = ev(ks=(5, 10)).evaluate(TableScorer(table), split, "valid")
    assert res.ranks[FULL].tolist() == [0, 2, 7]
    m = res.metrics[FULL]
    assert m["hr@5"] == pytest.approx(2 / 3, abs=1e-15)
    assert m["ndcg@5"] == pytest.approx((1 + 1 / math.log2(4)) / 3, abs=1e-15)
    assert m["mrr@5"] == pytest.approx((1 + 1 / 3) / 3, abs=1e-15)
    assert m["ndcg@10"] == pytest.approx((1 + 0.5 + 1 / math.log2(9)) / 3, abs=1e-15)
    assert m["mrr"] == pytest.approx((1 + 1 / 3 + 1 / 8) / 3, abs=1e-15)


def test_scores_are_read_not_written_and_views_are_fine():
    split = make_split([[1], [2]], valid=[2, 3], test=[3, 4], num_items=4)
    pop = torch.tensor([5.0, 4.0, 3.0, 2.0, 1.0])

    class Pop:
        def score_all(self, batch):
            return pop.expand(len(batch.users), -1)            # a view that cannot be written
    assert full_rank(Pop(), split, exclude_history=True) == [0, 1]     # user 1: item 1 above 3
    assert pop.tolist() == [5.0, 4.0, 3.0, 2.0, 1.0]


# --- generators -------------------------------------------------------------------------------

def gen_rank(lists, train, valid, num_items=6, **kw):
    split = make_split(train, valid=valid, test=valid, num_items=num_items)
    return full_rank(ListGenerator(lists), split, "valid", **kw)


def test_generated_history_items_are_dropped_and_the_list_compacted():
    lists = [[1, 3, 2, 4]]
    assert gen_rank(lists, [[1, 2]], [4], exclude_history=True) == [1]
    assert gen_rank(lists, [[1, 2]], [4], exclude_history=False) == [3]


def test_generated_target_in_history_is_kept():
    assert gen_rank([[2, 4]], [[4, 2]], [4], exclude_history=True) == [0]


def test_target_past_the_list_is_a_miss():
    split = make_split([[1]], valid=[6], test=[6], num_items=6)
    res = ev().evaluate(ListGenerator([[2, 3, 4, 5]]), split, "valid")
    assert res.ranks[FULL].tolist() == [MISS]
    assert res.metrics[FULL]["hr@50"] == 0.0 and res.metrics[FULL]["ndcg@50"] == 0.0


def test_zero_slots_duplicates_and_unknown_ids_never_push_the_target_down():
    assert gen_rank([[0, 0, 4]], [[1]], [4]) == [0]
    assert gen_rank([[3, 3, 4]], [[1]], [4]) == [1]
    assert gen_rank([[7, 99, -1, 4]], [[1]], [4]) == [0]
    assert gen_rank([[4, 4]], [[1]], [4]) == [0]


def test_generators_get_no_full_mrr_but_scorers_do():
    split = make_split([[1]], valid=[2], test=[3], num_items=4)
    assert "mrr" not in ev().evaluate(ListGenerator([[2]]), split, "valid").metrics[FULL]
    assert "mrr" in ev().evaluate(TableScorer([by_id([1, 2, 3, 4])]), split, "valid").metrics[FULL]


# --- real-ish data: sampled-100, batching, scorer/generator equivalence --------------------------

@pytest.fixture(scope="module")
def synth() -> SplitData:
    inter = SyntheticSource(num_users=300, num_items=150, mean_length=12, seed=3).load()
    return leave_one_out(inter, name="synthetic", k=5, fingerprint="test")


def random_table(split, seed, levels=None):
    g = torch.Generator().manual_seed(seed)
    shape = (split.num_users, split.num_items + 1)
    if levels:
        return torch.randint(0, levels, shape, generator=g).double()     # many ties
    return torch.rand(shape, generator=g, dtype=torch.float64)           # no ties


def touched(split, u):
    s = split.train_items[split.train_offsets[u]:split.train_offsets[u + 1]]
    return set(s.tolist()) | {int(split.valid_item[u]), int(split.test_item[u])}


def test_sampled_negatives_avoid_every_touched_item(synth):
    users = np.arange(synth.num_users)
    negs = sample_negatives(synth, users, 100, seed=7)
    assert negs.shape == (synth.num_users, 100)
    assert negs.min() >= 1 and negs.max() <= synth.num_items
    for u in users:
        assert not touched(synth, u) & set(negs[u].tolist())


def test_sampled_negatives_are_fixed_by_the_seed(synth):
    users = np.arange(synth.num_users)
    a = sample_negatives(synth, users, 100, seed=7)
    assert np.array_equal(a, sample_negatives(synth, users, 100, seed=7))
    assert not np.array_equal(a, sample_negatives(synth, users, 100, seed=8))


def test_sampled_fails_clearly_when_a_user_touched_every_item():
    split = make_split([[1, 2]], valid=[3], test=[4], num_items=4)
    with pytest.raises(RecError, match="user row 0"):
        sample_negatives(split, np.array([0]), 100, seed=0)


def test_constant_scores_rank_the_target_last_in_both_protocols(synth):
    table = torch.zeros(synth.num_users, synth.num_items + 1, dtype=torch.float64)
    res = ev(sampled=True).evaluate(TableScorer(table), synth, "test")
    assert set(res.ranks[SAMPLED].tolist()) == {100}
    off, items, _ = synth.histories("test")
    expected = [synth.num_items - len(set(items[off[u]:off[u + 1]].tolist()) - {int(synth.test_item[u])}) - 1
                for u in range(synth.num_users)]
    assert res.ranks[FULL].tolist() == expected
    assert res.metrics[SAMPLED]["hr@50"] == 0.0


def test_sampled_ranks_match_a_brute_force_count(synth):
    table = random_table(synth, seed=1, levels=20)
    res = ev(sampled=True, sample_seed=5).evaluate(TableScorer(table), synth, "valid")
    negs = sample_negatives(synth, np.arange(synth.num_users), 100, seed=5)
    t = table[torch.arange(synth.num_users), torch.from_numpy(synth.valid_item)]
    expected = (table.gather(1, torch.from_numpy(negs)) >= t[:, None]).sum(1)
    assert res.ranks[SAMPLED].tolist() == expected.tolist()


@pytest.mark.parametrize("stage", ["valid", "test"])
def test_batch_size_does_not_change_results(synth, stage):
    table = random_table(synth, seed=2, levels=10)
    gen = ListGenerator({u: list(np.random.default_rng(u).permutation(synth.num_items)[:60] + 1)
                         for u in range(synth.num_users)})
    users = np.arange(0, synth.num_users, 3)
    ref = ev(sampled=True, batch_size=1000).evaluate(TableScorer(table), synth, stage, users)
    ref_g = ev(batch_size=1000).evaluate(gen, synth, stage, users)
    for bs in (1, 7, 64):
        r = ev(sampled=True, batch_size=bs).evaluate(TableScorer(table), synth, stage, users)
        assert np.array_equal(r.ranks[FULL], ref.ranks[FULL])
        assert np.array_equal(r.ranks[SAMPLED], ref.ranks[SAMPLED])
        assert r.metrics == ref.metrics
        g = ev(batch_size=bs).evaluate(gen, synth, stage, users)
        assert np.array_equal(g.ranks[FULL], ref_g.ranks[FULL])


@pytest.mark.parametrize("exclude", [True, False])
def test_scorer_and_its_top50_generator_agree(synth, exclude):
    scorer = TableScorer(random_table(synth, seed=4))
    gen = TopKGenerator(scorer, synth, "test", mask_history=exclude)
    a = ev(exclude_history=exclude).evaluate(scorer, synth, "test")
    b = ev(exclude_history=exclude).evaluate(gen, synth, "test")
    for k in (5, 10, 20, 50):
        for m in ("hr", "ndcg", "mrr"):
            assert a.metrics[FULL][f"{m}@{k}"] == b.metrics[FULL][f"{m}@{k}"]
    inside = a.ranks[FULL] < 50
    assert np.array_equal(a.ranks[FULL][inside], b.ranks[FULL][inside])
    assert (b.ranks[FULL][~inside] == MISS).all()
    assert 0 < inside.mean() < 1                         # both hits and misses were exercised


def test_a_subset_of_users_gets_the_same_ranks(synth):
    scorer = TableScorer(random_table(synth, seed=6, levels=30))
    whole = ev().evaluate(scorer, synth, "valid").ranks[FULL]
    users = np.array([17, 3, 250, 3])
    part = ev().evaluate(scorer, synth, "valid", users=users)
    assert part.ranks[FULL].tolist() == whole[users].tolist()
    assert part.users.tolist() == users.tolist()


def test_torch_counting_branch_matches_numpy_branch(synth, monkeypatch):
    table = random_table(synth, seed=8, levels=7)
    table[::5, 3] = NAN
    a = ev().evaluate(TableScorer(table), synth, "test").ranks[FULL]
    monkeypatch.setattr(evaluator_module._RankCounter, "numpy_on_cpu", False)
    b = ev().evaluate(TableScorer(table), synth, "test").ranks[FULL]
    assert np.array_equal(a, b)


def test_float32_and_bfloat16_scores_rank_like_float64():
    split = make_split([[1]], valid=[2], test=[3], num_items=6)
    row = by_id([1.0, 0.5, 0.5, 0.5, 0.1, 0.2])
    for dtype in (torch.float32, torch.bfloat16, torch.float16):
        class S:
            def score_all(self, batch, dtype=dtype):
                return torch.tensor([row], dtype=dtype)
        assert full_rank(S(), split) == [2]


# --- errors and module state --------------------------------------------------------------------

def test_wrong_score_shape_is_a_clear_error():
    split = make_split([[1]], valid=[2], test=[3], num_items=6)
    with pytest.raises(RecError, match=r"expected \(batch, num_items \+ 1\) = \(1, 7\)"):
        ev().evaluate(TableScorer([[0.0] * 6]), split, "valid")


def test_num_generated_below_largest_k_is_rejected():
    with pytest.raises(RecError, match="num_generated"):
        Evaluator(ks=(5, 100), num_generated=50)


def test_a_model_with_neither_interface_is_rejected():
    split = make_split([[1]], valid=[2], test=[3], num_items=6)
    with pytest.raises(TypeError, match="neither"):
        ev().evaluate(object(), split, "valid")


def test_module_scorer_runs_in_eval_mode_and_training_mode_is_restored():
    split = make_split([[1]], valid=[2], test=[3], num_items=4)

    class Net(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.w = torch.nn.Parameter(torch.tensor([0.0, 4.0, 3.0, 2.0, 1.0]))
            self.modes = []

        def score_all(self, batch):
            self.modes.append(self.training)
            return self.w.expand(len(batch.users), -1)
    net = Net().train()
    assert full_rank(net, split) == [0]
    assert net.modes == [False] and net.training


# --- properties on random inputs ------------------------------------------------------------------

def reference_rank(row, target, hist, exclude):
    """Brute force: #other candidates whose score is not below the target's."""
    cands = set(range(1, len(row))) - ((set(hist) - {target}) if exclude else set())
    t = row[target]
    return sum(1 for i in cands if i != target and not (row[i] < t))


@st.composite
def random_case(draw):
    n = draw(st.integers(3, 12))
    u = draw(st.integers(1, 6))
    train = [draw(st.lists(st.integers(1, n), min_size=1, max_size=6)) for _ in range(u)]
    valid = [draw(st.integers(1, n)) for _ in range(u)]
    test = [draw(st.integers(1, n)) for _ in range(u)]
    cell = st.one_of(st.integers(-3, 3).map(float), st.just(NAN))
    table = [[draw(cell) for _ in range(n + 1)] for _ in range(u)]
    return make_split(train, valid, test, n), table


@settings(max_examples=150, deadline=None)
@given(random_case(), st.booleans(), st.sampled_from(["valid", "test"]), st.integers(1, 4))
def test_random_inputs_match_brute_force_and_metrics_are_sane(case, exclude, stage, bs):
    split, table = case
    res = ev(exclude_history=exclude, batch_size=bs, ks=(1, 2, 5, 10, 20, 50)).evaluate(
        TableScorer(table), split, stage)
    off, items, _ = split.histories(stage)
    target = split.targets(stage)
    expected = [reference_rank(table[u], int(target[u]), items[off[u]:off[u + 1]].tolist(), exclude)
                for u in range(split.num_users)]
    ranks = res.ranks[FULL]
    assert ranks.tolist() == expected
    assert ((ranks >= 0) & (ranks <= split.num_items - 1)).all()
    m = res.metrics[FULL]
    assert all(0.0 <= v <= 1.0 for v in m.values())
    for kind in ("hr", "ndcg", "mrr"):
        vals = [m[f"{kind}@{k}"] for k in (1, 2, 5, 10, 20, 50)]
        assert vals == sorted(vals)
    assert m["hr@50"] == 1.0                                 # every rank < N <= 12


@settings(max_examples=100, deadline=None)
@given(random_case(), st.booleans(), st.integers(0, 10))
def test_random_generated_lists_match_brute_force(case, exclude, seed):
    split, _ = case
    rng = np.random.default_rng(seed)
    n = split.num_items
    lists = {u: rng.integers(-1, n + 2, size=rng.integers(0, 2 * n)).tolist()
             for u in range(split.num_users)}
    res = ev(exclude_history=exclude).evaluate(ListGenerator(lists), split, "valid")
    expected = []
    for u in range(split.num_users):
        target = int(split.valid_item[u])
        hist = set(split.train_items[split.train_offsets[u]:split.train_offsets[u + 1]].tolist())
        kept, seen = [], set()
        for i in lists[u][:50]:
            if 1 <= i <= n and i not in seen and (not exclude or i == target or i not in hist):
                kept.append(i)
            seen.add(i)
        expected.append(kept.index(target) if target in kept else MISS)
    assert res.ranks[FULL].tolist() == expected


def test_items_past_num_generated_are_not_credited():
    class TooLong:
        def generate(self, batch, num_items):
            return torch.arange(1, 61)[None, :]        # 60 items, target 55 at position 54
    split = make_split([[60]], valid=[55], test=[55], num_items=60)
    assert full_rank(TooLong(), split, num_generated=50) == [MISS]
    assert full_rank(TooLong(), split, num_generated=60) == [54]


@settings(max_examples=30, deadline=None)
@given(st.integers(1, 5), st.integers(1, 3), st.floats(0.0, 1.0), st.integers(0, 2**32 - 1))
def test_row_counts_equal_a_plain_bool_sum(rows, groups, p, seed):
    m = np.random.default_rng(seed).random((rows, groups * 2040)) < p
    assert evaluator_module._row_counts(m).tolist() == m.sum(1).tolist()


def test_row_counts_of_full_rows_do_not_overflow_byte_lanes():
    m = np.ones((3, 4080), dtype=bool)
    m[1] = False
    assert evaluator_module._row_counts(m).tolist() == [4080, 0, 4080]


def test_one_counter_serves_catalogues_of_different_sizes():
    counter = evaluator_module._RankCounter(threads=1)
    none = np.empty(0, np.int64)
    # (columns, target score): the first call marks every column "below"; the next ones must not
    # see those marks in the columns past their own width (same buffer width 2040 for the first two)
    for n, top in ((2040, 1.0), (2039, 0.0), (2041, 0.0), (2040, 0.0)):
        s = torch.zeros(3, n)
        s[:, 1] = top
        r = counter(s, s[:, 1], torch.tensor([1, 1, 1]), none, none)
        assert r.tolist() == [0 if top else n - 2] * 3     # all tied: all but padding and target
