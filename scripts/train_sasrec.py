"""Train one scorer (SASRec / TiSASRec ± mHC, GRU4Rec, BERT4Rec: `make_scorer.kind`) and write
results.json.

    python scripts/train_sasrec.py --gin_file configs/amazon-beauty/sasrec-bce.gin --run_dir runs/x
    python scripts/train_sasrec.py --gin_file ... --run_dir runs/x --resume     # after a crash

The same command runs data-parallel under `torchrun --nproc_per_node=W scripts/train_sasrec.py ...`
(retrieval.distributed); ScorerTrainer.batch_size is then the global batch, and rank 0 writes.

results.json holds validation and test metrics of the checkpoint selected on validation full-ranking
NDCG@10: full ranking (primary) and sampled-100 (secondary), each under its own key.
"""
from __future__ import annotations

import sys
from pathlib import Path

import gin

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

# Imported before gin parses the configs, so every configurable they name is registered.
from retrieval import cli, distributed  # noqa: E402
from retrieval.auxiliary_losses import build_auxiliary_losses  # noqa: E402
from retrieval.data import load_split  # noqa: E402
from retrieval.io import write_json  # noqa: E402
from retrieval.losses import ScorerLoss  # noqa: E402
from retrieval.models import make_scorer  # noqa: E402
from retrieval.negatives import build_negative_sampler  # noqa: E402
import retrieval.samplers  # noqa: E402,F401  (registers popularity/hard/mixture/... samplers)
from retrieval.samplers import wants_content_embeddings  # noqa: E402
from rqvae.embeddings import item_embeddings  # noqa: E402
from rqvae.similar_items import similar_item_table  # noqa: E402
from retrieval.scorer_trainer import ScorerTrainer  # noqa: E402
from retrieval.training import config_hash, set_seed  # noqa: E402


def main(args, run_dir: Path) -> None:
    trainer = ScorerTrainer()
    loss = ScorerLoss()
    set_seed(trainer.seed)
    split = load_split()
    model = make_scorer(num_items=split.num_items)
    sampler = build_negative_sampler(split, fallback_seed=trainer.seed)
    if wants_content_embeddings(sampler):     # hard negatives in the semantic-ID stage's space
        sampler.bind_item_embeddings(item_embeddings(split).vectors)
    aux = build_auxiliary_losses(trainer.seed, lambda: similar_item_table(split))
    result = trainer.fit(model, split, loss, sampler, run_dir, resume=args.resume, aux=aux)
    notes = []
    if model.use_time and not split.has_time:
        notes.append(f"{split.name} has no timestamps: times are event positions, so the time-interval "
                     "relations are position gaps")
    result = {
        **result,
        "dataset": {"name": split.name, "fingerprint": split.fingerprint, "has_time": split.has_time,
                    **split.stats()},
        "model": {"variant": model.variant, "params": model.num_parameters(), **model.config,
                  "loss": loss.name, "num_negatives": loss.num_negatives,
                  "negative_sampler": type(sampler).__name__,
                  "similarity": model.similarity.name, "auxiliary_losses": aux.describe()},
        "config_hash": config_hash(gin.config_str()),
        "notes": notes,
        "env": cli.env_info(),
    }
    if distributed.is_main():
        write_json(run_dir / "results.json", result)
    v, t = result["valid"]["full"], result["test"]["full"]
    print(f"{model.variant}/{loss.name} on {split.name}: best epoch {result['best_epoch']}, "
          f"valid NDCG@10 {v['ndcg@10']:.4f} HR@10 {v['hr@10']:.4f} | test NDCG@10 {t['ndcg@10']:.4f} "
          f"HR@10 {t['hr@10']:.4f} AUC {t['auc']:.4f} (full ranking) -> {run_dir / 'results.json'}")


if __name__ == "__main__":
    cli.run(main, "Train a sequential scorer (SASRec family, GRU4Rec, BERT4Rec).",
            extra_args=lambda p: p.add_argument("--resume", action="store_true",
                                                help="continue from run_dir/checkpoints/last"))
