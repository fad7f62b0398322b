"""Auxiliary losses from the design notes (docs/protocol.md §5): semantic consistency and long/short-term
interest contrast. Both are added to the main loss with a weight λ.

Semantic consistency (seed 001). For a scored pair (history, item, label y) let item' be a
semantically similar item and sign = 2y - 1:
  positive-only  L = softplus(-sign · (s(item') - s(item)))
  pos-neg        L = mean_k softplus(-sign · (s(item') - s(neg_k)))
so for y = 1 the similar item is pushed above the item (or above the negatives) and for y = 0 below.
item' comes from a similar-item table (N+1, k): FAISS neighbours in content-embedding space
(`neighbour_table`) or items sharing a semantic-ID prefix (`prefix_table`); 0 = no similar item, and
such pairs are left out of the mean.

Interest contrast (seed 004). L_proxy = mean embedding of the whole history (padding masked),
S_proxy = mean of the last k items; L_int, S_int come from the encoder;
  loss = BPR(L_int, L_proxy, S_proxy) + BPR(S_int, S_proxy, L_proxy)
       + BPR(L_proxy, L_int, S_int) + BPR(S_proxy, S_int, L_int),
  BPR(a, p, n) = mean softplus(<a, n> - <a, p>).
"""
from __future__ import annotations

import gin
import torch
import torch.nn.functional as F
from torch import nn

from retrieval.core.errors import RecError
# The tables are built below the scorers (stage 1 builds them too); re-exported for callers here.
from retrieval.negatives.similar_item_tables import neighbour_table, prefix_table  # noqa: F401


def draw_similar(table: torch.Tensor, items: torch.Tensor, generator: torch.Generator | None = None,
                 keys: torch.Tensor | None = None) -> torch.Tensor:
    """One similar item per entry of `items` (any shape), drawn uniformly among the table's
    nonzero columns of that item's row; 0 where the item has none (or is padding).

    keys: optional uniform [0, 1) draws of shape items.shape + (k,) to use instead of torch.rand
    (the trainer passes draws of a numpy Generator, whose state is saved in its checkpoints)."""
    rows = table[items]                                                 # (..., k)
    valid = rows > 0
    # Random keys, -1 on empty slots, so the argmax is a uniform choice among the valid ones.
    if keys is None:
        keys = torch.rand(rows.shape, generator=generator, device=rows.device)
    pick = torch.where(valid, keys, torch.full_like(keys, -1.0)).argmax(-1, keepdim=True)
    return rows.gather(-1, pick).squeeze(-1)


