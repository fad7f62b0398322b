"""The training loop of the user-ID baselines (BPR-MF, NeuMF; retrieval.baselines.collaborative).

Examples are the distinct (user, item) pairs of the training sequences (no validation or test item).
An epoch shuffles them and cuts them into batches; each positive gets `num_negatives` items drawn
by the gin-configured NegativeSampler (uniform over the items the user never trained on, by default).
Losses, on the pair scores s⁺ (P,) and s⁻ (P, n):

    bpr   mean_k softplus(s⁻_k − s⁺)                          (BPR-MF, Rendle et al. 2009)
    bce   [softplus(−s⁺) + Σ_k softplus(s⁻_k)] / (1 + n)      (NCF's log loss: every positive and
                                                               negative instance weighs the same)

plus l2 · mean over positives of the squared norms of the embedding rows the batch used (BPR's
regulariser). Per epoch, as ScorerTrainer: train → (every `eval_every` epochs) validation
full-ranking NDCG@10 (all users or a fixed subsample) → early stopping → `checkpoints/last` (model,
optimizer, RNGs, sampler, position) and, on a new best, `checkpoints/best`; `--resume` continues
exactly. Test is computed once, for the best checkpoint. One process only (no torchrun).
"""
from __future__ import annotations

from pathlib import Path

import gin
import numpy as np
import torch
import torch.nn.functional as F

from retrieval.core import distributed, gin_values
from retrieval.data.types import SplitData
from retrieval.core.errors import RecError
from retrieval.evaluation import Evaluator
from retrieval.evaluation.report import format_table, results_json, save_ranks, write_results
from retrieval.negatives.base import NegativeSampler, build_negative_sampler
from retrieval.core.checkpoints import set_seed
from retrieval.core.trainer import StepOutput, Trainer, TrainingTask
from retrieval.evaluation.final import train_and_evaluate

LOSSES = ("bpr", "bce")


class InteractionPairs:
    """The distinct training (user, item) pairs of a split: users (T,), items (T,) int64."""

    def __init__(self, split: SplitData):
        U, N = split.num_users, split.num_items
        users = np.repeat(np.arange(U, dtype=np.int64), split.train_lengths)
        keys = np.unique(users * (N + 1) + split.train_items)
        self.users, self.items = keys // (N + 1), keys % (N + 1)
        if len(keys) == 0:
            raise RecError(f"dataset {split.name!r} has no training interactions; nothing to train on")

    def __len__(self) -> int:
        return len(self.users)

    def batches(self, rng: np.random.Generator, batch_size: int) -> list[np.ndarray]:
        order = rng.permutation(len(self))
        return [order[s:s + batch_size] for s in range(0, len(order), batch_size)]


def pair_loss(name: str, s_pos: torch.Tensor, s_neg: torch.Tensor) -> torch.Tensor:
    """Mean loss over positives; s_pos (P,), s_neg (P, n)."""
    if name == "bpr":
        return F.softplus(s_neg - s_pos[:, None]).mean()
    return ((F.softplus(-s_pos) + F.softplus(s_neg).sum(-1)) / (1 + s_neg.shape[1])).mean()


@gin.configurable
class CFTrainer(Trainer):
    """The user-ID models' settings of the one training loop (retrieval.core.trainer.Trainer
    documents each). l2: weight of the squared norms of the batch's embedding rows. loss: 'bpr' or
    'bce'. num_negatives: sampled negatives per positive.
    """

    name = "CFTrainer"

    def __init__(self, num_epochs: int = 100, batch_size: int = 1024, lr: float = 1e-3,
                 weight_decay: float = 0.0, betas: tuple = (0.9, 0.999), schedule: str = "constant",
                 warmup_steps: int = 0, warmup_epochs: float = 0.0, grad_clip: float | None = None,
                 max_steps: int = 0, max_minutes: float = 0.0, eval_every: int = 1,
                 eval_every_steps: int = 0, eval_users: int | None = None, eval_seed: int = 0,
                 patience: int = 5, checkpoint_every_steps: int = 0, log_every_steps: int = 0,
                 seed: int = 42, device: str | None = None, amp: bool = False, progress: bool = True,
                 num_threads: int | None = None, l2: float = 0.0, loss: str = "bpr",
                 num_negatives: int = 1):
        settings = {k: v for k, v in locals().items() if k not in ("self", "__class__")}
        l2, loss, num_negatives = (settings.pop(k) for k in ("l2", "loss", "num_negatives"))
        super().__init__(**settings)                     # validates every shared setting
        self.num_negatives = gin_values.integer("CFTrainer.num_negatives", num_negatives)
        if isinstance(l2, bool) or not isinstance(l2, (int, float)) or not l2 >= 0:
            raise RecError(f"CFTrainer.l2 = {l2!r} must be a number >= 0; fix it in the gin config")
        if loss not in LOSSES:
            raise RecError(f"CFTrainer.loss = {loss!r} is unknown; use one of {', '.join(LOSSES)}")
        self.l2, self.loss = float(l2), loss

    def fit(self, model, split: SplitData, sampler: NegativeSampler, run_dir: Path,
            resume: bool = False, stop_after_epochs: int | None = None) -> dict | None:
        """Train with early stopping, then evaluate the best checkpoint on valid and test.

        Returns what ScorerTrainer.fit returns, or None when `stop_after_epochs` ended this call
        before the run finished (call again with resume=True).
        """
        if distributed.world_size() > 1:
            raise RecError("CFTrainer trains in one process; start scripts/train_cf.py without torchrun")
        task = CFTask(self, model, split, sampler)
        return train_and_evaluate(self, task, run_dir, resume, stop_after_epochs)


