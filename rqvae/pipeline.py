"""Stage 1 end to end: split -> item embeddings -> tokenizer codes -> disambiguated semantic IDs,
with the statistics docs/protocol.md §4 asks for. scripts/train_rqvae.py only writes what this returns.
"""
from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from retrieval.core import cli, distributed
from retrieval.core.io import save_tensors, write_json
from retrieval.data import load_split
from retrieval.data.types import SplitData
from rqvae.artifact import SemanticIds, save_code_names
from rqvae.disambiguation import collision_stats, disambiguate, level_stats, prefix_sharing
from rqvae.embeddings import ItemEmbeddings, item_embeddings
from rqvae.residual_kmeans import check_input
from rqvae.tokenizer import Tokenizer, make_tokenizer, reconstruction_metrics


@dataclass
class StageOneResult:
    """ids: the artifact; weights: tokenizer tensors to save; results: the results.json dict."""

    ids: SemanticIds
    weights: dict
    results: dict
    embeddings: ItemEmbeddings
    tokenizer: Tokenizer


def semantic_id_metrics(x: np.ndarray, recon: np.ndarray, codes: np.ndarray,
                        codebook_size: int) -> dict:
    """Reconstruction error, per-level usage/perplexity, collisions of the first L codes."""
    out = reconstruction_metrics(x, recon)
    out["per_level"] = level_stats(codes, codebook_size)
    out.update(collision_stats(codes))
    return out


def category_prefix_sharing(split: SplitData, codes: np.ndarray, pairs: int = 200_000,
                            seed: int = 0) -> dict | None:
    """How often two items with the same category (the catalogue's `categories` or `genres` field,
    whole value) share their first 1..L codes, against random item pairs: a semantic sanity check."""
    cat = split.catalogue
    name = next((f for f in ("categories", "genres") if f in cat.fields), None)
    if name is None:
        return None
    labels = np.array([str(v) for v in cat.fields[name][1:]])
    rng = np.random.default_rng(seed)
    a, b = rng.integers(0, len(labels), pairs), rng.integers(0, len(labels), pairs)
    keep = (a != b) & (labels[a] != "")
    same = keep & (labels[a] == labels[b])
    if not same.any():
        return None
    return {"field": name, "same_category_pairs": int(same.sum()),
            "same_category": prefix_sharing(codes, a[same], b[same]).round(4).tolist(),
            "random_pairs": prefix_sharing(codes, a[keep], b[keep]).round(4).tolist()}


