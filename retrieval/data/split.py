"""k-core filtering and the leave-one-out split (docs/protocol.md §2), vectorised over the whole table."""
from __future__ import annotations

import numpy as np

from retrieval.data.types import Interactions, SplitData
from retrieval.core.errors import RecError


def k_core(user: np.ndarray, item: np.ndarray, k: int, num_users: int, num_items: int) -> np.ndarray:
    """Boolean mask of rows kept after iterating the k-core filter to a fixed point.

    A row survives when its user and its item each have >= k surviving rows.
    """
    keep = np.ones(len(user), dtype=bool)
    if k <= 1:
        return keep
    # Memory matters at ML-25M size: look up per-user/per-item *booleans* (25 MB per gather
    # instead of 200 MB of int64 counts) and never keep filtered copies of the columns.
    while True:
        all_kept = bool(keep.all())
        u_ok = np.bincount(user if all_kept else user[keep], minlength=num_users) >= k
        i_ok = np.bincount(item if all_kept else item[keep], minlength=num_items + 1) >= k
        new_keep = u_ok[user]
        new_keep &= i_ok[item]
        new_keep &= keep
        if np.array_equal(new_keep, keep):
            return keep
        keep = new_keep


def _time_ordered(user: np.ndarray, ts: np.ndarray) -> bool:
    same = user[1:] == user[:-1]
    return bool(np.all(user[1:] >= user[:-1]) and np.all(~same | (ts[1:] >= ts[:-1])))


def leave_one_out(inter: Interactions, name: str, k: int, fingerprint: str,
                  min_length: int = 3) -> SplitData:
    """Filter to the k-core, drop users with < `min_length` events, split last two events off.

    Items that no longer occur are removed from the catalogue and ids are renumbered 1..N in their
    original order; users are renumbered 0..U-1 in their original order.

    Works with a keep-mask over the input rows instead of filtered copies: at ML-25M size each
    copy of (user, item, time) is 600 MB, and this stays within the 4 GB budget (docs/protocol.md §7).
    """
    if inter.num_events == 0:
        raise RecError(f"dataset {name!r}: no interactions were read; check the data files")
    num_users, num_items = len(inter.user_raw_ids), inter.catalogue.num_items
    user, item, ts = inter.user, inter.item, inter.timestamp
    # Rows are grouped by user and time-ordered (Interactions contract); sort (stably) only when a
    # source broke that promise — checking costs O(E), sorting 25M rows seconds.
    if not _time_ordered(user, ts):
        order = np.lexsort((np.arange(len(user)), ts, user))
        user, item, ts = user[order], item[order], ts[order]
        del order

    keep = k_core(user, item, k, num_users, num_items)
    counts = np.bincount(user[keep], minlength=num_users)
    counts[counts < min_length] = 0
    keep &= (counts > 0)[user]
    kept_rows = np.flatnonzero(keep)                    # (E',) increasing: grouped by user, in time
    if len(kept_rows) == 0:
        raise RecError(f"dataset {name!r}: no user has >= {min_length} interactions after "
                       f"{k}-core filtering; lower the k-core or use more data")

    # Renumber items (keep catalogue order) and users (keep original order). Ids are dense, so
    # bincount finds the survivors in O(E) instead of sorting E values with np.unique.
    present = np.flatnonzero(np.bincount(item[keep], minlength=num_items + 1)[1:]) + 1
    item_map = np.zeros(num_items + 1, dtype=np.int64)
    item_map[present] = np.arange(1, len(present) + 1)
    users_present = np.flatnonzero(counts)
    counts = counts[users_present]                      # (U,) kept events per remaining user
    U = len(users_present)

    ends = np.cumsum(counts)                            # one past each user's last kept event
    test_rows, valid_rows = kept_rows[ends - 1], kept_rows[ends - 2]
    del kept_rows
    is_train = keep
    is_train[test_rows] = False
    is_train[valid_rows] = False
    offsets = np.zeros(U + 1, dtype=np.int64)
    np.cumsum(counts - 2, out=offsets[1:])
    return SplitData(
        name=name,
        train_offsets=offsets,
        train_items=item_map[item[is_train]],
        train_times=ts[is_train].astype(np.int64, copy=False),
        valid_item=item_map[item[valid_rows]],
        valid_time=ts[valid_rows].astype(np.int64, copy=False),
        test_item=item_map[item[test_rows]],
        test_time=ts[test_rows].astype(np.int64, copy=False),
        user_raw_ids=inter.user_raw_ids[users_present],
        catalogue=inter.catalogue.subset(present),
        has_time=inter.has_time,
        fingerprint=fingerprint,
    )
