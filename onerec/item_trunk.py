"""The trunk both item-level generators share: one position per history item, built from the item's
semantic-ID code embeddings (no per-item table), read by a causal pre-LN Transformer.

    item i ─ code_scale · Σ_l C[token_l(i)] (+ optional per-item embedding) + position ─ LayerNorm
      ─ dropout ─ num_layers × CausalBlock ─ LayerNorm ─ state h_t (one per item)

The state at position t sees items 1..t only, so one forward pass gives a prediction at every
position (SASRec-style all-position training).
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from onerec.item_windows import ItemWindows
from onerec.vocab import PAD, SidVocab
from retrieval.data.batch import HistoryBatch
from retrieval.data.types import SplitData
from retrieval.core.errors import RecError


class CausalBlock(nn.Module):
    """Pre-LN Transformer block: x + Attn(LN(x)), then x + FFN(LN(x)) (GELU, d -> ffn_mult·d -> d)."""

    def __init__(self, dim: int, heads: int, ffn_mult: int, dropout: float):
        super().__init__()
        self.heads, self.dropout = heads, dropout
        self.ln1, self.ln2 = nn.LayerNorm(dim), nn.LayerNorm(dim)
        self.qkv, self.proj = nn.Linear(dim, 3 * dim), nn.Linear(dim, dim)
        self.ff = nn.Sequential(nn.Linear(dim, ffn_mult * dim), nn.GELU(), nn.Linear(ffn_mult * dim, dim))
        self.drop = nn.Dropout(dropout)

    def forward(self, x: torch.Tensor, mask: torch.Tensor, attention: list | None = None) -> torch.Tensor:
        """x (B, T, d); mask (B, 1, T, T) bool, True = query may attend key. attention: a list that
        receives this block's attention weights (B, heads, T, T) (for explanations; eval only)."""
        q, k, v = self.qkv(self.ln1(x)).unflatten(-1, (3, self.heads, -1)).permute(2, 0, 3, 1, 4)
        if attention is not None:
            logits = (q @ k.transpose(-1, -2)) / q.shape[-1] ** 0.5
            attention.append(torch.softmax(logits.masked_fill(~mask, -torch.inf), -1).detach())
        a = F.scaled_dot_product_attention(q, k, v, attn_mask=mask,
                                           dropout_p=self.dropout if self.training else 0.0)
        x = x + self.drop(self.proj(a.transpose(1, 2).flatten(-2)))      # (B, T, d)
        return x + self.drop(self.ff(self.ln2(x)))


