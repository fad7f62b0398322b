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

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

# Imported before gin parses the configs, so every configurable they name is registered.
from retrieval import cli  # noqa: E402
from retrieval.cf_trainer import train_cf  # noqa: E402
from retrieval.data import load_split  # noqa: E402,F401  (registers the dataset sources)
from retrieval.models.collaborative import make_cf_model  # noqa: E402,F401
import retrieval.samplers  # noqa: E402,F401  (registers popularity/hard/mixture/... samplers)


def main(args, run_dir: Path) -> None:
    train_cf(run_dir, resume=args.resume)


if __name__ == "__main__":
    cli.run(main, "Train a user-ID baseline (BPR-MF, NeuMF).",
            extra_args=lambda p: p.add_argument("--resume", action="store_true",
                                                help="continue from run_dir/checkpoints/last"))
