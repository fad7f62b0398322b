"""The cold-start protocol (retrieval.data.cold_start): a fixed share of items is new, their events
leave every training sequence (and so every training batch), evaluation targets stay."""
from __future__ import annotations

import gin
import numpy as np
import pytest

from onerec.item_windows import ItemWindows
from retrieval.core.errors import RecError
from retrieval.data.cold_start import hold_out_new_items, new_item_mask
from retrieval.data.registry import load_split
from retrieval.scorers.sequences import TrainingSequences

from tiny_splits import synthetic_split


def test_the_mask_is_a_fixed_seeded_share_of_real_items():
    a, b = new_item_mask(1000, 0.05, seed=0), new_item_mask(1000, 0.05, seed=0)
    assert np.array_equal(a, b) and a.sum() == 50 and not a[0] and a.shape == (1001,)
    assert not np.array_equal(a, new_item_mask(1000, 0.05, seed=1))
    for bad in (-0.1, 1.0, "5%", True):
        with pytest.raises(RecError, match="load_split.new_items"):
            new_item_mask(10, bad)


def test_new_items_leave_the_training_sequences_and_every_training_batch():
    split = synthetic_split(num_users=150, num_items=80, k=2, mean_length=12.0)
    cold = hold_out_new_items(split, 0.1, seed=0)
    new = cold.new_items
    assert new.sum() == 8 and not new[cold.train_items].any()
    # the other events are kept, in order, user by user
    for u in range(split.num_users):
        before = split.train_items[split.train_offsets[u]:split.train_offsets[u + 1]]
        after = cold.train_items[cold.train_offsets[u]:cold.train_offsets[u + 1]]
        assert after.tolist() == [i for i in before.tolist() if not new[i]]
    assert np.array_equal(cold.valid_item, split.valid_item) and np.array_equal(cold.test_item, split.test_item)
    assert new[cold.test_item].any()                        # some test targets are new items
    assert cold.fingerprint != split.fingerprint and cold.num_items == split.num_items
    seen = set()
    data = TrainingSequences(cold, maxlen=12)
    for idx in data.batches(np.random.default_rng(0), 16, bucket_batches=2):
        b = data.batch(idx)
        seen |= set(b.items.ravel().tolist()) | set(b.targets.ravel().tolist())
    windows = ItemWindows(cold, 6)
    for idx in windows.epoch_batches(16, seed=0, epoch=0):
        b = windows.batch(idx)
        seen |= set(b.items.ravel().tolist()) | set(b.targets.ravel().tolist())
    assert seen and not new[np.array(sorted(seen))].any()


def test_load_split_applies_the_protocol_only_when_asked():
    gin.clear_config()
    plain = load_split(name="synthetic")
    assert plain.new_items is None
    again = load_split(name="synthetic", new_items=0.0)
    assert again.fingerprint == plain.fingerprint and np.array_equal(again.train_items, plain.train_items)
    cold = load_split(name="synthetic", new_items=0.05, new_items_seed=0)
    assert cold.new_items.sum() == round(0.05 * plain.num_items)
    assert cold.fingerprint not in (plain.fingerprint, load_split(name="synthetic", new_items=0.05,
                                                                  new_items_seed=1).fingerprint)
