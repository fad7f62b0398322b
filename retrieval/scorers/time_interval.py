"""TiSASRec's time-interval relations and the attention that uses them (docs/protocol.md §5).

Relation matrix, per user window: r_ij = min(round(|t_i − t_j| / g), time_span), where g is the
user's smallest nonzero gap between two of the window's timestamps (1 when all are equal), and
r_ij = 0 where i or j is padding. It is computed with tensor ops over the whole batch.

The attention (Li, Wang & McAuley, WSDM 2020) adds, for query i and key j,
    score_ij = q_i · (k_j + P^K_j + T^K[r_ij]) / √d_h
    out_i    = Σ_j a_ij (v_j + P^V_j + T^V[r_ij])
with absolute position embeddings P^K, P^V and interval embeddings T^K, T^V. The reference builds the
(B, L, L, d) tensors T^K[r], T^V[r]; here the same sums are computed without them:
    q_i · T^K[r_ij] = (q_i · T^Kᵀ)[r_ij]                         a gather from (B, h, L, S+1)
    Σ_j a_ij T^V[r_ij] = (Σ_j a_ij e_{r_ij}) · T^V                a scatter-add into (B, h, L, S+1)
which is O(L·S) memory instead of O(L²·d) (S = time_span + 1), the difference between 6 MB and 1 GB
per batch at L = 200.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


def time_relation_matrix(times: torch.Tensor, valid: torch.Tensor, time_span: int = 256) -> torch.Tensor:
    """(B, L) int64 timestamps + (B, L) bool non-padding mask -> (B, L, L) int64 relations."""
    pair = valid[:, :, None] & valid[:, None, :]                         # (B, L, L)
    diff = (times[:, :, None] - times[:, None, :]).abs()                  # (B, L, L)
    big = torch.iinfo(torch.int64).max
    gap = torch.where(pair & (diff > 0), diff, big).amin(dim=(1, 2))      # (B,) smallest nonzero gap
    gap = torch.where(gap == big, torch.ones_like(gap), gap)
    # float64 division then round-half-to-even, the same arithmetic as Python's round(a / b).
    rel = torch.round(diff.double() / gap.double()[:, None, None]).clamp_(max=time_span).long()
    return rel * pair


class TimeIntervalAttention(nn.Module):
    """Multi-head causal self-attention with TiSASRec's position and interval terms.

    forward(x (B, L, d), ctx) where ctx carries: mask (B, 1, L, L) bool (True = may attend),
    pos_k, pos_v (B, L, d) position embeddings, time_k, time_v (S+1, d) interval tables,
    relation (B, L, L) int64.
    """

    def __init__(self, dim: int, heads: int, dropout: float):
        super().__init__()
        self.heads, self.dh = heads, dim // heads
        self.q = nn.Linear(dim, dim)
        self.k = nn.Linear(dim, dim)
        self.v = nn.Linear(dim, dim)
        self.dropout = dropout

    def _split(self, t: torch.Tensor) -> torch.Tensor:
        return t.unflatten(-1, (self.heads, self.dh)).transpose(-3, -2)  # (B, L, d) -> (B, h, L, dh)

    def forward(self, x: torch.Tensor, ctx) -> torch.Tensor:
        B, L, d = x.shape
        h, S1 = self.heads, ctx.time_k.shape[0]
        q, k, v = self._split(self.q(x)), self._split(self.k(x)), self._split(self.v(x))
        pk, pv = self._split(ctx.pos_k), self._split(ctx.pos_v)
        tk = ctx.time_k.view(S1, h, self.dh).transpose(0, 1)              # (h, S+1, dh)
        tv = ctx.time_v.view(S1, h, self.dh).transpose(0, 1)
        rel = ctx.relation[:, None].expand(B, h, L, L)                    # (B, h, L, L)

        scores = q @ (k + pk).transpose(-1, -2)                           # (B, h, L, L)
        q_t = torch.einsum("bhld,hsd->bhls", q, tk.to(q.dtype))           # (B, h, L, S+1)
        scores = scores + q_t.gather(-1, rel)
        scores = scores / self.dh ** 0.5
        scores = scores.masked_fill(~ctx.mask, float("-inf"))
        attn = torch.softmax(scores, dim=-1)
        attn = F.dropout(attn, self.dropout, self.training)

        out = attn @ (v + pv)                                             # (B, h, L, dh)
        bins = torch.zeros(B, h, L, S1, dtype=attn.dtype, device=attn.device)
        bins = bins.scatter_add(-1, rel, attn)                            # Σ_j a_ij e_{r_ij}
        out = out + torch.einsum("bhls,hsd->bhld", bins, tv.to(attn.dtype))
        return out.transpose(1, 2).flatten(-2)                            # (B, L, d)
