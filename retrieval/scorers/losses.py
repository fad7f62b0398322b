"""Training objectives for scorers (docs/protocol.md §5), selected by name.

Every loss sees the flattened non-padding positions of a batch:
    hidden (P, d)      sequence states
    positives (P,)     the next item at each position
    negatives (P, n)   sampled negatives, or None for losses that do not sample
    item_emb (N+1, d)  the shared item embedding table (row 0 = padding)
and returns the mean over positions. Scores are dot products s = h · e_item, or the model's
similarity head when one is passed (`similarity=`, a retrieval.scorers.similarity.Similarity): the sampled
losses call its pairwise form, ce and infonce its factored form q(h) · k(e) (see Similarity.factors),
so every loss trains every similarity. With the dot head (or none) the computation is the original.

    bce              softplus(−s⁺) + mean_k softplus(s⁻_k)     (the original SASRec objective; n = 1
                                                               gives exactly its two BCE terms)
    bpr              mean_k softplus(s⁻_k − s⁺)
    margin           mean_k max(0, m − s⁺ + s⁻_k)
    sampled_softmax  cross-entropy of the positive among [s⁺, s⁻_1..n] / τ, optionally logQ-corrected
                     (every logit minus log q(item), Yi et al. 2019)
    ce               cross-entropy over all N items / τ (no sampling)
    infonce          cross-entropy of the positive among the distinct positives of the batch / τ
                     (in-batch negatives; a repeated item is one candidate, so no false negatives)
"""
from __future__ import annotations

import gin
import torch
import torch.nn.functional as F

from retrieval.core.errors import RecError

LOSSES = ("bce", "bpr", "margin", "sampled_softmax", "ce", "infonce")
_SAMPLED = {"bce", "bpr", "margin", "sampled_softmax"}


def _is_dot(similarity) -> bool:
    return similarity is None or getattr(similarity, "name", None) == "dot"


def _sampled_scores(hidden, positives, negatives, item_emb, similarity=None):
    if _is_dot(similarity):
        s_pos = (hidden * item_emb[positives]).sum(-1)                   # (P,)
        s_neg = torch.einsum("pd,pnd->pn", hidden, item_emb[negatives])  # (P, n)
        return s_pos, s_neg
    s_pos = similarity(hidden, item_emb[positives])                      # (P,)
    s_neg = similarity(hidden[:, None], item_emb[negatives])             # (P, n)
    return s_pos, s_neg


class _FullSoftmaxCE(torch.autograd.Function):
    """Σ_p [logsumexp_j s_pj − s_p,pos_p] over all items j ≥ 1, s = hidden · item_embᵀ.

    Written by hand because autograd's version keeps several (P, N+1) tensors alive and makes ~10
    passes over them; this one makes 3 matmuls and the exp passes, in row chunks. The logits are
    kept for backward when they fit `keep_elements`, otherwise recomputed chunk by chunk, so memory
    stays O(chunk · N) even at ML-25M sizes. Gradient: (softmax − onehot) · grad.
    """

    @staticmethod
    def forward(ctx, hidden, item_emb, positives, chunk, keep_elements):
        P = hidden.shape[0]
        keep = P * item_emb.shape[0] <= keep_elements
        total = hidden.new_zeros((), dtype=torch.float32)
        lses, kept = [], []
        for s in range(0, P, chunk):
            logits = (hidden[s:s + chunk] @ item_emb.T).float()          # (c, N+1)
            logits[:, 0] = float("-inf")                                  # padding is no candidate
            lse = torch.logsumexp(logits, dim=1)                          # (c,)
            total = total + (lse - logits.gather(1, positives[s:s + chunk, None])[:, 0]).sum()
            lses.append(lse)
            if keep:
                kept.append(logits)
        ctx.save_for_backward(hidden, item_emb, positives, torch.cat(lses))
        ctx.kept, ctx.chunk = kept, chunk
        return total

    @staticmethod
    def backward(ctx, grad):
        hidden, item_emb, positives, lse = ctx.saved_tensors
        d_hidden = torch.empty_like(hidden)
        d_emb = torch.zeros_like(item_emb, dtype=torch.float32)
        for i, s in enumerate(range(0, hidden.shape[0], ctx.chunk)):
            h = hidden[s:s + ctx.chunk]
            if ctx.kept:
                logits = ctx.kept[i]
            else:
                logits = (h @ item_emb.T).float()
                logits[:, 0] = float("-inf")
            p = logits.sub_(lse[s:s + ctx.chunk, None]).exp_()           # softmax, in place
            p[torch.arange(len(h), device=p.device), positives[s:s + ctx.chunk]] -= 1.0
            p.mul_(grad)
            d_hidden[s:s + ctx.chunk] = (p @ item_emb.float()).to(hidden.dtype)
            d_emb.addmm_(p.T, h.float())
        ctx.kept = None
        return d_hidden, d_emb.to(item_emb.dtype), None, None, None


