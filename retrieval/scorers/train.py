"""One scorer run (scripts/train_sasrec.py): build the gin-bound scorer, loss, negative sampler and
auxiliary losses on the gin-bound split, train it with ScorerTrainer, write results.json and
ranks.safetensors and print one summary line.

    train_scorer(run_dir, resume=False, content_embeddings=..., similar_items=...)

Two inputs come from stage 1 and are passed in rather than imported, so the scorers stay below the
semantic-ID packages: `content_embeddings(split)` -> (N, d) item vectors (hard negatives mined in
content space) and `similar_items(split)` -> (N+1, k) similar-item table (semantic-consistency loss).
Each is called only when the config uses it; scripts/train_sasrec.py passes rqvae's.
"""
from __future__ import annotations

from pathlib import Path
from typing import Callable

import numpy as np

import retrieval.negatives  # noqa: F401  (registers every negative sampler)
from retrieval.core import cli, distributed
from retrieval.core.checkpoints import set_seed
from retrieval.core.errors import RecError
from retrieval.data import load_split
from retrieval.data.types import SplitData
from retrieval.evaluation.report import results_json, save_ranks, write_results
from retrieval.negatives.base import build_negative_sampler
from retrieval.negatives.samplers import wants_content_embeddings
from retrieval.scorers import make_scorer
from retrieval.scorers.auxiliary_losses import build_auxiliary_losses
from retrieval.scorers.losses import ScorerLoss
from retrieval.scorers.trainer import ScorerTrainer

ItemTable = Callable[[SplitData], np.ndarray]


def _stage_one(fn: ItemTable | None, what: str, needed_by: str) -> ItemTable:
    if fn is None:
        raise RecError(f"{needed_by} needs {what} from stage 1, but train_scorer was given none; "
                       "run scripts/train_sasrec.py, or pass them as it does")
    return fn


def train_scorer(run_dir: Path, resume: bool = False, *, content_embeddings: ItemTable | None = None,
                 similar_items: ItemTable | None = None) -> dict:
    """Train and evaluate the configured scorer into `run_dir`; returns the results.json record
    (written by rank 0 only). The checkpoint is selected on validation full-ranking NDCG@10."""
    run_dir = Path(run_dir)
    trainer = ScorerTrainer()
    loss = ScorerLoss()
    set_seed(trainer.seed)
    split = load_split()
    model = make_scorer(num_items=split.num_items)
    sampler = build_negative_sampler(split, fallback_seed=trainer.seed)
    if wants_content_embeddings(sampler):     # hard negatives in the semantic-ID stage's space
        embed = _stage_one(content_embeddings, "content embeddings (content_embeddings=)",
                           "a hard-negative sampler with embeddings='content'")
        sampler.bind_item_embeddings(embed(split))
    aux = build_auxiliary_losses(trainer.seed, lambda: _stage_one(
        similar_items, "a similar-item table (similar_items=)", "SemanticConsistencyLoss.weight > 0")(split))
    result = trainer.fit(model, split, loss, sampler, run_dir, resume=resume, aux=aux)
    notes = []
    if model.use_time and not split.has_time:
        notes.append(f"{split.name} has no timestamps: times are event positions, so the time-interval "
                     "relations are position gaps")
    results = {model.variant: {"valid": result["valid"], "test": result["test"]}}
    record = results_json(results, result["protocol"], split, {
        "params": {"variant": model.variant, "num_parameters": model.num_parameters(), **model.config,
                   "loss": loss.name, "num_negatives": loss.num_negatives,
                   "negative_sampler": type(sampler).__name__,
                   "similarity": model.similarity.name, "auxiliary_losses": aux.describe()},
        "training": result["training"], "timing": result["timing"],
        "notes": notes, "env": cli.env_info()})
    if distributed.is_main():
        write_results(run_dir, record)
        save_ranks(run_dir / "ranks.safetensors", results)
    v, t = result["valid"].metrics["full"], result["test"].metrics["full"]
    print(f"{model.variant}/{loss.name} on {split.name}: best epoch {result['training']['best_epoch']}, "
          f"valid NDCG@10 {v['ndcg@10']:.4f} HR@10 {v['hr@10']:.4f} | test NDCG@10 {t['ndcg@10']:.4f} "
          f"HR@10 {t['hr@10']:.4f} AUC {t['auc']:.4f} (full ranking) -> {run_dir / 'results.json'}")
    return record
