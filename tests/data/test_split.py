"""k-core filtering and the leave-one-out split (docs/protocol.md §2) on hand-made tables."""
import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from retrieval.data.remap import build_interactions
from retrieval.data.sources_text import TextSource
from retrieval.data.split import k_core, leave_one_out
from retrieval.data.types import ItemCatalogue


def catalogue(n: int) -> ItemCatalogue:
    ids = np.array([""] + [f"i{k}" for k in range(1, n + 1)], dtype=object)
    return ItemCatalogue(raw_ids=ids, titles=ids.copy(), template="plain")


def table(rows, num_items: int):
    """rows: (user_raw, item, timestamp) in file order -> Interactions (users 0.. by raw id)."""
    u, i, t = (np.array(c, dtype=np.int64) for c in zip(*rows))
    return build_interactions({"user": u, "item": i, "timestamp": t}, catalogue(num_items), True)


def seq(split, u):
    off = split.train_offsets
    return split.train_items[off[u]:off[u + 1]].tolist()


def test_leave_one_out_on_a_hand_made_table():
    # User 10: items 1,2,3,4 at t=1..4; user 20: items 3,1,2 at t=5,6,7 (file order shuffled).
    inter = table([(20, 2, 7), (10, 1, 1), (10, 2, 2), (20, 3, 5), (10, 3, 3), (10, 4, 4),
                   (20, 1, 6)], num_items=4)
    s = leave_one_out(inter, "tiny", k=0, fingerprint="x")
    assert s.user_raw_ids.tolist() == ["10", "20"]
    assert seq(s, 0) == [1, 2] and s.valid_item[0] == 3 and s.test_item[0] == 4
    assert seq(s, 1) == [3] and s.valid_item[1] == 1 and s.test_item[1] == 2
    assert s.train_times.tolist() == [1, 2, 5]
    assert s.valid_time.tolist() == [3, 6] and s.test_time.tolist() == [4, 7]
    # Validation input = training sequence; test input = training sequence + validation item.
    off, items, _ = s.histories("test")
    assert items[off[0]:off[1]].tolist() == [1, 2, 3] and items[off[1]:off[2]].tolist() == [3, 1]
    assert s.stats()["interactions"] == 7


def test_k_core_iterates_to_a_fixed_point():
    # k=2. Pass 1 removes (C, item 3): item 3 has one row. That leaves user C with one row,
    # removed only in pass 2. A single pass would keep (C, item 2).
    user = np.array([0, 0, 1, 1, 2, 2])          # A, A, B, B, C, C
    item = np.array([1, 2, 1, 2, 2, 3])
    keep = k_core(user, item, k=2, num_users=3, num_items=3)
    assert keep.tolist() == [True, True, True, True, False, False]


def test_k_core_cascade_over_several_passes():
    # A chain: each removal starves the next user/item, four passes deep, until nothing is left
    # outside the dense block of users 0,1 x items 1,2.
    rows = [(0, 1), (0, 2), (1, 1), (1, 2),           # dense 2-core block
            (2, 2), (2, 3), (3, 3), (3, 4), (4, 4), (4, 5)]  # chain hanging off item 2
    user, item = (np.array(c) for c in zip(*rows))
    keep = k_core(user, item, k=2, num_users=5, num_items=5)
    assert keep.tolist() == [True] * 4 + [False] * 6


def naive_k_core(user, item, k):
    alive = set(range(len(user)))
    while True:
        uc, ic = {}, {}
        for r in alive:
            uc[user[r]] = uc.get(user[r], 0) + 1
            ic[item[r]] = ic.get(item[r], 0) + 1
        drop = {r for r in alive if uc[user[r]] < k or ic[item[r]] < k}
        if not drop:
            return [r in alive for r in range(len(user))]
        alive -= drop


@settings(max_examples=60, deadline=None)
@given(st.lists(st.tuples(st.integers(0, 6), st.integers(1, 6)), min_size=1, max_size=60),
       st.integers(2, 4))
def test_k_core_matches_a_naive_reference(rows, k):
    user, item = (np.array(c) for c in zip(*rows))
    keep = k_core(user, item, k=k, num_users=7, num_items=6)
    assert keep.tolist() == naive_k_core(user.tolist(), item.tolist(), k)


def test_equal_timestamps_keep_file_order(tmp_path):
    # Items 5, 7, 9 share t=10 and must stay in file order after the (user, time) sort.
    p = tmp_path / "ties.txt"
    p.write_text("1 5 10\n1 3 5\n1 7 10\n2 1 1\n1 9 10\n2 2 1\n2 4 1\n")
    inter = TextSource(path=str(p)).load()
    raw = inter.catalogue.raw_ids[inter.item].tolist()
    assert raw == ["3", "5", "7", "9", "1", "2", "4"]
    s = leave_one_out(inter, "ties", k=0, fingerprint="x")
    ids = s.catalogue.raw_ids
    assert ids[s.train_items].tolist() == ["3", "5", "1"]
    assert ids[s.valid_item].tolist() == ["7", "2"] and ids[s.test_item].tolist() == ["9", "4"]


def test_split_sorts_stably_when_a_source_breaks_the_order_contract():
    from retrieval.data.types import Interactions
    inter = Interactions(user=np.array([0, 0, 0, 0]), item=np.array([4, 3, 2, 1]),
                         timestamp=np.array([9, 1, 9, 9]), user_raw_ids=np.array(["u"], dtype=object),
                         catalogue=catalogue(4))
    s = leave_one_out(inter, "unsorted", k=0, fingerprint="x")
    assert seq(s, 0) == [3, 4] and s.valid_item[0] == 2 and s.test_item[0] == 1


def test_users_with_fewer_than_three_events_are_dropped_and_ids_renumbered():
    inter = table([(1, 1, 1), (2, 2, 1), (2, 3, 2), (2, 4, 3), (3, 2, 1), (3, 3, 2)], num_items=4)
    s = leave_one_out(inter, "short", k=0, fingerprint="x")
    assert s.user_raw_ids.tolist() == ["2"]                  # users 1 (1 event), 3 (2 events) dropped
    assert s.catalogue.raw_ids.tolist() == ["", "i2", "i3", "i4"]   # item 1 no longer occurs
    assert (s.valid_item[0], s.test_item[0]) == (2, 3) and seq(s, 0) == [1]


def test_many_equal_timestamps_keep_file_order():
    # 300 events, one user: the first is the latest, the other 299 share one timestamp. Only a
    # stable sort keeps those 299 in file order (an unstable one scrambles a run this long).
    rows = [(1, 300, 9)] + [(1, i, 5) for i in range(1, 300)]
    inter = table(rows, num_items=300)
    assert inter.item.tolist() == list(range(1, 301))
