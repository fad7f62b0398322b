"""Stage 1: item embeddings -> semantic IDs (RQ-VAE, RQ-KMeans or balanced RQ-KMeans).

    python scripts/train_rqvae.py --gin_file configs/amazon-beauty/rqvae.gin --run_dir runs/sid-beauty

Writes into --run_dir: semantic_ids.safetensors + semantic_ids.json (the artifact stage 2 reads),
tokenizer.safetensors (RQ-VAE state dict or k-means codebooks), results.json (reconstruction error,
per-level codebook usage and perplexity, collisions, wall times) and config.gin.

The same command runs data-parallel under `torchrun --nproc_per_node=W scripts/train_rqvae.py ...`
(RQ-VAE training is DDP; RQVAETokenizer.batch_size is the global batch); rank 0 writes.
"""
from __future__ import annotations

import os
from pathlib import Path

# Before torch/faiss load OpenMP: threads that spin while waiting slow training several-fold when
# the CPU is shared with other jobs; sleeping costs next to nothing when it is not.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
os.environ.setdefault("HF_HUB_OFFLINE", "1")

from retrieval.core import cli  # noqa: E402
from rqvae.pipeline import train_semantic_ids  # noqa: E402  (registers the datasets, tokenizers)


def main(args, run_dir: Path) -> None:
    train_semantic_ids(run_dir)


if __name__ == "__main__":
    cli.run(main, "Build semantic IDs for a dataset's items (stage 1).")
