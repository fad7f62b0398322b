"""The optional terms the scorer trainer adds to the main loss (docs/protocol.md §5, seeds 001 and 004):
semantic consistency and long/short-term interest contrast. Both are off by default (weight 0);
`SemanticConsistencyLoss.weight` / `InterestContrastLoss.weight` > 0 in gin turns one on.

Per batch, at the P non-padding positions (hidden (P, d), positives (P,), negatives (P, n) or None):
  semantic   item' = a similar item of the positive, drawn from the similar-item table (N+1, k);
             positive_only: softplus(-(s(item') - s(pos))) and, when the main loss has negatives,
             softplus(s(neg') - s(neg)) for each negative and its own similar item (label 0);
             pos_neg: mean_k softplus(-(s(item') - s(neg_k))), with the main loss's negatives or,
             when it samples none (ce / infonce), `num_negatives` drawn from the trainer's sampler.
             Scores s use the model's similarity head. Positions whose item has no similar item
             are left out of the mean.
  interest   per sequence: L_int = the encoder state after the whole input, S_int = the state after
             only its last `short_k` items; proxies from the item embeddings (see
             semantic_losses.interest_proxies); the four BPR terms.

Similar items are drawn with a numpy Generator (seeded from the trainer's seed) whose state goes
into the trainer's checkpoints, so a resumed run draws the same items.
"""
from __future__ import annotations

from typing import Callable

import numpy as np
import torch

from retrieval.core.errors import RecError
from retrieval.scorers.semantic_losses import InterestContrastLoss, SemanticConsistencyLoss, draw_similar


class AuxiliaryLosses:
    """semantic, interest: the configured terms (a term with weight 0 is dropped).
    similar_items: (N+1, k) int64 table (0 = none), required when the semantic term is on."""

    def __init__(self, semantic: SemanticConsistencyLoss | None = None,
                 interest: InterestContrastLoss | None = None,
                 similar_items: np.ndarray | None = None, seed: int = 0):
        self.semantic = semantic if semantic is not None and semantic.weight > 0 else None
        self.interest = interest if interest is not None and interest.weight > 0 else None
        if self.semantic is not None:
            if similar_items is None:
                raise RecError("SemanticConsistencyLoss.weight > 0 needs a similar-item table: set "
                               "similar_item_table.source ('content' or 'prefix', with "
                               "similar_item_table.semantic_ids_dir for 'prefix')")
            similar_items = np.asarray(similar_items, dtype=np.int64)
            if similar_items.ndim != 2 or not (similar_items[1:] > 0).any():
                raise RecError(f"the similar-item table (shape {similar_items.shape}) holds no similar "
                               "item; use a shorter prefix_table.prefix_len or the 'content' source")
        self.table = similar_items
        self._table_t: torch.Tensor | None = None
        self.rng = np.random.default_rng(seed + 104729)     # its own stream, apart from the sampler

    @property
    def active(self) -> bool:
        return self.semantic is not None or self.interest is not None

    def describe(self) -> dict:
        """What is on, for results.json."""
        out = {}
        if self.semantic is not None:
            out["semantic"] = {"mode": self.semantic.mode, "weight": self.semantic.weight,
                               "similar_items_per_item": int(self.table.shape[1])}
        if self.interest is not None:
            out["interest"] = {"short_k": self.interest.short_k, "weight": self.interest.weight}
        return out

    # ------------------------------------------------------------------ terms
    def __call__(self, model, items: torch.Tensor, times: torch.Tensor | None, states: torch.Tensor,
                 hidden: torch.Tensor, positives: torch.Tensor, negatives: torch.Tensor | None,
                 draw_negatives) -> dict[str, torch.Tensor]:
        """The weighted terms, by name. items/times (B, W) batch inputs, states (B, L', d) the
        encoder output, hidden (P, d) states at the target positions; draw_negatives(n) -> (P, n)
        tensor of negatives from the trainer's sampler (called only when needed)."""
        out = {}
        if self.semantic is not None:
            out["semantic"] = self._semantic(model, hidden, positives, negatives, draw_negatives)
        if self.interest is not None:
            out["interest"] = self._interest(model, items, times, states)
        return out

    def _draw(self, items: torch.Tensor) -> torch.Tensor:
        if self._table_t is None or self._table_t.device != items.device:
            self._table_t = torch.from_numpy(self.table).to(items.device)
        keys = torch.from_numpy(self.rng.random(tuple(items.shape) + (self.table.shape[1],)))
        return draw_similar(self._table_t, items, keys=keys.to(items.device))

    def _semantic(self, model, hidden, positives, negatives, draw_negatives) -> torch.Tensor:
        sim, emb = model.similarity, model.item_emb.weight
        similar = self._draw(positives)                                    # (P,)
        mask = similar > 0
        s_similar = sim(hidden, emb[similar]).float()                      # (P,)
        if self.semantic.mode == "pos_neg":
            if negatives is None:
                negatives = draw_negatives(self.semantic.num_negatives)
            s_neg = sim(hidden[:, None], emb[negatives]).float()           # (P, n)
            return self.semantic(None, s_neg, s_similar, mask=mask)
        s_pos = sim(hidden, emb[positives]).float()
        if negatives is None:
            return self.semantic(s_pos, None, s_similar, mask=mask)
        neg_similar = self._draw(negatives)                                # (P, n)
        s_neg = sim(hidden[:, None], emb[negatives]).float()
        s_neg_similar = sim(hidden[:, None], emb[neg_similar]).float()
        return self.semantic(s_pos, s_neg, s_similar, s_neg_similar, mask=mask,
                             neg_mask=neg_similar > 0)

    def _interest(self, model, items, times, states) -> torch.Tensor:
        k = self.interest.short_k
        long_int = states[:, -1]                                           # (B, d)
        # Rows are right-aligned and non-empty, so the last k columns are each row's last k items.
        short_int = model.encode(items[:, -k:], times[:, -k:] if times is not None else None)[:, -1]
        return self.interest(long_int.float(), short_int.float(), model.item_emb(items).float(), items)

    # ------------------------------------------------------------------ checkpoints
    def state(self) -> dict:
        return {"bit_generator": self.rng.bit_generator.state}

    def load_state(self, state: dict | None) -> None:
        if state:
            self.rng.bit_generator.state = state["bit_generator"]


def build_auxiliary_losses(seed: int, similar_items: Callable[[], np.ndarray]) -> AuxiliaryLosses:
    """The terms gin configures (SemanticConsistencyLoss, InterestContrastLoss); `similar_items()`
    builds the similar-item table and is called only when the semantic term is on (it may be slow:
    content embeddings)."""
    semantic, interest = SemanticConsistencyLoss(), InterestContrastLoss()
    table = similar_items() if semantic.weight > 0 else None
    return AuxiliaryLosses(semantic, interest, table, seed=seed)
