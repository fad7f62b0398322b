"""The generator's token vocabulary (docs/protocol.md §6): special tokens, level-offset code tokens, a separate
range for the disambiguation code, and optional hashed user tokens.

Layout (K = codebook size, L = quantizer levels, D = disambiguation codes, H = user hash buckets):

    0 pad | 1 bos (decoder start) | 2 eos | level 0: 3 .. 3+K-1 | ... | level L-1 | d: D tokens | users: H

A token is `offset_l + code`, so the same code at two levels is two different tokens and every decoding
step has its own contiguous token range.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from retrieval.core.errors import RecError
from rqvae.artifact import SemanticIds

PAD, BOS, EOS = 0, 1, 2
NUM_SPECIAL = 3
_HASH_MULT = 2654435761                               # Knuth's multiplicative hash constant


@dataclass(frozen=True)
class SidVocab:
    """Token layout for L levels of K codes plus D disambiguation codes and H user buckets."""

    levels: int
    codebook_size: int
    num_disambiguation: int
    num_user_tokens: int = 0

    @classmethod
    def from_semantic_ids(cls, sids: SemanticIds, num_user_tokens: int = 0) -> "SidVocab":
        return cls(sids.levels, int(sids.codebook_size), sids.num_disambiguation, int(num_user_tokens))

    @property
    def id_length(self) -> int:
        """Tokens per item: L codes + the disambiguation code."""
        return self.levels + 1

    @property
    def offsets(self) -> np.ndarray:
        """(L+1,) first token of each decoding step's range (the last one is the d range)."""
        return NUM_SPECIAL + self.codebook_size * np.arange(self.levels + 1, dtype=np.int64)

    @property
    def widths(self) -> np.ndarray:
        """(L+1,) size of each step's token range."""
        return np.array([self.codebook_size] * self.levels + [self.num_disambiguation], dtype=np.int64)

    @property
    def user_offset(self) -> int:
        return NUM_SPECIAL + self.codebook_size * self.levels + self.num_disambiguation

    @property
    def size(self) -> int:
        return self.user_offset + self.num_user_tokens

    def encode_codes(self, codes: np.ndarray) -> np.ndarray:
        """Codes (..., L+1) -> tokens (..., L+1); rows of -1 (the padding item) become PAD."""
        codes = np.asarray(codes, dtype=np.int64)
        if codes.shape[-1] != self.id_length:
            raise RecError(f"semantic IDs have {codes.shape[-1]} columns, the vocabulary expects "
                           f"{self.id_length} (L={self.levels} codes + 1 disambiguation code)")
        pad = (codes == -1).all(-1, keepdims=True)        # the padding item's row
        bad = ~pad & ((codes >= self.widths) | (codes < 0))
        if bad.any():
            raise RecError(f"semantic IDs hold codes outside the codebook (K={self.codebook_size}, "
                           f"D={self.num_disambiguation}); the artifact is damaged, re-run "
                           "scripts/train_rqvae.py")
        return np.where(pad, PAD, codes + self.offsets)

    def item_tokens(self, sids: SemanticIds) -> np.ndarray:
        """(N+1, L+1) token row of every item id; row 0 (padding item) is all PAD."""
        return self.encode_codes(sids.codes)

    def user_tokens(self, users: np.ndarray) -> np.ndarray:
        """Hashed user token of each user row (docs/protocol.md §6); requires num_user_tokens > 0."""
        h = (np.asarray(users, dtype=np.uint64) * np.uint64(_HASH_MULT)) % np.uint64(1 << 32)
        return self.user_offset + (h % np.uint64(self.num_user_tokens)).astype(np.int64)

    def tokens_to_codes(self, tokens: np.ndarray) -> np.ndarray:
        """Tokens (..., L+1) -> codes (..., L+1); a token outside its step's range gives -1."""
        codes = np.asarray(tokens, dtype=np.int64) - self.offsets
        return np.where((codes >= 0) & (codes < self.widths), codes, -1)


class ItemDecoder:
    """Token tuples -> item ids by exact lookup of the full ID (all L codes and d).

    Independent of the prefix trie: a sorted table of mixed-radix keys, searched vectorised.
    """

    def __init__(self, vocab: SidVocab, codes: np.ndarray):
        self.vocab = vocab
        radix = vocab.widths
        if float(np.prod(radix.astype(np.float64))) >= 2.0 ** 62:
            raise RecError(f"semantic IDs with L={vocab.levels} levels of K={vocab.codebook_size} codes "
                           "do not fit a 62-bit key; use fewer levels or a smaller codebook")
        self._radix = radix
        keys = self._keys(np.asarray(codes[1:], dtype=np.int64))
        order = np.argsort(keys, kind="stable")
        self._keys_sorted = keys[order]
        self._items = order + 1
        if len(keys) and (np.diff(self._keys_sorted) == 0).any():
            raise RecError("semantic IDs are not unique per item (two items share all L codes and "
                           "the disambiguation code); the artifact is damaged, re-run "
                           "scripts/train_rqvae.py")

    def _keys(self, codes: np.ndarray) -> np.ndarray:
        key = np.zeros(codes.shape[:-1], dtype=np.int64)
        for col, r in enumerate(self._radix):
            key = key * int(r) + codes[..., col]
        return key

    def decode(self, tokens: np.ndarray) -> np.ndarray:
        """Tokens (..., L+1) -> item ids (...); 0 where the tuple is no item's ID."""
        codes = self.vocab.tokens_to_codes(tokens)
        valid = (codes >= 0).all(-1)
        key = self._keys(np.where(codes >= 0, codes, 0))
        pos = np.minimum(np.searchsorted(self._keys_sorted, key), max(len(self._keys_sorted) - 1, 0))
        if len(self._keys_sorted) == 0:
            return np.zeros(key.shape, dtype=np.int64)
        hit = valid & (self._keys_sorted[pos] == key)
        return np.where(hit, self._items[pos], 0)
