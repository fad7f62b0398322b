"""Exact constrained beam search over semantic IDs, batched over users x beams (docs/protocol.md §6).

At step t (t = 0..L) every beam's candidates are the codes that extend its prefix towards some real
item (one gather in the prefix trie); all other tokens are masked. A candidate scores the beam's sum
of log-probabilities plus the token's log-probability under the full-vocabulary softmax, exactly as
`transformers` `generate(num_beams=B, prefix_allowed_tokens_fn=...)` scores it, and the B best
candidates of each user survive. After the L+1 steps each beam is a complete ID, i.e. one item, and
two beams are never the same item (they are distinct paths of a trie whose leaves are items).

History exclusion (optional) masks the excluded items at the last step, so the B returned items are
B items outside the history whenever that many remain under the surviving prefixes.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

import torch

from onerec.prefix_trie import PrefixTrie
from retrieval.core.errors import RecError


class StepDecoder(Protocol):
    num_users: int

    def start_tokens(self) -> torch.Tensor: ...          # (U,) first input token, one beam per user

    def step(self, tokens: torch.Tensor, lo: int, hi: int) -> torch.Tensor: ...  # (R,) -> (R, hi-lo) log-probs

    def reorder(self, index: torch.Tensor) -> None: ...  # new row r <- old row index[r]


@dataclass
class BeamResult:
    """Ranked beams per user, best first.

    items:  (U, B) int64 item ids, 0 in empty slots (fewer than B reachable items).
    scores: (U, B) float32 sum of token log-probabilities, -inf in empty slots.
    tokens: (U, B, L+1) int64 generated tokens.
    """

    items: torch.Tensor
    scores: torch.Tensor
    tokens: torch.Tensor


@torch.no_grad()
def constrained_beam_search(decoder: StepDecoder, trie: PrefixTrie, beam_width: int,
                            exclude: torch.Tensor | None = None) -> BeamResult:
    """Run L+1 constrained steps; `exclude` (U, N+1) bool marks items that may not be returned."""
    if beam_width < 1:
        raise RecError(f"beam width must be >= 1, got {beam_width}")
    U, B = decoder.num_users, int(beam_width)
    steps = trie.vocab.id_length
    tokens_in = decoder.start_tokens()                                  # (U,)
    device = tokens_in.device
    users = torch.arange(U, device=device)[:, None]                     # (U, 1)
    node = torch.zeros(U, 1, dtype=torch.long, device=device)           # (U, nb) trie node per beam
    score = torch.zeros(U, 1, device=device)                            # (U, nb)
    history = torch.zeros(U, 1, 0, dtype=torch.long, device=device)     # (U, nb, t)
    neg_inf = torch.tensor(-torch.inf, device=device)
    for t in range(steps):
        nb = node.shape[1]
        children = trie.step_children(t)
        W = children.shape[1]
        off = int(trie.vocab.offsets[t])
        logp = decoder.step(tokens_in, off, off + W).view(U, nb, W)     # (U, nb, W)
        child = children[node.clamp(min=0)].long()                      # (U, nb, W)
        valid = (child >= 0) & (node >= 0)[..., None]
        if exclude is not None and t == steps - 1:
            valid &= ~exclude.gather(1, child.clamp(min=0).view(U, nb * W)).view(U, nb, W)
        cand = torch.where(valid, score[..., None] + logp, neg_inf).view(U, nb * W)
        k = min(B, nb * W)
        top, idx = cand.topk(k, dim=1)                                  # (U, k), best first
        beam, code = idx // W, idx % W
        new_node = torch.where(torch.isneginf(top), -1, child.view(U, nb * W).gather(1, idx))
        if k < B:                                                        # too few candidates: pad
            pad = B - k
            top = torch.cat([top, neg_inf.expand(U, pad)], 1)
            beam = torch.cat([beam, beam.new_zeros(U, pad)], 1)
            code = torch.cat([code, code.new_zeros(U, pad)], 1)
            new_node = torch.cat([new_node, new_node.new_full((U, pad), -1)], 1)
        tok = off + code                                                 # (U, B)
        history = torch.cat([history.gather(1, beam[..., None].expand(U, B, t)), tok[..., None]], 2)
        score, node, tokens_in = top, new_node, tok.flatten()
        if t < steps - 1:
            decoder.reorder((users * nb + beam).flatten())               # rows stay user-major
    items = torch.where(node >= 0, node, 0)
    return BeamResult(items=items, scores=score, tokens=history)
