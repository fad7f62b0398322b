"""k-core filtering and the leave-one-out split (SPEC §2), vectorised over the whole table."""
from __future__ import annotations

import numpy as np

from retrieval.data.types import Interactions, SplitData
from retrieval.errors import RecError


def k_core(user: np.ndarray, item: np.ndarray, k: int, num_users: int, num_items: int) -> np.ndarray:
    """Boolean mask of rows kept after iterating the k-core filter to a fixed point.

    A row survives when its user and its item each have >= k surviving rows.
    """
    keep = np.ones(len(user), dtype=bool)
    if k <= 1:
        return keep
    # Each pass works on the rows that survived the last one, so later passes get cheaper and
    # the first one copies nothing.
    rows, u, i = None, user, item
    while True:
        u_cnt = np.bincount(u, minlength=num_users)
        i_cnt = np.bincount(i, minlength=num_items + 1)
        ok = (u_cnt[u] >= k) & (i_cnt[i] >= k)
        if ok.all():
            break
        rows = np.flatnonzero(ok) if rows is None else rows[ok]
        u, i = u[ok], i[ok]
    if rows is not None:
        keep[:] = False
        keep[rows] = True
    return keep


def leave_one_out(inter: Interactions, name: str, k: int, fingerprint: str,
                  min_length: int = 3) -> SplitData:
    """Filter to the k-core, drop users with < `min_length` events, split last two events off.

    Items that no longer occur are removed from the catalogue and ids are renumbered 1..N in their
    original order; users are renumbered 0..U-1 in their original order.
    """
    if inter.num_events == 0:
        raise RecError(f"dataset {name!r}: no interactions were read; check the data files")
    num_users = len(inter.user_raw_ids)
    keep = k_core(inter.user, inter.item, k, num_users, inter.catalogue.num_items)
    counts = np.bincount(inter.user[keep], minlength=num_users)
    keep &= counts[inter.user] >= min_length
    # Copy only when something was dropped: at ML-25M size each copy is 3 x 200 MB.
    user, item, ts = inter.user, inter.item, inter.timestamp
    if not keep.all():
        user, item, ts = user[keep], item[keep], ts[keep]
    if len(user) == 0:
        raise RecError(f"dataset {name!r}: no user has >= {min_length} interactions after "
                       f"{k}-core filtering; lower the k-core or use more data")

    # Renumber items (keep catalogue order) and users (keep original order). Ids are dense, so
    # bincount finds the survivors in O(E) instead of sorting E values with np.unique.
    present = np.flatnonzero(np.bincount(item, minlength=inter.catalogue.num_items + 1)[1:]) + 1
    if len(present) < inter.catalogue.num_items:
        item_map = np.zeros(inter.catalogue.num_items + 1, dtype=np.int64)
        item_map[present] = np.arange(1, len(present) + 1)
        item = item_map[item]
    users_present = np.flatnonzero(np.bincount(user, minlength=num_users))
    if len(users_present) < num_users:
        user_map = np.full(num_users, -1, dtype=np.int64)
        user_map[users_present] = np.arange(len(users_present))
        user = user_map[user]
    U = len(users_present)

    # Rows are already grouped by user and time-ordered (Interactions contract); sort (stably)
    # only when a source broke that promise — checking costs O(E), sorting 25M rows seconds.
    same = user[1:] == user[:-1]
    if not (np.all(user[1:] >= user[:-1]) and np.all(~same | (ts[1:] >= ts[:-1]))):
        order = np.lexsort((np.arange(len(user)), ts, user))
        user, item, ts = user[order], item[order], ts[order]

    counts = np.bincount(user, minlength=U)
    ends = np.cumsum(counts)                          # one past each user's last row
    test_pos, valid_pos = ends - 1, ends - 2
    is_train = np.ones(len(user), dtype=bool)
    is_train[test_pos] = False
    is_train[valid_pos] = False
    offsets = np.zeros(U + 1, dtype=np.int64)
    np.cumsum(counts - 2, out=offsets[1:])
    return SplitData(
        name=name,
        train_offsets=offsets,
        train_items=item[is_train].astype(np.int64, copy=False),
        train_times=ts[is_train].astype(np.int64, copy=False),
        valid_item=item[valid_pos].astype(np.int64, copy=False),
        valid_time=ts[valid_pos].astype(np.int64, copy=False),
        test_item=item[test_pos].astype(np.int64, copy=False),
        test_time=ts[test_pos].astype(np.int64, copy=False),
        user_raw_ids=inter.user_raw_ids[users_present],
        catalogue=inter.catalogue.subset(present),
        has_time=inter.has_time,
        fingerprint=fingerprint,
    )
