"""Train one scorer (SASRec / TiSASRec ± mHC, GRU4Rec, BERT4Rec: `make_scorer.kind`) and write
results.json.

    python scripts/train_sasrec.py --gin_file configs/amazon-beauty/sasrec-bce.gin --run_dir runs/x
    python scripts/train_sasrec.py --gin_file ... --run_dir runs/x --resume     # after a crash

The same command runs data-parallel under `torchrun --nproc_per_node=W scripts/train_sasrec.py ...`
(retrieval.core.distributed); ScorerTrainer.batch_size is then the global batch, and rank 0 writes.

results.json holds validation and test metrics of the checkpoint selected on validation full-ranking
NDCG@10: full ranking (primary) and sampled-100 (secondary), each under its own key.
"""
from __future__ import annotations

from pathlib import Path

# Imported before gin parses the configs, so every configurable they name is registered.
from retrieval.core import cli
from retrieval.scorers.train import train_scorer
from rqvae.embeddings import item_embeddings
from rqvae.similar_items import similar_item_table


def main(args, run_dir: Path) -> None:
    # Stage 1 supplies the content space: hard negatives mined there, and the similar-item table.
    train_scorer(run_dir, resume=args.resume,
                 content_embeddings=lambda split: item_embeddings(split).vectors,
                 similar_items=similar_item_table)


if __name__ == "__main__":
    cli.run(main, "Train a sequential scorer (SASRec family, GRU4Rec, BERT4Rec).",
            extra_args=lambda p: p.add_argument("--resume", action="store_true",
                                                help="continue from run_dir/checkpoints/last"))
