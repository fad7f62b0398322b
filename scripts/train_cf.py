"""Train a user-ID collaborative-filtering baseline (BPR-MF or NeuMF: `make_cf_model.kind`) and
write results.json.

    python scripts/train_cf.py --gin_file configs/amazon-beauty/bpr-mf.gin --run_dir runs/beauty-bpr-mf
    python scripts/train_cf.py --gin_file configs/amazon-beauty/ncf.gin --run_dir runs/beauty-ncf
    python scripts/train_cf.py --gin_file ... --run_dir runs/x --resume     # after a crash

Writes into --run_dir: results.json and ranks.safetensors (retrieval/evaluation/report.py shape,
the model named by its variant), metrics.jsonl, checkpoints/{last,best}, config.gin. The checkpoint
is selected on validation full-ranking NDCG@10; test is computed once, for it.
"""
from __future__ import annotations

from pathlib import Path

# Imported before gin parses the configs, so every configurable they name is registered.
import retrieval.negatives  # noqa: F401  (registers every negative sampler)
from retrieval.baselines.cf_trainer import train_cf
from retrieval.baselines.collaborative import make_cf_model  # noqa: F401
from retrieval.core import cli
from retrieval.data import load_split  # noqa: F401  (registers the dataset sources)


def main(args, run_dir: Path) -> None:
    train_cf(run_dir, resume=args.resume)


if __name__ == "__main__":
    cli.run(main, "Train a user-ID baseline (BPR-MF, NeuMF).",
            extra_args=lambda p: p.add_argument("--resume", action="store_true",
                                                help="continue from run_dir/checkpoints/last"))