def build_semantic_ids(split: SplitData, tokenizer: Tokenizer | None = None,
                       embeddings: ItemEmbeddings | None = None) -> StageOneResult:
    tok = tokenizer or make_tokenizer()
    # Fail before the (slow) embedding step when the catalogue cannot fill the codebook.
    check_input(np.zeros((split.num_items, 1), np.float32), tok.codebook_size, tok.name)
    t0 = time.perf_counter()
    emb = embeddings or item_embeddings(split)
    t_emb = time.perf_counter() - t0
    t1 = time.perf_counter()
    # Cold start (docs/protocol.md §2.7): the tokenizer is fitted on the items seen in training
    # only; the new items are then encoded with it, and they come last in their collision groups,
    # so the existing items keep their IDs.
    new = split.new_items[1:] if split.new_items is not None else np.zeros(split.num_items, bool)
    seen = ~new
    codes = np.empty((split.num_items, tok.levels), dtype=np.int64)
    codes[seen] = tok.fit(emb.vectors[seen] if new.any() else emb.vectors)   # (N_seen, L)
    reconstruction = tok.reconstruction
    if new.any():
        codes[new] = tok.encode(emb.vectors[new])
    t_fit = time.perf_counter() - t1
    order = np.r_[np.flatnonzero(seen), np.flatnonzero(new)]
    full = np.empty((split.num_items, tok.levels + 1), dtype=np.int64)
    full[order] = disambiguate(codes[order])                       # (N, L+1), unique rows
    padded = np.concatenate([np.full((1, full.shape[1]), -1, dtype=np.int64), full])
    metrics = semantic_id_metrics(emb.vectors[seen], reconstruction, codes[seen], tok.codebook_size)
    metrics["new_items"] = int(new.sum())
    metrics["max_disambiguation"] = int(full[:, -1].max())
    metrics["unique_ids"] = bool(len(np.unique(full, axis=0)) == len(full))
    metrics["category_prefix_sharing"] = category_prefix_sharing(split, codes)
    ids = SemanticIds(codes=padded, codebook_size=tok.codebook_size,
                      dataset_fingerprint=split.fingerprint, embedding_fingerprint=emb.fingerprint,
                      tokenizer=tok.name, metrics=metrics,
                      info={"embedding_source": emb.source, "embedding_model": emb.model,
                            "embedding_dim": int(emb.vectors.shape[1]),
                            "seed": int(getattr(tok, "seed", 0))})
    results = {"dataset": split.name, "dataset_fingerprint": split.fingerprint,
               "num_items": split.num_items, "tokenizer": tok.name, "levels": tok.levels,
               "codebook_size": tok.codebook_size, "embedding": ids.info,
               "embedding_fingerprint": emb.fingerprint, **metrics,
               "wall_seconds": {"embeddings": round(t_emb, 2), "tokenizer_fit": round(t_fit, 2),
                                "total": round(time.perf_counter() - t0, 2)},
               "history": tok.history}
    return StageOneResult(ids, tok.weights(), results, emb, tok)


def summary_table(results: dict) -> str:
    """A few lines for the terminal."""
    rows = [f"semantic IDs: {results['dataset']} ({results['num_items']} items), "
            f"tokenizer {results['tokenizer']} {results['levels']}x{results['codebook_size']}",
            f"{'level':>5} {'usage':>7} {'perplexity':>10}"]
    rows += [f"{s['level']:>5} {s['usage']:>7.1%} {s['perplexity']:>10.1f}" for s in results["per_level"]]
    rows.append(f"collisions (d>0): {results['collision_fraction']:.2%}, largest group "
                f"{results['largest_group']}, unique IDs: {results['unique_ids']}")
    rows.append(f"reconstruction: mse {results['reconstruction_mse']:.3g}, relative "
                f"{results['reconstruction_relative']:.3f}")
    share = results.get("category_prefix_sharing")
    if share:
        rows.append(f"same-{share['field']} pairs share level-1 code: {share['same_category'][0]:.1%} "
                    f"(random pairs {share['random_pairs'][0]:.1%}); levels 1-2: "
                    f"{share['same_category'][1]:.1%} ({share['random_pairs'][1]:.1%})")
    w = results["wall_seconds"]
    rows.append(f"wall time: embeddings {w['embeddings']}s, fit {w['tokenizer_fit']}s, total {w['total']}s")
    return "\n".join(rows)


def train_semantic_ids(run_dir: Path) -> StageOneResult:
    """One stage-1 run (scripts/train_rqvae.py) on the gin-bound split: build the semantic IDs, then
    (rank 0 only) write the artifact, tokenizer.safetensors and results.json into run_dir and print
    the summary table."""
    split = load_split()
    result = build_semantic_ids(split)
    if not distributed.is_main():
        return result
    result.ids.save(run_dir)
    save_code_names(run_dir, result.ids.codes, split.catalogue)     # readable codes, for --explain
    save_tensors(run_dir / "tokenizer.safetensors", result.weights,
                 metadata={"tokenizer": result.tokenizer.name,
                           "dataset_fingerprint": split.fingerprint,
                           "embedding_fingerprint": result.embeddings.fingerprint})
    write_json(run_dir / "results.json", {**result.results, "env": cli.env_info()})
    print(summary_table(result.results))
    print(f"-> {run_dir}")
    return result
