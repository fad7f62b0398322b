"""Histories -> encoder tokens and the sliding-window training samples."""
import numpy as np
import torch

from onerec.sequences import HistoryTokenizer, TrainingSamples
from retrieval.data.batch import right_aligned
from onerec.vocab import PAD, SidVocab

from onerec_helpers import sids_from_prefixes
from tiny_splits import make_split

PREFIXES = np.array([[0, 3], [1, 2], [1, 2], [1, 0], [3, 3]])   # item i+1 = row i


def _tokenizer(max_items=3, user_tokens=0):
    sids = sids_from_prefixes(PREFIXES, codebook_size=4)
    v = SidVocab.from_semantic_ids(sids, num_user_tokens=user_tokens)
    return HistoryTokenizer(v, v.item_tokens(sids), max_items=max_items, use_user_token=user_tokens > 0)


def test_right_aligned_right_aligns_the_last_items():
    values = np.array([10, 11, 12, 13, 14, 15])
    out = right_aligned(values, np.array([0, 2, 5]), np.array([2, 6, 5]), 3)
    assert out.tolist() == [[0, 10, 11], [13, 14, 15], [0, 0, 0]]


def test_training_samples_are_every_prefix_by_hand():
    split = make_split(train=[[1, 2, 3], [4], [5, 1]], valid=[4, 5, 2], test=[5, 3, 3], num_items=5)
    s = TrainingSamples(split)
    # user 0 predicts 2 from [1] and 3 from [1, 2]; user 1 (one item) nothing; user 2 predicts 1 from [5]
    assert s.users.tolist() == [0, 0, 2]
    assert split.train_items[s.ends].tolist() == [2, 3, 1]
    assert s.history_lengths().tolist() == [1, 2, 1]


def test_batch_tokens_targets_and_padding_by_hand():
    split = make_split(train=[[1, 2, 3], [4], [5, 1]], valid=[4, 5, 2], test=[5, 3, 3], num_items=5)
    tk = _tokenizer(max_items=3)
    b = TrainingSamples(split).batch(np.array([1, 2]), tk)
    # tokens: item1 = [3, 10, 11], item2 = [4, 9, 11], item5 = [6, 10, 11]; the all-padding
    # leading column of items is trimmed, so the width is 2 items x 3 tokens
    assert b.input_ids.tolist() == [[3, 10, 11, 4, 9, 11], [PAD, PAD, PAD, 6, 10, 11]]
    assert b.attention_mask.tolist() == [[1] * 6, [0, 0, 0, 1, 1, 1]]
    assert b.targets.tolist() == [3, 1]
    assert b.labels.tolist() == [[4, 9, 12], [3, 10, 11]]      # item 3 = (1, 2, d=1)


def test_only_the_last_max_items_are_kept_and_the_user_token_comes_last():
    tk = _tokenizer(max_items=2, user_tokens=5)
    items = torch.tensor([[1, 2, 3], [0, 0, 4]])
    ids, mask = tk.encode(torch.tensor([0, 1]), items)
    u = tk.vocab.user_tokens(np.array([0, 1]))
    assert ids.tolist() == [[4, 9, 11, 4, 9, 12, u[0]], [0, 0, 0, 4, 7, 11, u[1]]]
    assert mask.tolist() == [[1] * 7, [0, 0, 0, 1, 1, 1, 1]]


def test_epoch_batches_partition_the_samples_and_depend_only_on_seed_and_epoch():
    rng = np.random.default_rng(0)
    train = [list(rng.integers(1, 6, size=rng.integers(2, 12))) for _ in range(40)]
    split = make_split(train=train, valid=[1] * 40, test=[2] * 40, num_items=5)
    s = TrainingSamples(split)
    b1 = s.epoch_batches(16, seed=3, epoch=0, bucket_batches=4)
    assert sorted(np.concatenate(b1).tolist()) == list(range(len(s)))
    assert all(len(b) <= 16 for b in b1)
    b2 = s.epoch_batches(16, seed=3, epoch=0, bucket_batches=4)
    assert all(np.array_equal(x, y) for x, y in zip(b1, b2))
    b3 = s.epoch_batches(16, seed=3, epoch=1, bucket_batches=4)
    assert not all(np.array_equal(x, y) for x, y in zip(b1, b3))
    # bucketing: inside each window of 4 batches, lengths are sorted, so a batch spans a narrow range
    lengths = s.history_lengths()
    spread_bucketed = np.mean([np.ptp(lengths[b]) for b in b1])
    spread_plain = np.mean([np.ptp(lengths[b]) for b in s.epoch_batches(16, 3, 0, bucket_batches=1)])
    assert spread_bucketed < spread_plain
