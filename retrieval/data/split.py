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
    while True:
        u_cnt = np.bincount(user[keep], minlength=num_users)
        i_cnt = np.bincount(item[keep], minlength=num_items + 1)
        new_keep = keep & (u_cnt[user] >= k) & (i_cnt[item] >= k)
        if new_keep.sum() == keep.sum():
            return new_keep
        keep = new_keep


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
    user, item, ts = inter.user[keep], inter.item[keep], inter.timestamp[keep]
    counts = np.bincount(user, minlength=num_users)
    long_enough = counts[user] >= min_length
    user, item, ts = user[long_enough], item[long_enough], ts[long_enough]
    if len(user) == 0:
        raise RecError(f"dataset {name!r}: no user has >= {min_length} interactions after "
                       f"{k}-core filtering; lower the k-core or use more data")

    # Renumber items (keep catalogue order) and users (keep original order).
    present = np.unique(item)
    item_map = np.zeros(inter.catalogue.num_items + 1, dtype=np.int64)
    item_map[present] = np.arange(1, len(present) + 1)
    item = item_map[item]
    users_present = np.unique(user)
    user_map = np.full(num_users, -1, dtype=np.int64)
    user_map[users_present] = np.arange(len(users_present))
    user = user_map[user]
    U = len(users_present)

    # Rows are already grouped by user and time-ordered (Interactions contract); be safe anyway.
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
        train_items=item[is_train].astype(np.int64),
        train_times=ts[is_train].astype(np.int64),
        valid_item=item[valid_pos].astype(np.int64),
        valid_time=ts[valid_pos].astype(np.int64),
        test_item=item[test_pos].astype(np.int64),
        test_time=ts[test_pos].astype(np.int64),
        user_raw_ids=inter.user_raw_ids[users_present],
        catalogue=inter.catalogue.subset(present),
        has_time=inter.has_time,
        fingerprint=fingerprint,
    )