class ItemTrunk(nn.Module):
    """Base of the item-level generators: builds the trunk's modules (`build_trunk`) and `encode`s
    right-aligned histories. Subclasses set `item_tokens` (N+1, L+1) before calling `encode`."""

    def build_trunk(self, vocab: SidVocab, num_items: int, d_model: int, num_layers: int,
                    num_heads: int, ffn_mult: int, dropout: float, max_len: int,
                    item_id_input: bool = False, code_scale: float = 1.0) -> None:
        self.max_len, self.code_scale = int(max_len), float(code_scale)
        self.code_emb = nn.Embedding(vocab.size, d_model, padding_idx=PAD)
        self.pos_emb = nn.Embedding(self.max_len, d_model)
        self.emb_norm = nn.LayerNorm(d_model)
        self.emb_drop = nn.Dropout(dropout)
        self.blocks = nn.ModuleList(CausalBlock(d_model, num_heads, ffn_mult, dropout)
                                    for _ in range(num_layers))
        self.final_norm = nn.LayerNorm(d_model)
        self.item_emb = nn.Embedding(num_items + 1, d_model, padding_idx=0) if item_id_input else None

    def num_parameters(self) -> int:
        return sum(p.numel() for p in self.parameters())

    def set_new_items(self, mask) -> None:
        """Mark the cold-start protocol's new items ((N+1,) bool); the parallel kind limits their
        share of a returned list (ParallelSidGenerator.new_item_share), the causal kind ignores it."""
        self.new_items = torch.as_tensor(mask, dtype=torch.bool)

    def training_samples(self, split: SplitData) -> ItemWindows:
        """One window per max_len targets of every training sequence (onerec.item_windows)."""
        return ItemWindows(split, self.max_len)

    def generate(self, batch: HistoryBatch, num_items: int) -> torch.Tensor:
        """Generator interface: ranked item ids (B, num_items), best first, 0 in unused slots
        (the first num_items of the subclass's beam_search, which holds beam_width items)."""
        if num_items > self.beam_width:
            raise RecError(f"{type(self).__name__}.beam_width={self.beam_width} is smaller than the "
                           f"{num_items} items asked for; set it >= {num_items}")
        return self.beam_search(batch).items[:, :num_items]

    def encode(self, items: torch.Tensor, attention: list | None = None) -> torch.Tensor:
        """Right-aligned item ids (B, T) -> trunk states (B, T', d) of the last T' = min(T, max_len)
        columns, less the leading columns that are padding in every row. attention: a list that
        receives each block's attention weights (B, heads, T', T')."""
        items = items[:, -self.max_len:]
        filled = (items > 0).any(0)
        first = int(torch.nonzero(filled)[0]) if bool(filled.any()) else items.shape[1] - 1
        items = items[:, first:]                                           # (B, T)
        T = items.shape[1]
        x = self.code_emb(self.item_tokens[items]).sum(-2)                # (B, T, d); item 0 -> 0
        if self.code_scale != 1.0:
            x = x * self.code_scale
        if self.item_emb is not None:
            x = x + self.item_emb(items)
        x = x + self.pos_emb.weight[self.max_len - T:]                     # right-aligned positions
        x = self.emb_drop(self.emb_norm(x))
        valid = items > 0
        eye = torch.eye(T, dtype=torch.bool, device=items.device)
        mask = torch.ones(T, T, dtype=torch.bool, device=items.device).tril()
        mask = (mask & (valid[:, None, :] | eye))[:, None]                 # (B, 1, T, T)
        for block in self.blocks:
            x = block(x, mask, attention)
        return self.final_norm(x)


def check_sizes(owner: str, d_model: int, num_heads: int, dropout: float, label_smoothing: float,
                head_temperature: float, **positive: int) -> None:
    """One clear RecError, naming `owner`'s binding, for sizes a generator cannot be built with."""
    if d_model < 1 or num_heads < 1 or d_model % num_heads:
        raise RecError(f"{owner}.d_model={d_model} must be a positive multiple of num_heads={num_heads}")
    for name, v in positive.items():
        if int(v) < 1:
            raise RecError(f"{owner}.{name}={v}: must be >= 1")
    if not 0.0 <= dropout < 1.0 or not 0.0 <= label_smoothing < 1.0:
        raise RecError(f"{owner}.dropout={dropout} and label_smoothing={label_smoothing} must be in [0, 1)")
    if not head_temperature >= 0.0:
        raise RecError(f"{owner}.head_temperature={head_temperature} must be >= 0 "
                       "(0 = dot-product code scores)")


def init_weights(m: nn.Module) -> None:
    """BERT-style: N(0, 0.02) weights, zero biases (the padding token's embedding stays 0)."""
    if isinstance(m, (nn.Linear, nn.Embedding)):
        nn.init.normal_(m.weight, std=0.02)
        if isinstance(m, nn.Linear) and m.bias is not None:
            nn.init.zeros_(m.bias)
        if isinstance(m, nn.Embedding) and m.padding_idx is not None:
            with torch.no_grad():
                m.weight[m.padding_idx].zero_()


def smoothed_nll(logits: torch.Tensor, target: torch.Tensor, eps: float, reduction: str = "mean") -> torch.Tensor:
    """Label-smoothed NLL whose smoothing mass is spread over the allowed (finite-logit) columns
    only; logits (P, W) may hold -inf for what cannot be the answer (codes a trie rules out, the
    padding item, items absent at training time). reduction: 'mean' or 'sum' over the P rows."""
    logp = torch.log_softmax(logits, -1)
    nll = -logp.gather(1, target[:, None])[:, 0]
    if eps > 0.0:
        allowed = torch.isfinite(logits)
        smooth = -logp.masked_fill(~allowed, 0.0).sum(-1) / allowed.sum(-1)
        nll = (1.0 - eps) * nll + eps * smooth
    return nll.sum() if reduction == "sum" else nll.mean()
