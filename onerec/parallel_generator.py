"""Parallel semantic-ID generator over long IDs (the RPG shape): every code of the next item's ID is
predicted at once from one trunk state, and an item's score is the sum of its codes' log-probs.

    history item i ─ scaled sum of its M+1 code embeddings + position ─ causal trunk ─ state h_t
    code m = 0..M-1:  z_m = P_m h_t                         (one linear projection per codebook)
                      log p_m(c) = log_softmax_c(cos(z_m, C_m[c]) / τ)   (C_m: the tied input codes)
    score(item) = Σ_m log p_m(c_m(item))  (+ the disambiguation code's log-prob when D > 1)

Training: the state at position t predicts the ID of item t+1, every position supervised (onerec.
item_windows), loss = the mean over codebooks of the codes' cross-entropies (objective 'codes'), or
the cross-entropy over the catalogue's items, each item's logit built from its code embeddings
(objective 'items', see the class docstring). Decoding is exact: the
log-probabilities of every codebook are gathered and summed for every catalogue item (one
`embedding_bag` per batch of users), history items are excluded and the top-K items are returned, so every
output is a real item and the ranking is the model's own item score, not a beam approximation.

The IDs are meant to be long (e.g. 32 OPQ codes of 256, rqvae.product_quantizer): the codebooks
describe independent subspaces, so the joint ID is specific to an item while each code is shared by
many items, and a new item is scored from its codes alone.
"""
from __future__ import annotations

import math
from typing import NamedTuple

import gin
import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.checkpoint import checkpoint

from onerec.beam_search import BeamResult
from onerec.item_trunk import ItemTrunk, check_sizes, init_weights, smoothed_nll
from onerec.item_windows import WindowBatch
from onerec.vocab import SidVocab
from retrieval.data.batch import HistoryBatch
from retrieval.core.errors import RecError
from rqvae.artifact import SemanticIds


