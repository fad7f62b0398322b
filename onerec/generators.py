"""Which generator a run trains (gin: `make_generator.kind`).

- 'parallel' (default): onerec.parallel_generator.ParallelSidGenerator, an item-level causal
  trunk over long IDs (32 OPQ codes), every position supervised; the next item's score is built
  from its codes (objective 'items': catalogue softmax over code-built item vectors, the frozen
  configs; 'codes': RPG's per-codebook heads) and every item is ranked exactly. Learns on a
  2-core CPU.
- 'causal': onerec.causal_generator.CausalSidGenerator, the same windows over short hierarchical
  IDs (RQ-VAE), a level-by-level head and trie-constrained beam search.
- 'tiger': onerec.model.OneRecModel, the T5 encoder-decoder over sliding-window histories (TIGER);
  for GPU users, its cost per epoch grows with Σ prefix length × tokens per item.

All answer the same calls: training_samples(split), forward(batch) -> mean loss, generate /
beam_search(HistoryBatch) -> ranked items, describe(), num_parameters(), beam_width,
exclude_history, vocab.
"""
from __future__ import annotations

import gin

from onerec.causal_generator import CausalSidGenerator
from onerec.model import OneRecModel
from onerec.parallel_generator import ParallelSidGenerator
from retrieval.core.errors import RecError
from rqvae.artifact import SemanticIds

KINDS = {"causal": CausalSidGenerator, "parallel": ParallelSidGenerator, "tiger": OneRecModel}


@gin.configurable
def make_generator(sids: SemanticIds, kind: str = "parallel"):
    """The generator of kind `kind` over the semantic-ID artifact `sids` (sizes from gin)."""
    if kind not in KINDS:
        raise RecError(f"make_generator.kind={kind!r} is unknown; use one of {sorted(KINDS)}")
    return KINDS[kind](sids)


def generator_kind(model) -> str:
    return next(k for k, cls in KINDS.items() if isinstance(model, cls))
