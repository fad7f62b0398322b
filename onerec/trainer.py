"""How a generator trains (any kind of onerec.generators: the model supplies its training samples
and its loss) inside the one training loop (retrieval.core.trainer): teacher-forced batches,
validation NDCG@10 through the shared evaluator, early stopping, checkpoints and exact resume.

An epoch's batch order is a pure function of (seed, epoch), so a checkpoint taken inside an epoch
resumes at the same batch. Under torchrun every rank builds the same global batch and trains on
every W-th sample of it; batch_size is the global batch. On CUDA the forward runs in bf16 autocast.
"""
from __future__ import annotations

import gin
import numpy as np
import torch

from retrieval.core.io import fingerprint
from retrieval.core.checkpoints import BEST, LAST
from retrieval.core.trainer import SELECT_METRIC, StepOutput, Trainer, TrainingTask, local_rows
from retrieval.data.types import SplitData
from retrieval.evaluation import Evaluator

__all__ = ["BEST", "LAST", "SELECT_METRIC", "OneRecTask", "OneRecTrainer"]


@gin.configurable
class OneRecTrainer(Trainer):
    """The generators' settings of the one training loop (retrieval.core.trainer.Trainer documents
    each); by default AdamW + warm-up + inverse-sqrt decay, validation once per epoch on 2,000 users,
    a checkpoint every 500 steps. bucket_batches: length-bucketing window in batches (0 = off).
    """

    name = "OneRecTrainer"

    def __init__(self, num_epochs: int = 200, batch_size: int = 256, lr: float = 1e-3,
                 weight_decay: float = 0.01, betas: tuple = (0.9, 0.999), schedule: str = "inverse_sqrt",
                 warmup_steps: int = 1000, warmup_epochs: float = 0.0, grad_clip: float | None = 1.0,
                 max_steps: int = 0, max_minutes: float = 0.0, eval_every: int = 1,
                 eval_every_steps: int = 0, eval_users: int | None = 2000, eval_seed: int = 0,
                 patience: int = 10, checkpoint_every_steps: int = 500, log_every_steps: int = 50,
                 seed: int = 42, device: str | None = None, amp: bool = True, progress: bool = True,
                 num_threads: int | None = None, bucket_batches: int = 50):
        settings = {k: v for k, v in locals().items() if k not in ("self", "__class__")}
        self.bucket_batches = int(settings.pop("bucket_batches"))
        super().__init__(**settings)                     # validates every shared setting

    def describe(self) -> dict:
        return {**super().describe(), "bucket_batches": self.bucket_batches}


class OneRecTask(TrainingTask):
    """A generator's samples, step and validation for the Trainer."""

    def __init__(self, trainer: OneRecTrainer, model: torch.nn.Module, split: SplitData,
                 evaluator: Evaluator, semantic_ids_codes: np.ndarray | None = None):
        self.trainer, self.model, self.split, self.evaluator = trainer, model, split, evaluator
        self.num_users = split.num_users
        self.samples = model.training_samples(split)     # windows (item-level kinds) or prefixes (tiger)
        self.sid_fingerprint = fingerprint(semantic_ids_codes) if semantic_ids_codes is not None else ""
        if len(self.samples) == 0:
            from retrieval.core.errors import RecError
            raise RecError(f"dataset {split.name!r} has no training samples (every training sequence "
                           "has a single item); use a dataset with longer sequences")

    def signature(self) -> dict:
        s = self.split
        return {"variant": type(self.model).__name__, "model": self.model.describe(), "dataset": s.name,
                "dataset_fingerprint": s.fingerprint, "num_items": s.num_items,
                "semantic_ids": self.sid_fingerprint, "batch_size": self.trainer.batch_size,
                "seed": self.trainer.seed, "bucket_batches": self.trainer.bucket_batches}

    def epoch_batches(self, epoch: int, rng: np.random.Generator) -> list:
        t = self.trainer
        return self.samples.epoch_batches(t.batch_size, t.seed, epoch, t.bucket_batches)

    def step(self, idx: np.ndarray, runner) -> StepOutput:
        counts = self.samples.row_counts(idx)             # supervised targets per sample
        mine, weight = local_rows(len(idx), counts)       # this rank's part of the global batch
        n = int(counts[mine].sum()) if weight else 0
        batch = self.samples.batch(idx[mine]).to(self.trainer.device)
        loss = runner(lambda m, b: m(b), batch)           # mean loss over this rank's targets
        value = float(loss.detach())
        return StepOutput(loss * weight if weight != 1.0 else loss, value, n)

    def validate(self, users: np.ndarray) -> dict:
        return self.evaluator.evaluate(self.model, self.split, "valid", users=users).metrics["full"]
