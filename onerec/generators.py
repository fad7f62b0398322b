"""Which generator a run trains (gin: `make_generator.kind`).

- 'causal' (default): onerec.causal_generator.CausalSidGenerator, one position per item, every
  position supervised; learns on a 2-core CPU.
- 'tiger': onerec.model.OneRecModel, the T5 encoder-decoder over sliding-window histories (TIGER);
  for GPU users, its cost per epoch grows with Σ prefix length × tokens per item.

Both answer the same calls: training_samples(split), forward(batch) -> mean loss, generate /
beam_search(HistoryBatch), describe(), num_parameters(), beam_width, exclude_history, vocab, trie.
"""
from __future__ import annotations

import gin

from onerec.causal_generator import CausalSidGenerator
from onerec.model import OneRecModel
from retrieval.errors import RecError
from rqvae.artifact import SemanticIds

KINDS = {"causal": CausalSidGenerator, "tiger": OneRecModel}


@gin.configurable
def make_generator(sids: SemanticIds, kind: str = "causal"):
    """The generator of kind `kind` over the semantic-ID artifact `sids` (sizes from gin)."""
    if kind not in KINDS:
        raise RecError(f"make_generator.kind={kind!r} is unknown; use one of {sorted(KINDS)}")
    return KINDS[kind](sids)


def generator_kind(model) -> str:
    return next(k for k, cls in KINDS.items() if isinstance(model, cls))