def full_softmax_cross_entropy(hidden: torch.Tensor, positives: torch.Tensor, item_emb: torch.Tensor,
                               chunk: int = 1024, keep_elements: int = 50_000_000) -> torch.Tensor:
    """Mean cross-entropy of each positive against all N items (hidden (P, d), positives (P,))."""
    total = _FullSoftmaxCE.apply(hidden, item_emb, positives, chunk, keep_elements)
    return total / max(1, hidden.shape[0])


@gin.configurable
class ScorerLoss:
    """A named objective. num_negatives: n for the sampled losses (ignored by ce / infonce).
    temperature: τ of the softmax losses. margin: m of the margin loss. logq_correction: subtract
    the sampler's log q from sampled-softmax logits. ce_chunk: rows per chunk of the full softmax
    (see full_softmax_cross_entropy).
    """

    def __init__(self, name: str = "bce", num_negatives: int = 1, temperature: float = 1.0,
                 margin: float = 1.0, logq_correction: bool = False, ce_chunk: int = 1024):
        if name not in LOSSES:
            raise RecError(f"unknown loss {name!r} (ScorerLoss.name); choose one of: {', '.join(LOSSES)}")
        if name in _SAMPLED and num_negatives < 1:
            raise RecError(f"ScorerLoss.num_negatives = {num_negatives} must be >= 1 for loss {name!r}")
        if temperature <= 0:
            raise RecError(f"ScorerLoss.temperature = {temperature} must be > 0")
        self.name, self.temperature, self.margin = name, temperature, margin
        self.logq_correction, self.ce_chunk = logq_correction, ce_chunk
        self._num_negatives = num_negatives

    @property
    def num_negatives(self) -> int:
        """How many sampled negatives per position the trainer must supply (0: none)."""
        return self._num_negatives if self.name in _SAMPLED else 0

    def __call__(self, hidden: torch.Tensor, positives: torch.Tensor, negatives: torch.Tensor | None,
                 item_emb: torch.Tensor, log_q: torch.Tensor | None = None,
                 similarity=None) -> torch.Tensor:
        name = self.name
        if name in _SAMPLED:
            s_pos, s_neg = _sampled_scores(hidden, positives, negatives, item_emb, similarity)
            s_pos, s_neg = s_pos.float(), s_neg.float()
            if name == "bce":
                return (F.softplus(-s_pos) + F.softplus(s_neg).mean(-1)).mean()
            if name == "bpr":
                return F.softplus(s_neg - s_pos[:, None]).mean()
            if name == "margin":
                return F.relu(self.margin - s_pos[:, None] + s_neg).mean()
            logits = torch.cat([s_pos[:, None], s_neg], dim=1)            # (P, 1+n)
            if self.logq_correction and log_q is not None:
                logits = logits - log_q[torch.cat([positives[:, None], negatives], dim=1)].float()
            target = torch.zeros(len(logits), dtype=torch.long, device=logits.device)
            return F.cross_entropy(logits / self.temperature, target)
        if not _is_dot(similarity):
            hidden, item_emb = similarity.factors(hidden, item_emb)       # (P, e), (N+1, e)
        if name == "ce":
            return full_softmax_cross_entropy(hidden / self.temperature if self.temperature != 1.0
                                              else hidden, positives, item_emb, self.ce_chunk)
        # infonce: candidates = distinct positives of the batch.
        cand, target = torch.unique(positives, return_inverse=True)       # (C,), (P,)
        logits = (hidden @ item_emb[cand].T).float() / self.temperature    # (P, C)
        return F.cross_entropy(logits, target)