# -- semantic-consistency losses ----------------------------------------------------------------
def _masked_mean(x: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
    if mask is None:
        return x.mean()
    m = mask.to(x.dtype)
    return (x * m).sum() / m.sum().clamp(min=1.0)


def positive_only_loss(s_item: torch.Tensor, s_similar: torch.Tensor, labels: torch.Tensor,
                       mask: torch.Tensor | None = None) -> torch.Tensor:
    """mean softplus(-sign · (s(item') - s(item))), sign = 2y - 1; all inputs (...), mask bool."""
    sign = 2.0 * labels.to(s_item.dtype) - 1.0
    return _masked_mean(F.softplus(-sign * (s_similar - s_item)), mask)


def pos_neg_loss(s_similar: torch.Tensor, s_neg: torch.Tensor, labels: torch.Tensor,
                 mask: torch.Tensor | None = None) -> torch.Tensor:
    """mean over pairs of mean_k softplus(-sign · (s(item') - s(neg_k))).

    s_similar, labels, mask: (...); s_neg: (..., K).
    """
    sign = (2.0 * labels.to(s_similar.dtype) - 1.0)[..., None]
    per_pair = F.softplus(-sign * (s_similar[..., None] - s_neg)).mean(-1)
    return _masked_mean(per_pair, mask)


@gin.configurable
class SemanticConsistencyLoss(nn.Module):
    """λ · semantic-consistency loss for sequence training with positives and sampled negatives.

    mode: "positive_only" | "pos_neg".  weight: λ (0 = off, the default: the scorer trainer adds the
    term only when weight > 0).  num_negatives: negatives drawn from the trainer's sampler for
    "pos_neg" when the main loss samples none (full CE, in-batch InfoNCE).
    forward(s_pos (...,), s_neg (..., K), s_pos_similar (...,), s_neg_similar (..., K) | None,
            mask (...,) bool) where s_* are the model's scores of the positive, the negatives and
    their similar items at each position, mask = positions that have a target and a similar item.
      positive_only: the positive (y = 1) against its similar item, and, when s_neg_similar is given,
                     each negative (y = 0) against its similar item;
      pos_neg:       the positive's similar item against the K negatives (y = 1).
    """

    MODES = ("positive_only", "pos_neg")

    def __init__(self, mode: str = "positive_only", weight: float = 0.0, num_negatives: int = 4):
        super().__init__()
        if mode not in self.MODES:
            raise RecError(f"SemanticConsistencyLoss.mode={mode!r} is unknown; choose one of "
                           f"{', '.join(self.MODES)}")
        if weight < 0 or num_negatives < 1:
            raise RecError(f"SemanticConsistencyLoss.weight={weight} must be >= 0 and num_negatives="
                           f"{num_negatives} >= 1; fix them in the gin config")
        self.mode, self.weight, self.num_negatives = mode, weight, num_negatives

    def forward(self, s_pos, s_neg, s_pos_similar, s_neg_similar=None, mask=None, neg_mask=None):
        ones = torch.ones_like(s_pos_similar)
        if self.mode == "pos_neg":                                       # s_pos is not used
            return self.weight * pos_neg_loss(s_pos_similar, s_neg, ones, mask)
        loss = positive_only_loss(s_pos, s_pos_similar, ones, mask)
        if s_neg_similar is not None:
            loss = loss + positive_only_loss(s_neg, s_neg_similar, torch.zeros_like(s_neg), neg_mask)
        return self.weight * loss


# -- long/short-term interest contrast ------------------------------------------------------------
def interest_proxies(item_vectors: torch.Tensor, items: torch.Tensor, short_k: int
                     ) -> tuple[torch.Tensor, torch.Tensor]:
    """(L_proxy, S_proxy), each (B, d), from right-aligned histories.

    item_vectors: (B, L, d) embeddings of `items` (B, L) (0 = padding, left). L_proxy averages every
    real item; S_proxy the last `short_k` real items (the last columns, since rows are right-aligned).
    An empty history gives zero proxies.
    """
    valid = (items > 0).to(item_vectors.dtype)[..., None]               # (B, L, 1)
    recent = torch.zeros_like(valid)
    recent[:, -short_k:] = 1.0
    recent = recent * valid
    long_p = (item_vectors * valid).sum(1) / valid.sum(1).clamp(min=1.0)
    short_p = (item_vectors * recent).sum(1) / recent.sum(1).clamp(min=1.0)
    return long_p, short_p


def bpr(anchor: torch.Tensor, pos: torch.Tensor, neg: torch.Tensor) -> torch.Tensor:
    """mean softplus(<a, n> - <a, p>) over the batch; inputs (B, d)."""
    return F.softplus((anchor * neg).sum(-1) - (anchor * pos).sum(-1)).mean()


def interest_contrast_loss(long_int: torch.Tensor, short_int: torch.Tensor, long_proxy: torch.Tensor,
                           short_proxy: torch.Tensor) -> torch.Tensor:
    """The four BPR terms of seed 004 (each interest nearer its own proxy than the other's, and back)."""
    return (bpr(long_int, long_proxy, short_proxy) + bpr(short_int, short_proxy, long_proxy)
            + bpr(long_proxy, long_int, short_int) + bpr(short_proxy, short_int, long_int))


@gin.configurable
class InterestContrastLoss(nn.Module):
    """λ · interest contrast. forward(long_int (B, d), short_int (B, d), item_vectors (B, L, d),
    items (B, L)); the proxies are built from item_vectors with `short_k` recent items.
    weight: λ (0 = off, the default: the scorer trainer adds the term only when weight > 0)."""

    def __init__(self, short_k: int = 3, weight: float = 0.0):
        super().__init__()
        if short_k < 1 or weight < 0:
            raise RecError(f"InterestContrastLoss.short_k must be >= 1 and weight >= 0, got "
                           f"short_k={short_k}, weight={weight}")
        self.short_k, self.weight = short_k, weight

    def forward(self, long_int, short_int, item_vectors, items):
        long_p, short_p = interest_proxies(item_vectors, items, self.short_k)
        return self.weight * interest_contrast_loss(long_int, short_int, long_p, short_p)
