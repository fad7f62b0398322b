"""Semantically similar items from stage 1, for the scorer's semantic-consistency loss (docs/protocol.md §5).

    similar_item_table.source = 'content'   FAISS neighbours in the content-embedding space that the
                                            semantic IDs are built from (rqvae.embeddings; its gin
                                            bindings choose text / attributes / npy / collaborative;
                                            text embeddings come from the embedding cache)
    similar_item_table.source = 'prefix'    items whose semantic IDs share the first
                                            `prefix_table.prefix_len` codes (the artifact in
                                            `similar_item_table.semantic_ids_dir`)

Table sizes and metric are bound on the table builders: `neighbour_table.k`, `neighbour_table.metric`,
`prefix_table.k`, `prefix_table.prefix_len` (retrieval.negatives.similar_item_tables).
With `semantic_ids_dir` set, the 'content' source also checks that the embeddings are the ones that
artifact was built from (same fingerprint), so the neighbours match the semantic IDs.
"""
from __future__ import annotations

from pathlib import Path

import gin
import numpy as np

from retrieval.data.types import SplitData
from retrieval.core.errors import RecError
from retrieval.negatives.similar_item_tables import neighbour_table, prefix_table
from rqvae.artifact import SemanticIds
from rqvae.embeddings import item_embeddings

SOURCES = ("content", "prefix")


@gin.configurable
def similar_item_table(split: SplitData, source: str = "content",
                       semantic_ids_dir: str | None = None) -> np.ndarray:
    """(N+1, k) int64: similar items of each item of `split` (0 = none; row 0 = padding)."""
    if source not in SOURCES:
        raise RecError(f"similar_item_table.source = {source!r} is unknown; choose one of: "
                       f"{', '.join(SOURCES)}")
    sids = None
    if semantic_ids_dir:
        sids = SemanticIds.load(Path(semantic_ids_dir))
        sids.check_dataset(split.fingerprint, str(semantic_ids_dir))
    if source == "prefix":
        if sids is None:
            raise RecError("similar_item_table.source = 'prefix' needs similar_item_table."
                           "semantic_ids_dir = '<run dir of scripts/train_rqvae.py>'")
        return prefix_table(sids.codes)
    emb = item_embeddings(split)
    if sids is not None and sids.embedding_fingerprint and emb.fingerprint != sids.embedding_fingerprint:
        raise RecError(f"{semantic_ids_dir}: semantic IDs were built from embeddings "
                       f"{sids.embedding_fingerprint} but item_embeddings gives {emb.fingerprint} "
                       f"({emb.source}); bind item_embeddings as in that run's config.gin")
    return neighbour_table(emb.vectors, num_items=split.num_items)