class CFTask(TrainingTask):
    """The training pairs, the pair loss and validation of a user-ID model, for the Trainer."""

    def __init__(self, trainer: CFTrainer, model, split: SplitData, sampler: NegativeSampler):
        self.trainer, self.model, self.split, self.sampler = trainer, model, split, sampler
        self.num_users, self.data = split.num_users, InteractionPairs(split)
        self.evaluator = Evaluator(sampled=False, progress=False)

    def signature(self) -> dict:
        t, s = self.trainer, self.split
        return {"variant": self.model.variant, "model": self.model.config, "dataset": s.name,
                "dataset_fingerprint": s.fingerprint, "num_items": s.num_items,
                "loss": f"{t.loss}x{t.num_negatives}", "batch_size": t.batch_size}

    def epoch_batches(self, epoch: int, rng: np.random.Generator) -> list:
        return self.data.batches(rng, self.trainer.batch_size)

    def step(self, idx: np.ndarray, runner) -> StepOutput:
        t, device = self.trainer, self.trainer.device
        users_np, pos_np = self.data.users[idx], self.data.items[idx]
        neg_np = self.sampler.sample(users_np, pos_np, t.num_negatives)            # (P, n)
        users = torch.from_numpy(users_np).to(device)
        items = torch.from_numpy(np.concatenate([pos_np[:, None], neg_np], 1)).to(device)

        def forward_loss(model):
            scores = model.pair_scores(users, items)                               # (P, 1 + n)
            loss = pair_loss(t.loss, scores[:, 0], scores[:, 1:])
            if t.l2:
                loss = loss + t.l2 * model.embedding_norms(users, items).mean()
            return loss

        loss = runner(forward_loss)
        return StepOutput(loss, float(loss.detach()), len(idx))

    def validate(self, users: np.ndarray) -> dict:
        return self.evaluator.evaluate(self.model, self.split, "valid", users=users).metrics["full"]

    def state(self) -> dict:
        return {"sampler": self.sampler.state()}

    def load_state(self, state: dict) -> None:
        self.sampler.load_state(state["sampler"])


def train_cf(run_dir: Path, resume: bool = False) -> dict:
    """Train the gin-configured user-ID model (make_cf_model) on the gin-selected split, evaluate
    its validation-selected checkpoint, print a table and write run_dir/results.json and
    run_dir/ranks.safetensors in the shape every evaluation writes (retrieval.evaluation.report;
    the model's name is its variant, 'bpr-mf' or 'ncf'). Returns the results.json record."""
    from retrieval.core.cli import env_info
    from retrieval.data import load_split
    from retrieval.baselines.collaborative import make_cf_model

    trainer = CFTrainer()
    set_seed(trainer.seed)
    split = load_split()
    model = make_cf_model(num_users=split.num_users, num_items=split.num_items)
    sampler = build_negative_sampler(split, fallback_seed=trainer.seed)
    out = trainer.fit(model, split, sampler, run_dir, resume=resume)
    results = {model.variant: {"valid": out["valid"], "test": out["test"]}}
    record = results_json(results, out["protocol"], split, {
        "params": {"variant": model.variant, "num_parameters": model.num_parameters(), **model.config,
                   "loss": trainer.loss, "num_negatives": trainer.num_negatives,
                   "negative_sampler": type(sampler).__name__},
        "training": out["training"], "timing": out["timing"],
        "env": env_info()})
    write_results(run_dir, record)
    save_ranks(Path(run_dir) / "ranks.safetensors", results)
    print(format_table(results))
    return record
