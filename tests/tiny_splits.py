"""Shared helpers of the evaluation tests (tests/test_eval_*.py)."""
import numpy as np

from retrieval.data.types import ItemCatalogue, SplitData


def make_split(train, valid, test, num_items) -> SplitData:
    """A SplitData from explicit per-user training sequences and targets (users 0..U-1)."""
    lengths = [len(s) for s in train]
    offsets = np.zeros(len(train) + 1, dtype=np.int64)
    np.cumsum(lengths, out=offsets[1:])
    items = np.array([i for s in train for i in s], dtype=np.int64)
    ids = np.array([""] + [str(i) for i in range(1, num_items + 1)], dtype=object)
    return SplitData(name="hand", train_offsets=offsets, train_items=items,
                     train_times=np.arange(len(items), dtype=np.int64),
                     valid_item=np.array(valid, dtype=np.int64),
                     valid_time=np.full(len(valid), 10**6, dtype=np.int64),
                     test_item=np.array(test, dtype=np.int64),
                     test_time=np.full(len(test), 10**6 + 1, dtype=np.int64),
                     user_raw_ids=np.array([str(u) for u in range(len(train))], dtype=object),
                     catalogue=ItemCatalogue(ids, ids.copy()), has_time=True, fingerprint="hand")
