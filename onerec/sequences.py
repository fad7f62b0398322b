"""Histories -> encoder tokens, and the training samples (every prefix of every training sequence).

Encoder input of one user: the semantic-ID tokens of the last `max_items` history items, oldest first,
right-aligned (left-padded), followed by the optional hashed user token:

    [pad ... pad | c1 c2 c3 d (item t-k) | ... | c1 c2 c3 d (item t-1) | user]

Right alignment keeps every distance between real tokens independent of padding, which matters for
T5's relative position bias. Target: the next item's full ID (L+1 tokens, the disambiguation code
included). Everything here is vectorised gathers over whole batches.
"""
from __future__ import annotations

from typing import NamedTuple

import gin
import numpy as np
import torch

from onerec.vocab import PAD, SidVocab
from retrieval.data.batch import right_aligned
from retrieval.data.types import SplitData


class TokenBatch(NamedTuple):
    """One teacher-forcing batch.

    users:          (B,) int64 user rows.
    input_ids:      (B, T) int64 encoder tokens, PAD on the left.
    attention_mask: (B, T) int64, 1 on real tokens.
    labels:         (B, L+1) int64 target item's tokens.
    targets:        (B,) int64 target item ids.
    """

    users: torch.Tensor
    input_ids: torch.Tensor
    attention_mask: torch.Tensor
    labels: torch.Tensor
    targets: torch.Tensor

    def to(self, device) -> "TokenBatch":
        return TokenBatch(*(t.to(device) for t in self))


@gin.configurable
class HistoryTokenizer:
    """Item-id histories -> encoder tokens (see module docstring).

    max_items: how many of the most recent items the encoder sees.
    use_user_token: append the hashed user token (needs vocab.num_user_tokens > 0).
    """

    def __init__(self, vocab: SidVocab, item_tokens: np.ndarray, max_items: int = 20,
                 use_user_token: bool = True):
        self.vocab = vocab
        self.item_tokens = torch.from_numpy(np.asarray(item_tokens, dtype=np.int64))   # (N+1, L+1)
        self.max_items = int(max_items)
        self.use_user_token = bool(use_user_token) and vocab.num_user_tokens > 0

    def encode(self, users: torch.Tensor, items: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """users (B,), right-aligned item ids (B, H) -> input_ids, attention_mask (B, T).

        Only the last `max_items` items are used; columns that are padding for every row are trimmed,
        so a batch of short histories costs short sequences.
        """
        items = items[:, -self.max_items:]                             # (B, M)
        filled = (items > 0).any(0)
        first = int(torch.nonzero(filled)[0]) if bool(filled.any()) else items.shape[1] - 1
        items = items[:, first:]                                       # drop all-padding columns
        table = self.item_tokens.to(items.device)
        tokens = table[items].flatten(1)                               # (B, M*(L+1))
        if self.use_user_token:
            ut = torch.from_numpy(self.vocab.user_tokens(users.cpu().numpy())).to(items.device)
            tokens = torch.cat([tokens, ut[:, None]], 1)                # (B, M*(L+1)+1)
        return tokens, (tokens != PAD).long()


@gin.configurable
class TrainingSamples:
    """Every prefix of every training sequence: sample (u, e) predicts train_items[e] from the
    items of user u before position e. Stored as two index arrays; batches are gathered on demand.

    min_history: smallest number of history items a sample has (1: every item but each user's first).
    """

    def __init__(self, split: SplitData, min_history: int = 1, tokenizer: "HistoryTokenizer | None" = None):
        off = split.train_offsets
        lengths = np.diff(off)
        n = np.maximum(lengths - min_history, 0)
        self.users = np.repeat(np.arange(split.num_users, dtype=np.int64), n)          # (S,)
        first = np.repeat(off[:-1] + min_history, n)
        within = np.arange(n.sum()) - np.repeat(np.cumsum(n) - n, n)
        self.ends = first + within                                                     # (S,)
        self.starts = off[self.users]
        self.split = split
        self.tokenizer = tokenizer

    def __len__(self) -> int:
        return len(self.users)

    def history_lengths(self) -> np.ndarray:
        return self.ends - self.starts

    def row_counts(self, idx: np.ndarray) -> np.ndarray:
        """Supervised targets of each sample in `idx` (one each; the weights of their mean loss)."""
        return np.ones(len(idx), dtype=np.int64)

    def count(self, idx: np.ndarray) -> int:
        return len(idx)

    def batch(self, idx: np.ndarray, tokenizer: HistoryTokenizer | None = None) -> TokenBatch:
        """Token batch of samples `idx` (with `tokenizer`, or the one given at construction)."""
        tokenizer = tokenizer or self.tokenizer
        items = self.split.train_items
        hist = right_aligned(items, self.starts[idx], self.ends[idx], tokenizer.max_items)
        users = torch.from_numpy(self.users[idx])
        input_ids, mask = tokenizer.encode(users, torch.from_numpy(hist))
        targets = torch.from_numpy(items[self.ends[idx]])
        labels = tokenizer.item_tokens[targets]
        return TokenBatch(users, input_ids, mask, labels, targets)

    def epoch_batches(self, batch_size: int, seed: int, epoch: int,
                      bucket_batches: int = 50) -> list[np.ndarray]:
        """The sample indices of every batch of one epoch, a pure function of (seed, epoch).

        Samples are shuffled, then sorted by history length inside windows of `bucket_batches`
        batches (so a batch pads to similar lengths), and the batch order is shuffled again.
        bucket_batches 0 turns the length bucketing off (as ScorerTrainer.bucket_batches).
        """
        rng = np.random.default_rng([seed, epoch])
        perm = rng.permutation(len(self))
        if bucket_batches > 0:
            lengths = self.history_lengths()[perm]
            window = batch_size * bucket_batches
            win = np.arange(len(perm)) // window
            perm = perm[np.lexsort((lengths, win))]
        batches = [perm[s:s + batch_size] for s in range(0, len(perm), batch_size)]
        order = rng.permutation(len(batches))
        return [batches[i] for i in order]
