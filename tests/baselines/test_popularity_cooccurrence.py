"""Most-popular and item co-occurrence baselines: exact statistics and rankings on hand-made splits."""
import numpy as np
import pytest
import torch

from retrieval.baselines.counting import (ItemCooccurrence, MostPopular, item_counts, make_baseline,
                                 transition_counts)
from retrieval.data.batch import HistoryBatch
from retrieval.data.split import leave_one_out
from retrieval.data.sources_synthetic import SyntheticSource
from retrieval.core.errors import RecError
from retrieval.evaluation import Evaluator
from retrieval.evaluation.evaluator import FULL

from tiny_splits import make_split

# users: [1, 2, 3] -> valid 4, test 5 ; [3, 2] -> valid 5, test 1 ; [2] -> valid 1, test 2
SPLIT = make_split([[1, 2, 3], [3, 2], [2]], valid=[4, 5, 1], test=[5, 1, 2], num_items=5)


def batch(*histories) -> HistoryBatch:
    L = max(len(h) for h in histories)
    items = torch.tensor([[0] * (L - len(h)) + list(h) for h in histories])
    return HistoryBatch(torch.arange(len(histories)), items, torch.zeros_like(items))


def ev(**kw):
    return Evaluator(progress=False, sampled=False, **kw)


def test_popularity_counts_training_events_only():
    assert item_counts(SPLIT).tolist() == [0, 1, 3, 2, 0, 0]      # valid/test items never counted
    scores = MostPopular().fit(SPLIT).score_all(batch([1], [4, 5]))
    assert scores.shape == (2, 6)
    assert scores.tolist() == [[0, 1, 3, 2, 0, 0]] * 2


def test_popularity_ranks_exactly():
    # valid stage: user 0 (hist 1,2,3, target 4): candidates 4, 5 tied at 0 -> rank 1 (pessimistic)
    # user 1 (hist 3,2, target 5): candidates 1 (1), 4 (0), 5 (0) -> rank 2
    # user 2 (hist 2, target 1): candidates 1 (1), 3 (2), 4, 5 -> rank 1
    r = ev().evaluate(MostPopular().fit(SPLIT), SPLIT, "valid").ranks[FULL]
    assert r.tolist() == [1, 2, 1]


def test_transitions_are_within_user_training_sequences():
    c = transition_counts(SPLIT).toarray()
    expected = np.zeros((6, 6))
    expected[1, 2] = expected[2, 3] = expected[3, 2] = 1           # 1->2, 2->3 | 3->2 | -
    assert np.array_equal(c, expected)                             # no 3->3 across users 0/1,
    # and no last-train -> valid or valid -> test transition (e.g. 3->4, 4->5, 2->5) leaks in


def test_transition_counts_sum_repeats():
    split = make_split([[1, 2, 1, 2], [1, 2]], valid=[3, 3], test=[4, 4], num_items=4)
    c = transition_counts(split)
    assert c[1, 2] == 3 and c[2, 1] == 1 and c.sum() == 4


def test_cooccurrence_scores_are_counts_plus_a_popularity_tiebreak():
    model = ItemCooccurrence(epsilon=1.0).fit(SPLIT)
    s = model.score_all(batch([1, 2], [4]))                  # last items 2 and 4 (unseen)
    pop = np.array([0, 1, 3, 2, 0, 0]) / 4.0                  # popularity / (max + 1)
    assert s.dtype == torch.float64
    assert s[0].numpy() == pytest.approx(pop + np.eye(6)[3], abs=1e-15)      # 2 -> 3 once
    assert s[1].numpy() == pytest.approx(pop, abs=1e-15)                     # backs off to popularity


def test_cooccurrence_count_beats_any_popularity_difference():
    # item 4 follows 1 once but is rare; item 2 is very popular but never follows 1
    split = make_split([[1, 4], [2, 2, 2, 2], [3, 2, 2]], valid=[5, 5, 5], test=[1, 1, 1], num_items=5)
    s = ItemCooccurrence(epsilon=1.0).fit(split).score_all(batch([1]))[0]
    assert torch.argsort(s[1:], descending=True)[0].item() + 1 == 4


def test_cooccurrence_ranks_exactly_on_the_test_stage():
    # test input = training sequence + validation item, so the "last item" is the validation item.
    # user 0: input 1,2,3,4, last 4 has no successor -> popularity; target 5 is the only candidate
    #         left with history excluded (rank 0); without exclusion 1, 2, 3 beat it, 4 ties (rank 4).
    # user 1: input 3,2,5, last 5 unseen -> popularity; target 1 (1 event): with exclusion only 4
    #         (0 events) competes (rank 0); without, 2 (3) and 3 (2) beat it (rank 2).
    # user 2: input 2,1, target 2 is re-consumed and stays rankable; 1 -> 2 seen once (rank 0).
    model = ItemCooccurrence().fit(SPLIT)
    assert ev().evaluate(model, SPLIT, "test").ranks[FULL].tolist() == [0, 0, 0]
    assert ev(exclude_history=False).evaluate(model, SPLIT, "test").ranks[FULL].tolist() == [4, 2, 0]


def test_cooccurrence_beats_popularity_on_sequential_data():
    split = leave_one_out(SyntheticSource(num_users=400, num_items=200, seed=1).load(),
                          name="synthetic", k=5, fingerprint="t")
    e = ev()
    pop = e.evaluate(MostPopular().fit(split), split, "test").metrics[FULL]["ndcg@10"]
    co = e.evaluate(ItemCooccurrence().fit(split), split, "test").metrics[FULL]["ndcg@10"]
    assert co > pop + 0.05


def test_bad_epsilon_unfitted_and_unknown_names_are_clear_errors():
    with pytest.raises(RecError, match="epsilon"):
        ItemCooccurrence(epsilon=2.0)
    with pytest.raises(RecError, match="not fitted"):
        MostPopular().score_all(batch([1]))
    with pytest.raises(RecError, match="unknown baseline 'pop'"):
        make_baseline("pop")
