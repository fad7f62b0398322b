"""The training examples of the sequential scorers (SASRec's all-position next-item form).

For each user with >= 2 training items, input = train[:-1] and targets = train[1:] (the last `maxlen`
of each, right-aligned, left-padded); every non-padding position is a prediction. A model may supply
its own examples in the same form (BERT4Rec: masked items as input, targets at the masked positions).
Batches are one vectorised gather each, trimmed to the longest row: no DataLoader, no worker queue.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from retrieval.core.errors import RecError
from retrieval.data.batch import right_aligned
from retrieval.data.types import SplitData


@dataclass(frozen=True)
class TrainBatch:
    """users (B,); items, times, targets (B, L) right-aligned, 0 = padding; L ≤ maxlen."""

    users: np.ndarray
    items: np.ndarray
    times: np.ndarray
    targets: np.ndarray


class TrainingSequences:
    """The training examples of a split (users with ≥ 2 training items)."""

    def __init__(self, split: SplitData, maxlen: int):
        lengths = split.train_lengths
        self.users = np.nonzero(lengths >= 2)[0].astype(np.int64)
        if len(self.users) == 0:
            raise RecError(f"dataset {split.name!r}: no user has >= 2 training items; nothing to train on")
        self.starts = split.train_offsets[self.users]
        self.ends = split.train_offsets[self.users + 1]
        self.items, self.times, self.maxlen = split.train_items, split.train_times, maxlen

    def __len__(self) -> int:
        return len(self.users)

    @property
    def num_positions(self) -> int:
        """Non-padding predictions in one epoch."""
        return int(np.minimum(self.ends - self.starts - 1, self.maxlen).sum())

    def batches(self, rng: np.random.Generator, batch_size: int, bucket_batches: int) -> list[np.ndarray]:
        """One epoch's batches (indices into the examples), every example once, random order.

        bucket_batches > 0: a random permutation is cut into chunks of that many batches, each chunk
        is sorted by sequence length before it is cut into batches, and the batches are shuffled.
        Rows of a batch then have similar lengths, so little of the (B, L) batch is padding (on
        Beauty, 89% of a random batch is), while the examples a batch holds stay random.
        """
        order = rng.permutation(len(self))
        if bucket_batches > 0:
            chunk = np.arange(len(order)) // (batch_size * bucket_batches)
            order = order[np.lexsort(((self.ends - self.starts)[order], chunk))]
        cuts = [order[s:s + batch_size] for s in range(0, len(order), batch_size)]
        if bucket_batches > 0:
            cuts = [cuts[i] for i in rng.permutation(len(cuts))]
        return cuts

    def batch(self, idx: np.ndarray) -> TrainBatch:
        s, e = self.starts[idx], self.ends[idx]
        width = int(min(self.maxlen, (e - s).max() - 1))                  # longest input in the batch
        return TrainBatch(self.users[idx],
                          right_aligned(self.items, s, e - 1, width),
                          right_aligned(self.times, s, e - 1, width),
                          right_aligned(self.items, s + 1, e, width))


class NextItemExamples:
    """Mixin of the next-item scorers (SASRec family, GRU4Rec): the examples ScorerTrainer trains
    them on are every next item of every user (BERT4Rec supplies masked items instead)."""

    def training_sequences(self, split: SplitData) -> TrainingSequences:
        return TrainingSequences(split, self.maxlen)
