"""The prefix structure of all valid semantic IDs, as dense per-step tables (docs/protocol.md §6).

Every distinct prefix of length t (t = 0..L) is a node at depth t. For each depth a table

    children[t]: (num_nodes_t, width_t) int32

holds, for a node and a code of step t, the child node at depth t+1 (or, at the last step t = L, the
item id whose full ID ends there), and -1 where no item's ID continues that way. Masking a decoding step
is then one gather `children[t][node]`, and walking a finished path yields exactly one item.
"""
from __future__ import annotations

import numpy as np
import torch

from onerec.vocab import ItemDecoder, SidVocab
from retrieval.core.errors import RecError


class PrefixTrie(torch.nn.Module):
    """Built once from the semantic-ID codes (N+1, L+1) (row 0 = padding item, ignored).

    Buffers are non-persistent: they follow `.to(device)` but are not part of a checkpoint, since
    they are rebuilt from the artifact.
    """

    def __init__(self, vocab: SidVocab, codes: np.ndarray):
        super().__init__()
        codes = np.asarray(codes, dtype=np.int64)
        ItemDecoder(vocab, codes)                          # raises on duplicate full IDs
        self.vocab = vocab
        self.num_items = codes.shape[0] - 1
        items = codes[1:]                                  # (N, L+1)
        widths = vocab.widths
        if items.size and ((items < 0) | (items >= widths)).any():
            raise RecError("semantic IDs hold codes outside the codebook; the artifact is damaged, "
                           "re-run scripts/train_rqvae.py")
        node = np.zeros(self.num_items, dtype=np.int64)    # every item starts at the root
        num_nodes = 1
        self.num_nodes: list[int] = []
        for t in range(vocab.id_length):
            table = np.full((num_nodes, int(widths[t])), -1, dtype=np.int32)
            if t < vocab.levels:
                # children = distinct (parent, code) pairs, numbered in sorted order
                pair = node * int(widths[t]) + items[:, t]
                uniq, child = np.unique(pair, return_inverse=True)
                table[uniq // widths[t], uniq % widths[t]] = np.arange(len(uniq), dtype=np.int32)
                node, next_nodes = child.reshape(-1), len(uniq)
            else:
                table[node, items[:, t]] = np.arange(1, self.num_items + 1, dtype=np.int32)
                next_nodes = self.num_items
            self.register_buffer(f"children_{t}", torch.from_numpy(table), persistent=False)
            self.num_nodes.append(num_nodes)
            num_nodes = next_nodes
        self.register_buffer("offsets", torch.from_numpy(vocab.offsets), persistent=False)

    def step_children(self, t: int) -> torch.Tensor:
        """(num_nodes_t, width_t) child node (item id at the last step), -1 = not a valid prefix."""
        return getattr(self, f"children_{t}")

    def allowed_tokens(self, prefix_tokens: list[int]) -> list[int]:
        """Tokens that extend `prefix_tokens` (0..L tokens) towards some item: a reference API
        (used with `transformers` `prefix_allowed_tokens_fn`), one prefix at a time."""
        t = len(prefix_tokens)
        if t > self.vocab.levels:
            return []
        node = 0
        for s, tok in enumerate(prefix_tokens):
            code = int(tok) - int(self.vocab.offsets[s])
            if not 0 <= code < int(self.vocab.widths[s]):
                return []
            node = int(self.step_children(s)[node, code])
            if node < 0:
                return []
        codes = torch.nonzero(self.step_children(t)[node] >= 0).flatten()
        return (codes + int(self.vocab.offsets[t])).tolist()

    def walk(self, tokens: torch.Tensor) -> torch.Tensor:
        """Tokens (..., L+1) -> item ids (...), 0 where the tuple is no item's ID (vectorised)."""
        node = torch.zeros(tokens.shape[:-1], dtype=torch.long, device=tokens.device)
        alive = torch.ones_like(node, dtype=torch.bool)
        for t in range(self.vocab.id_length):
            code = tokens[..., t] - self.offsets[t]
            ok = alive & (code >= 0) & (code < self.step_children(t).shape[1]) & (node >= 0)
            nxt = self.step_children(t)[node.clamp(min=0), code.clamp(0, self.step_children(t).shape[1] - 1)]
            node = torch.where(ok, nxt.long(), -1)
            alive = ok & (node >= 0)
        return torch.where(alive, node, 0)
