"""Properties of the 'text' loader, the k-core + leave-one-out split and the evaluator on random
tables, each checked against a plain-Python reference written from docs/protocol.md §2-3.

Random tables have few users, items and distinct timestamps, so ties in time, users with one
event, repeated items and items that the k-core removes all occur often.
"""
from __future__ import annotations

import tempfile
from pathlib import Path

import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from retrieval.data.sources_text import TextSource
from retrieval.data.split import leave_one_out
from retrieval.core.errors import RecError
from retrieval.evaluation import Evaluator
from retrieval.evaluation.evaluator import FULL

SETTINGS = settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])


@st.composite
def tables(draw, with_time: bool | None = None):
    """(rows [(user, item, timestamp)] in file order, has_time); raw ids are arbitrary positive ints."""
    users = draw(st.lists(st.integers(1, 10**9), min_size=1, max_size=8, unique=True))
    items = draw(st.lists(st.integers(1, 10**6), min_size=1, max_size=12, unique=True))
    rows = []
    for u in users:
        for _ in range(draw(st.integers(1, 10))):
            rows.append((u, draw(st.sampled_from(items)), draw(st.integers(0, 4))))
    rows = draw(st.permutations(rows))                 # users interleaved in the file
    has_time = draw(st.booleans()) if with_time is None else with_time
    return rows, has_time


def load_text(rows, has_time: bool):
    with tempfile.TemporaryDirectory() as d:
        path = Path(d) / "data.txt"
        path.write_text("".join(f"{u} {i} {t}\n" if has_time else f"{u} {i}\n" for u, i, t in rows))
        return TextSource(path=str(path)).load()


def expected_events(rows, has_time: bool) -> list[tuple[int, int, int]]:
    """docs/protocol.md §2: order by (user, timestamp), ties by file order; without time, file order and
    timestamp = position in the user's history."""
    if not has_time:
        seen: dict[int, int] = {}
        rows = [(u, i, seen.__setitem__(u, seen.get(u, -1) + 1) or seen[u]) for u, i, _ in rows]
    indexed = sorted(range(len(rows)), key=lambda n: (rows[n][0], rows[n][2], n))
    return [rows[n] for n in indexed]


def events_as_raw(inter) -> list[tuple[int, int, int]]:
    cat = inter.catalogue.raw_ids
    return [(int(inter.user_raw_ids[u]), int(cat[i]), int(t))
            for u, i, t in zip(inter.user, inter.item, inter.timestamp)]


@SETTINGS
@given(tables())
def test_text_loader_keeps_every_row_remaps_ids_and_orders_by_time(table):
    rows, has_time = table
    inter = load_text(rows, has_time)
    assert inter.num_events == len(rows) and inter.has_time == has_time
    # users 0..U-1 in raw-id order; items 1..N in raw-id order (row 0 = padding)
    assert [int(u) for u in inter.user_raw_ids] == sorted({u for u, _, _ in rows})
    assert [int(i) for i in inter.catalogue.raw_ids[1:]] == sorted({i for _, i, _ in rows})
    assert set(inter.user.tolist()) == set(range(len(inter.user_raw_ids)))
    assert set(inter.item.tolist()) == set(range(1, inter.catalogue.num_items + 1))
    # per-user time order, ties in file order, and the same (user, item, time) events
    assert events_as_raw(inter) == expected_events(rows, has_time)


def reference_split(events, k: int, min_length: int = 3):
    """k-core to a fixed point, then drop users with < min_length events; per user (raw ids):
    (train items, valid item, test item), plus the surviving events."""
    kept = list(events)
    while True:
        users, items = {}, {}
        for u, i, _ in kept:
            users[u] = users.get(u, 0) + 1
            items[i] = items.get(i, 0) + 1
        nxt = [e for e in kept if users[e[0]] >= k and items[e[1]] >= k]
        if len(nxt) == len(kept):
            break
        kept = nxt
    per_user: dict[int, list[int]] = {}
    for u, i, _ in kept:
        per_user.setdefault(u, []).append(i)
    out = {u: (s[:-2], s[-2], s[-1]) for u, s in per_user.items() if len(s) >= min_length}
    return out, [e for e in kept if e[0] in out]


