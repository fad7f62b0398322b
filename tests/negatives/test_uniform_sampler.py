"""Uniform negative sampling: never a history item, every other item reachable, reproducible."""
import numpy as np
import pytest

from retrieval.data import load_split
from retrieval.data.split import leave_one_out
from retrieval.data.types import Interactions, ItemCatalogue
from retrieval.core.errors import RecError
from retrieval.negatives.base import UniformNegativeSampler, build_negative_sampler, history_keys


def _split(seqs, num_items):
    user = np.concatenate([[u] * len(s) for u, s in enumerate(seqs)])
    item = np.concatenate(seqs)
    ts = np.concatenate([np.arange(len(s)) for s in seqs])
    cat = ItemCatalogue(np.array([""] + [str(i) for i in range(1, num_items + 1)], dtype=object),
                        np.array([""] * (num_items + 1), dtype=object))
    inter = Interactions(user, item, ts, np.array([str(u) for u in range(len(seqs))], dtype=object), cat)
    return leave_one_out(inter, name="hand", k=1, fingerprint="x")


def test_negatives_avoid_a_dense_history_and_cover_the_rest():
    # 8 items; user 0 trained on 1..6, so only 7 and 8 (its valid/test items) are legal negatives.
    split = _split([[1, 2, 3, 4, 5, 6, 7, 8], [8, 7, 1]], 8)
    s = UniformNegativeSampler(split, seed=0)
    out = s.sample(np.array([0] * 200 + [1] * 200), np.ones(400, dtype=np.int64), 5)
    assert out.shape == (400, 5)
    assert set(np.unique(out[:200])) == {7, 8}
    assert set(np.unique(out[200:])) == {1, 2, 3, 4, 5, 6, 7}          # user 1 trained on {8}
    assert out.min() >= 1 and out.max() <= 8


def test_negatives_never_hit_the_history_on_beauty(data_root):
    split = load_split("amazon-beauty")
    sampler = build_negative_sampler(split, seed=3)
    users = np.repeat(np.arange(split.num_users), 4)
    neg = sampler.sample(users, np.zeros(len(users), dtype=np.int64), 8)         # (P, 8)
    keys = history_keys(split)
    k = users[:, None] * (split.num_items + 1) + neg
    assert not np.isin(k, keys).any()
    assert neg.min() >= 1 and neg.max() <= split.num_items
    # roughly uniform: every item drawn about 22363·32/12101 ≈ 59 times
    counts = np.bincount(neg.ravel(), minlength=split.num_items + 1)[1:]
    assert counts.min() > 20 and counts.max() < 120


def test_sampler_state_round_trip_reproduces_draws():
    split = _split([[1, 2, 3, 4], [2, 3, 4, 5], [5, 6, 1, 2]], 9)
    a = UniformNegativeSampler(split, seed=11)
    a.sample(np.array([0, 1]), np.array([2, 3]), 4)
    saved = a.state()
    first = a.sample(np.array([0, 1, 2]), np.array([2, 3, 6]), 6)
    b = UniformNegativeSampler(split, seed=999)
    b.load_state(saved)
    assert np.array_equal(first, b.sample(np.array([0, 1, 2]), np.array([2, 3, 6]), 6))


def test_user_who_trained_on_every_item_is_rejected():
    split = _split([[1, 2, 3, 1, 2], [3, 2, 1]], 3)
    with pytest.raises(RecError, match="every item"):
        UniformNegativeSampler(split)


def test_unknown_sampler_name_lists_the_choices():
    split = _split([[1, 2, 3], [3, 2, 1]], 5)
    with pytest.raises(RecError, match="uniform"):
        build_negative_sampler(split, name="hardest")
