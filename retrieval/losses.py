"""Training objectives for scorers (SPEC §5), selected by name.

Every loss sees the flattened non-padding positions of a batch:
    hidden (P, d)      sequence states
    positives (P,)     the next item at each position
    negatives (P, n)   sampled negatives, or None for losses that do not sample
    item_emb (N+1, d)  the shared item embedding table (row 0 = padding)
and returns the mean over positions. Scores are dot products s = h · e_item.

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
from torch.utils.checkpoint import checkpoint

from retrieval.errors import RecError

LOSSES = ("bce", "bpr", "margin", "sampled_softmax", "ce", "infonce")
_SAMPLED = {"bce", "bpr", "margin", "sampled_softmax"}


def _sampled_scores(hidden, positives, negatives, item_emb):
    s_pos = (hidden * item_emb[positives]).sum(-1)                       # (P,)
    s_neg = torch.einsum("pd,pnd->pn", hidden, item_emb[negatives])      # (P, n)
    return s_pos, s_neg


def _ce_chunk(hidden, positives, item_emb, temperature):
    logits = (hidden @ item_emb.T).float() / temperature                # (p, N+1)
    logits[:, 0] = float("-inf")                                          # padding is no candidate
    return F.cross_entropy(logits, positives, reduction="sum")


@gin.configurable
class ScorerLoss:
    """A named objective. num_negatives: n for the sampled losses (ignored by ce / infonce).
    temperature: τ of the softmax losses. margin: m of the margin loss. logq_correction: subtract
    the sampler's log q from sampled-softmax logits. ce_chunk: rows per chunk of the full softmax;
    chunks are recomputed in the backward pass, so memory is O(ce_chunk · N), not O(P · N).
    """

    def __init__(self, name: str = "bce", num_negatives: int = 1, temperature: float = 1.0,
                 margin: float = 1.0, logq_correction: bool = False, ce_chunk: int = 4096):
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
                 item_emb: torch.Tensor, log_q: torch.Tensor | None = None) -> torch.Tensor:
        name = self.name
        if name in _SAMPLED:
            s_pos, s_neg = _sampled_scores(hidden, positives, negatives, item_emb)
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
        if name == "ce":
            total = hidden.new_zeros((), dtype=torch.float32)
            for s in range(0, len(hidden), self.ce_chunk):
                h, p = hidden[s:s + self.ce_chunk], positives[s:s + self.ce_chunk]
                if torch.is_grad_enabled() and len(hidden) > self.ce_chunk:
                    total = total + checkpoint(_ce_chunk, h, p, item_emb, self.temperature,
                                               use_reentrant=False)
                else:
                    total = total + _ce_chunk(h, p, item_emb, self.temperature)
            return total / max(1, len(hidden))
        # infonce: candidates = distinct positives of the batch.
        cand, target = torch.unique(positives, return_inverse=True)       # (C,), (P,)
        logits = (hidden @ item_emb[cand].T).float() / self.temperature    # (P, C)
        return F.cross_entropy(logits, target)