def split_as_raw(split) -> dict[int, tuple[list[int], int, int]]:
    cat = split.catalogue.raw_ids
    out = {}
    for u in range(split.num_users):
        train = split.train_items[split.train_offsets[u]:split.train_offsets[u + 1]]
        out[int(split.user_raw_ids[u])] = ([int(cat[i]) for i in train], int(cat[split.valid_item[u]]),
                                           int(cat[split.test_item[u]]))
    return out


@SETTINGS
@given(tables(), st.integers(1, 4))
def test_leave_one_out_holds_out_each_users_last_two_events_of_the_k_core(table, k):
    rows, has_time = table
    inter = load_text(rows, has_time)
    expected, survivors = reference_split(events_as_raw(inter), k)
    if not expected:
        with pytest.raises(RecError, match="no user has >= 3 interactions"):
            leave_one_out(inter, name="text", k=k, fingerprint="p")
        return
    split = leave_one_out(inter, name="text", k=k, fingerprint="p")
    assert split_as_raw(split) == expected
    # users keep their order; items are renumbered 1..N in catalogue order, every one used
    assert [int(u) for u in split.user_raw_ids] == sorted(expected)
    raw_items = [int(i) for i in split.catalogue.raw_ids[1:]]
    assert raw_items == sorted({i for _, i, _ in survivors})
    used = np.concatenate([split.train_items, split.valid_item, split.test_item])
    assert set(used.tolist()) == set(range(1, split.num_items + 1))
    # time order inside the split: train times <= valid time <= test time, per user
    for u in range(split.num_users):
        t = split.train_times[split.train_offsets[u]:split.train_offsets[u + 1]]
        assert np.all(np.diff(t) >= 0)
        assert (len(t) == 0 or t[-1] <= split.valid_time[u]) and split.valid_time[u] <= split.test_time[u]
    assert split.stats()["interactions"] == len(survivors)


@SETTINGS
@given(tables(with_time=True), st.integers(3, 4))
def test_split_output_is_a_k_core(table, k):
    """With k >= 3 no user falls under the 3-event minimum, so the output itself is a k-core:
    every user and every item has >= k events (train + valid + test)."""
    rows, _ = table
    inter = load_text(rows, True)
    try:
        split = leave_one_out(inter, name="text", k=k, fingerprint="p")
    except RecError:
        assert reference_split(events_as_raw(inter), k)[0] == {}
        return
    per_user = split.train_lengths + 2
    per_item = np.bincount(np.concatenate([split.train_items, split.valid_item, split.test_item]),
                           minlength=split.num_items + 1)[1:]
    assert per_user.min() >= k and per_item.min() >= k


class RandomIntegerScorer:
    """Scores from a fixed random integer table (many ties), row = user."""

    def __init__(self, num_users: int, num_items: int, seed: int):
        rng = np.random.default_rng(seed)
        self.table = torch.from_numpy(rng.integers(0, 4, size=(num_users, num_items + 1)).astype(np.float32))

    def score_all(self, batch):
        return self.table[batch.users]


@SETTINGS
@given(tables(with_time=True), st.integers(0, 10**6), st.booleans(), st.sampled_from(["valid", "test"]))
def test_evaluator_ranks_equal_a_brute_force_pessimistic_count(table, seed, exclude, stage):
    rows, _ = table
    try:
        split = leave_one_out(load_text(rows, True), name="text", k=1, fingerprint="p")
    except RecError:
        return                                            # no user with 3 events: nothing to rank
    model = RandomIntegerScorer(split.num_users, split.num_items, seed)
    res = Evaluator(ks=(1, 2, 5), num_generated=5, exclude_history=exclude, sampled=False,
                    progress=False, batch_size=3).evaluate(model, split, stage)
    off, items, _ = split.histories(stage)
    target = split.targets(stage)
    expected = []
    for u in range(split.num_users):
        s = model.table[u].numpy()
        others = set(range(1, split.num_items + 1)) - {int(target[u])}
        if exclude:
            others -= set(items[off[u]:off[u + 1]].tolist())
        expected.append(sum(1 for i in others if s[i] >= s[target[u]]))
    assert res.ranks[FULL].tolist() == expected
    hr1 = np.mean([r < 1 for r in expected])
    assert res.metrics[FULL]["hr@1"] == pytest.approx(hr1)
    assert res.metrics[FULL]["ndcg@5"] == pytest.approx(np.mean([1 / np.log2(r + 2) if r < 5 else 0
                                                                  for r in expected]))
