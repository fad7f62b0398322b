"""Small splits the tests build: by hand from explicit sequences, or from the built-in synthetic
generator. Shared by the tests of every package (tests/ is on sys.path through its conftest.py)."""
import numpy as np

from retrieval.data.sources_synthetic import SyntheticSource
from retrieval.data.split import leave_one_out
from retrieval.data.types import ItemCatalogue, SplitData


def make_split(train, valid, test, num_items, fingerprint: str = "hand") -> SplitData:
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
                     catalogue=ItemCatalogue(ids, ids.copy()), has_time=True, fingerprint=fingerprint)


def synthetic_split(num_users: int, num_items: int, k: int, mean_length: float = 20.0, seed: int = 0,
                    fingerprint: str | None = None) -> SplitData:
    """The synthetic generator's users x items, k-core filtered and split leave-one-out."""
    src = SyntheticSource(num_users=num_users, num_items=num_items, mean_length=mean_length, seed=seed)
    return leave_one_out(src.load(), name="synthetic", k=k,
                         fingerprint=fingerprint or f"syn-{seed}-{num_users}-{num_items}")