@gin.configurable
class ParallelSidGenerator(ItemTrunk):
    """Item-level causal trunk + parallel per-codebook heads, exact item scoring (module docstring).

    d_model / num_layers / num_heads / ffn_mult / dropout / max_len: the trunk (as the causal kind).
    head_temperature: τ of the cosine code scores (> 0), or 0 for plain dot products.
    label_smoothing: on every codebook's (or the catalogue's) cross-entropy. objective: 'codes'
    trains every codebook's cross-entropy (mean over codebooks, as RPG) and scores an item by the sum
    of its codes' log-probabilities; 'items' normalises over the real items instead (as the causal
    kind's trie softmax): an item's logit is cos(h, Σ_l C[c_l(item)]) / τ, the cosine between the
    state and the sum of the item's code embeddings (the same vector the trunk reads for the item),
    trained by cross-entropy over the catalogue. beam_width: how many items `generate` and
    `beam_search` may return (the exact top-K, K <= beam_width). exclude_history: never return an
    item of the input history. score_batch: users scored against the whole catalogue at once.
    loss_chunk: positions whose catalogue logits are held at once in training (objective 'items';
    larger batches are computed chunk by chunk and recomputed in the backward pass).
    code_dropout: objective 'items', training only: each catalogue item's vector is built from a
    random subset of its codes (each code kept with probability 1 - code_dropout, the sum rescaled),
    so that no score can rest on one exact code combination and the codes must carry meaning one
    by one, as a new item's codes have to (0 = off).
    new_item_share: ε of the cold-start protocol (docs/protocol.md §2.7), once `set_new_items` has
    marked the new items: every top-j of a returned list holds at most floor(ε·j) new items
    (0 = never a new item, 1 = no limit); an inference-time knob, not part of the checkpoint.
    """

    def __init__(self, sids: SemanticIds, d_model: int = 128, num_layers: int = 2, num_heads: int = 2,
                 ffn_mult: int = 4, dropout: float = 0.3, max_len: int = 50,
                 head_temperature: float = 0.07, label_smoothing: float = 0.0, beam_width: int = 50,
                 exclude_history: bool = True, score_batch: int = 128, objective: str = "items",
                 loss_chunk: int = 4096, new_item_share: float = 1.0, code_dropout: float = 0.0):
        super().__init__()
        if not 0.0 <= code_dropout < 1.0:
            raise RecError(f"ParallelSidGenerator.code_dropout={code_dropout!r} must be in [0, 1)")
        self.code_dropout = float(code_dropout)
        if isinstance(new_item_share, bool) or not isinstance(new_item_share, (int, float)) \
                or not 0.0 <= new_item_share <= 1.0:
            raise RecError(f"ParallelSidGenerator.new_item_share={new_item_share!r} must be in [0, 1]")
        self.new_item_share, self.new_items = float(new_item_share), None
        if objective not in ("codes", "items"):
            raise RecError(f"ParallelSidGenerator.objective={objective!r}: use 'codes' (per-codebook "
                           "cross-entropy) or 'items' (cross-entropy over the catalogue)")
        self.objective, self.loss_chunk = objective, int(loss_chunk)
        check_sizes("ParallelSidGenerator", d_model, num_heads, dropout, label_smoothing,
                    head_temperature, num_layers=num_layers, ffn_mult=ffn_mult, max_len=max_len,
                    beam_width=beam_width, score_batch=score_batch, loss_chunk=loss_chunk)
        self.vocab = SidVocab.from_semantic_ids(sids, 0)
        self.num_items, self.beam_width = sids.num_items, int(beam_width)
        self.exclude_history, self.label_smoothing = bool(exclude_history), float(label_smoothing)
        self.temperature, self.score_batch = float(head_temperature), int(score_batch)
        self.sizes = {"d_model": int(d_model), "num_layers": int(num_layers), "num_heads": int(num_heads),
                      "ffn_mult": int(ffn_mult), "dropout": float(dropout)}
        tokens = torch.from_numpy(self.vocab.item_tokens(sids))                       # (N+1, L+1)
        self.register_buffer("item_tokens", tokens, persistent=False)
        # the heads: the L quantizer codebooks, plus the disambiguation code when it is not constant
        self.num_heads_out = self.vocab.levels + (1 if self.vocab.num_disambiguation > 1 else 0)
        self.build_trunk(self.vocab, self.num_items, d_model, num_layers, num_heads, ffn_mult, dropout,
                         max_len, code_scale=self.vocab.id_length ** -0.5)
        # the per-codebook projections P_m (objective 'codes' only: 'items' scores h itself)
        self.proj = nn.Linear(d_model, self.num_heads_out * d_model) if objective == "codes" else None
        self.apply(init_weights)
        lo = int(self.vocab.offsets[0])
        self.code_offset = lo                               # token lo + j = flat code column j
        # item n's score = Σ over its codes of the flat code log-probs at columns item_cols[n]
        cols = (tokens[:, :self.num_heads_out] - lo).clamp(min=0)                # row 0: unused
        self.register_buffer("item_cols", cols.contiguous(), persistent=False)   # (N+1, heads)

    # -- what the trainer and the pipeline ask of every generator -----------------------------
    def describe(self) -> dict:
        return {"kind": "parallel", **self.sizes, "max_len": self.max_len, "objective": self.objective,
                "head_temperature": self.temperature, "label_smoothing": self.label_smoothing,
                "code_dropout": self.code_dropout,
                "vocab": {"levels": self.vocab.levels, "codebook_size": self.vocab.codebook_size,
                          "num_disambiguation": self.vocab.num_disambiguation},
                "num_parameters": self.num_parameters()}

    # -- the heads ---------------------------------------------------------------------------
    def code_log_probs(self, h: torch.Tensor) -> list:
        """States (P, d) -> per head the log-probabilities of its codes [(P, width_m)]."""
        if self.proj is None:
            raise RecError("ParallelSidGenerator.code_log_probs needs objective='codes' (per-codebook "
                           "heads); the 'items' objective scores items with item_scores")
        z = self.proj(h).unflatten(-1, (self.num_heads_out, -1))         # (P, M, d)
        lo = self.code_offset
        K, L = self.vocab.codebook_size, self.vocab.levels
        codes = self.code_emb.weight[lo:lo + L * K].view(L, K, -1)         # (L, K, d) tied
        if self.temperature > 0:
            z, codes = F.normalize(z, dim=-1), F.normalize(codes, dim=-1)
        scale = 1.0 / self.temperature if self.temperature > 0 else 1.0
        out = list(torch.log_softmax(torch.einsum("pmd,mkd->pmk", z[:, :L], codes).float() * scale,
                                     -1).unbind(1))
        if self.num_heads_out > L:                                          # disambiguation head
            d_codes = self.code_emb.weight[lo + L * K:lo + L * K + self.vocab.num_disambiguation]
            zd = z[:, L]
            if self.temperature > 0:
                d_codes = F.normalize(d_codes, dim=-1)
            out.append(torch.log_softmax((zd @ d_codes.T).float() * scale, -1))
        return out

    # -- training ---------------------------------------------------------------------------
    def forward(self, batch: WindowBatch) -> torch.Tensor:
        """Mean over supervised positions of the mean over heads of the codes' NLL."""
        h = self.encode(batch.items)                                       # (B, T, d)
        targets = batch.targets[:, -h.shape[1]:]
        keep = targets > 0
        tokens = self.item_tokens[targets[keep]]                           # (P, L+1)
        if self.objective == "items":
            return self._catalogue_loss(h[keep], targets[keep])
        logps = self.code_log_probs(h[keep])
        loss = 0.0
        for m, logp in enumerate(logps):
            code = tokens[:, m] - int(self.vocab.offsets[m])
            nll = -logp.gather(1, code[:, None])[:, 0]
            if self.label_smoothing > 0:
                nll = (1 - self.label_smoothing) * nll - self.label_smoothing * logp.mean(-1)
            loss = loss + nll.mean()
        return loss / len(logps)

    # -- decoding ---------------------------------------------------------------------------
    def item_vectors(self) -> torch.Tensor:
        """(N+1, d) every item's vector: the sum of its L+1 code embeddings (row 0: zeros); in
        training with code_dropout, of a random subset of them, rescaled."""
        weights = None
        if self.training and self.code_dropout > 0:
            keep = torch.rand(self.item_tokens.shape, device=self.item_tokens.device) >= self.code_dropout
            weights = keep.to(self.code_emb.weight.dtype) / (1.0 - self.code_dropout)
        return F.embedding_bag(self.item_tokens, self.code_emb.weight, mode="sum", padding_idx=0,
                               per_sample_weights=weights)

    def _catalogue_logits(self, h: torch.Tensor, v: torch.Tensor | None = None,
                          absent: torch.Tensor | None = None) -> torch.Tensor:
        """States (P, d) -> (P, N+1) cos(h, item vector) / τ (dot when τ = 0); column 0 -inf.
        v: the item vectors when the caller already built them (decoding: once per call).
        absent: (N+1,) bool columns also set to -inf (training: the cold-start new items)."""
        v = self.item_vectors() if v is None else v
        if self.temperature > 0:
            h, v = F.normalize(h, dim=-1) / self.temperature, F.normalize(v, dim=-1)
        return _mask_padding((h @ v.T).float(), absent)

    def _catalogue_loss(self, h: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        """Mean cross-entropy over the catalogue known at training time (the cold-start protocol's
        new items did not exist yet: they are neither targets nor negatives); positions are taken
        `loss_chunk` at a time and recomputed in the backward pass, so memory holds one
        (loss_chunk, N+1) logit block."""
        if h.shape[0] <= self.loss_chunk:
            return smoothed_nll(self._catalogue_logits(h, absent=self.new_items), targets,
                                self.label_smoothing)
        total = h.new_zeros(())
        for s in range(0, h.shape[0], self.loss_chunk):
            total = total + checkpoint(self._chunk_loss_sum, h[s:s + self.loss_chunk],
                                       targets[s:s + self.loss_chunk], use_reentrant=False)
        return total / h.shape[0]

    def _chunk_loss_sum(self, h: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        return smoothed_nll(self._catalogue_logits(h, absent=self.new_items), targets,
                            self.label_smoothing, reduction="sum")

    def item_scores(self, h: torch.Tensor, item_vectors: torch.Tensor | None = None) -> torch.Tensor:
        """States (U, d) -> (U, N+1) the model's item scores; column 0 (padding) -inf. Objective
        'codes': Σ_m log p_m(c_m(item)); 'items': the catalogue logits (same ranking as log p(item)).
        item_vectors: `item_vectors()` when the caller scores several batches with the same weights."""
        if self.objective == "items":
            return self._catalogue_logits(h, item_vectors)
        flat = torch.cat(self.code_log_probs(h), dim=-1)                   # (U, M·K + D)
        summed = F.embedding_bag(self.item_cols, flat.T.contiguous(), mode="sum")   # (N+1, U)
        return _mask_padding(summed.T)

    @torch.no_grad()
    def beam_search(self, batch: HistoryBatch, beam_width: int | None = None) -> BeamResult:
        """The exact top-`beam_width` items per history with their scores (a BeamResult, so it
        serves where the trie-decoding generators are used)."""
        k = min(beam_width or self.beam_width, self.num_items)
        was_training = self.training
        self.eval()
        try:
            items, scores = [], []
            vectors = self.item_vectors() if self.objective == "items" else None   # once per call
            for s in range(0, batch.items.shape[0], self.score_batch):
                hist = batch.items[s:s + self.score_batch]
                sc = self.item_scores(self.encode(hist)[:, -1], vectors)
                if self.exclude_history:
                    sc.scatter_(1, hist, -torch.inf)
                if self.new_items is not None and self.new_item_share < 1.0:
                    top = quota_top_k(sc, self.new_items.to(sc.device), k, self.new_item_share)
                else:
                    top = torch.topk(sc, k, dim=1)
                items.append(torch.where(torch.isfinite(top.values), top.indices, 0))
                scores.append(top.values)
            items = torch.cat(items)
            return BeamResult(items, torch.cat(scores), self.item_tokens[items])
        finally:
            self.train(was_training)



def _mask_padding(scores: torch.Tensor, absent: torch.Tensor | None = None) -> torch.Tensor:
    """scores (B, N+1) with column 0 (padding), and the `absent` (N+1,) bool columns, set to -inf."""
    cols = torch.zeros(scores.shape[1], dtype=torch.bool, device=scores.device)
    cols[0] = True
    if absent is not None:
        cols |= absent.to(scores.device)
    return scores.masked_fill(cols, -torch.inf).contiguous()


class TopK(NamedTuple):
    values: torch.Tensor
    indices: torch.Tensor


def quota_top_k(scores: torch.Tensor, new: torch.Tensor, k: int, share: float):
    """The best k-lists of `scores` (B, N+1) in which every top-j holds at most floor(share·j)
    items of the bool mask `new` (N+1,): the greedy merge of the best old and the best new items,
    which is exact for prefix quotas. Returns (values, indices) like torch.topk."""
    old_v, old_i = torch.topk(scores.masked_fill(new, -torch.inf), k, dim=1)
    new_v, new_i = torch.topk(scores.masked_fill(~new, -torch.inf), k, dim=1)
    rows = torch.arange(scores.shape[0], device=scores.device)
    po = torch.zeros_like(rows)
    pn = torch.zeros_like(rows)
    values, indices = torch.empty_like(old_v), torch.empty_like(old_i)
    for j in range(k):
        take = ((pn + 1) <= math.floor(share * (j + 1) + 1e-9)) & (new_v[rows, pn.clamp(max=k - 1)]
                                                                    > old_v[rows, po.clamp(max=k - 1)])
        take &= pn < k
        values[:, j] = torch.where(take, new_v[rows, pn.clamp(max=k - 1)], old_v[rows, po.clamp(max=k - 1)])
        indices[:, j] = torch.where(take, new_i[rows, pn.clamp(max=k - 1)], old_i[rows, po.clamp(max=k - 1)])
        pn, po = pn + take.long(), po + (~take).long()
    return TopK(values, indices)
