"""Evaluate the non-learned baselines (most-popular, item co-occurrence, Semantic-KNN over the
items' content embeddings) on a dataset's split.

    python scripts/evaluate_baseline.py --gin_file configs/amazon-beauty/baseline.gin --run_dir runs/amazon-beauty-baselines

Writes run_dir/results.json (shape: retrieval/evaluation/report.py), run_dir/ranks.safetensors
(per-user ranks for paired tests) and run_dir/config.gin, and prints a table. Which baselines:
`evaluate_baseline.model = ['popularity', 'cooccurrence']` (or one name; 'semantic_knn' embeds the
item texts as stage 1 does, rqvae.embeddings).
"""
from __future__ import annotations

from retrieval.baselines.counting import evaluate_baseline
from retrieval.core import cli
from rqvae.embeddings import item_embeddings  # registers item_embeddings (its source, model, ...)


def main(args, run_dir) -> None:
    evaluate_baseline(run_dir, content_embeddings=lambda split: item_embeddings(split).vectors)


if __name__ == "__main__":
    cli.run(main, "Evaluate the most-popular and item co-occurrence baselines.")
