"""Teacher-forced training of a generator (any kind of onerec.generators: the model supplies its
training samples and its loss), with early stopping on validation NDCG@10 through the
shared evaluator, crash-safe checkpoints and exact resume.

Reproducibility: an epoch's batch order is a pure function of (seed, epoch); a checkpoint stores the
model, AdamW, the LR schedule, the torch RNG (dropout), the data position (epoch, batch) and the
early-stopping state. Resuming from it therefore replays the uninterrupted run bit for bit.

Run directory files: checkpoints/last.{safetensors,json} (resume point), checkpoints/best.* (selected
on validation), metrics.jsonl (training curves: kind "train" and "eval" records).

Under torchrun (retrieval.distributed) every rank builds the same global batch, trains on every W-th
sample of it inside DistributedDataParallel and evaluates every W-th user; batch_size is the global
batch, and only rank 0 logs and writes checkpoints. On CUDA the forward runs under bf16 autocast.
"""
from __future__ import annotations

import json
import math
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import gin
import numpy as np
import torch
from tqdm.auto import tqdm

from retrieval import distributed, gin_values
from retrieval.data.types import SplitData
from retrieval.errors import RecError
from retrieval.evaluation import Evaluator
from retrieval.io import remove_stale_temps, write_text
from retrieval.training import EarlyStopping, MetricsLog, autocast, load_checkpoint, save_checkpoint

LAST, BEST = "checkpoints/last", "checkpoints/best"
SELECT_METRIC = "ndcg@10"


@dataclass
class TrainSummary:
    steps: int
    epochs_done: float
    best_step: int
    best_valid: float
    stopped_by: str
    train_seconds: float


def subsample(num_users: int, n: int, seed: int) -> np.ndarray:
    """A sorted fixed-seed sample of n user rows (all users when n <= 0 or n >= num_users)."""
    if n <= 0 or n >= num_users:
        return np.arange(num_users)
    return np.sort(np.random.default_rng(seed).choice(num_users, size=n, replace=False))


def lr_factor(step: int, warmup_steps: int, schedule: str, total_steps: int) -> float:
    """Multiplier of the peak learning rate after `step` optimizer steps: linear warm-up, then
    inverse square root (T5/TIGER) or cosine decay to 0 over `total_steps`."""
    s = step + 1
    if s <= warmup_steps:
        return s / max(1, warmup_steps)
    if schedule == "inverse_sqrt":
        return math.sqrt(max(1, warmup_steps) / s)
    if schedule == "cosine":
        progress = min(1.0, (s - warmup_steps) / max(1, total_steps - warmup_steps))
        return 0.5 * (1.0 + math.cos(math.pi * progress))
    if schedule == "constant":
        return 1.0
    raise RecError(f"OneRecTrainer.schedule={schedule!r} is unknown; use 'inverse_sqrt', 'cosine' "
                   "or 'constant'")


@gin.configurable
class OneRecTrainer:
    """AdamW + warm-up/decay + gradient clipping (warm-up: `warmup_epochs` of steps when > 0, else
    `warmup_steps`); evaluation every `eval_every_steps` optimizer steps
    (0 = once per epoch) on a fixed-seed subsample of `eval_users` validation users (0 = all).

    Stops at the first of: max_epochs, max_steps, max_minutes of training time (summed over
    resumes), or `patience` evaluations without a better validation NDCG@10.
    device: None = CUDA when available (under torchrun: this rank's GPU), else CPU. amp: bf16
    autocast of the forward on CUDA (CPU runs in float32).
    """

    def __init__(self, batch_size: int = 256, lr: float = 1e-3, weight_decay: float = 0.01,
                 warmup_steps: int = 1000, warmup_epochs: float = 0.0, schedule: str = "inverse_sqrt",
                 max_epochs: int = 200,
                 max_steps: int = 0, max_minutes: float = 0.0, grad_clip: float = 1.0,
                 eval_every_steps: int = 0, eval_users: int = 2000, eval_seed: int = 0,
                 patience: int = 10, checkpoint_every_steps: int = 500, log_every_steps: int = 50,
                 bucket_batches: int = 50, seed: int = 42, progress: bool = True,
                 device: str | None = None, amp: bool = True):
        batch_size = gin_values.integer("OneRecTrainer.batch_size", batch_size)
        lr = gin_values.positive_number("OneRecTrainer.lr", lr)
        eval_users = gin_values.integer("OneRecTrainer.eval_users", eval_users, minimum=0)   # 0 = all
        self.batch_size, self.lr, self.weight_decay = int(batch_size), float(lr), float(weight_decay)
        self.warmup_steps, self.schedule = int(warmup_steps), str(schedule)
        self.warmup_epochs = float(warmup_epochs)
        self.max_epochs, self.max_steps, self.max_minutes = int(max_epochs), int(max_steps), float(max_minutes)
        self.grad_clip = float(grad_clip)
        self.eval_every_steps, self.eval_users, self.eval_seed = int(eval_every_steps), int(eval_users), int(eval_seed)
        self.patience, self.checkpoint_every_steps = int(patience), int(checkpoint_every_steps)
        self.log_every_steps, self.bucket_batches = int(log_every_steps), int(bucket_batches)
        self.seed, self.progress = int(seed), bool(progress)
        self.device = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
        self.amp = bool(amp)
        lr_factor(0, self.warmup_steps, self.schedule, 1)            # validates the schedule name

    def describe(self) -> dict:
        """Everything that shapes the training trajectory (part of the checkpoint config hash)."""
        return {k: getattr(self, k) for k in (
            "batch_size", "lr", "weight_decay", "warmup_steps", "schedule", "grad_clip",
            "eval_every_steps", "eval_users", "eval_seed", "patience", "bucket_batches", "seed")} | (
            {"warmup_epochs": self.warmup_epochs} if self.warmup_epochs > 0 else {}) | (
            {"max_epochs": self.max_epochs, "max_steps": self.max_steps}
            if self.schedule == "cosine" else {})

    def eval_subsample(self, num_users: int) -> np.ndarray:
        return subsample(num_users, self.eval_users, self.eval_seed)

    def fit(self, model: torch.nn.Module, split: SplitData, run_dir: Path, config_hash: str,
            evaluator: Evaluator, resume: bool = False,
            on_step: Callable[[int], None] | None = None) -> TrainSummary:
        """Train `model` in place; on return it holds the last weights (best ones are in run_dir)."""
        run_dir = Path(run_dir)
        main = distributed.is_main()                         # the one process that writes files
        if main:
            remove_stale_temps(run_dir)                      # left by a process killed mid-write
        samples = model.training_samples(split)              # windows (causal) or prefixes (tiger)
        if len(samples) == 0:
            raise RecError(f"dataset {split.name!r} has no training samples (every training sequence "
                           "has a single item); use a dataset with longer sequences")
        steps_per_epoch = math.ceil(len(samples) / self.batch_size)
        total = self.max_steps or self.max_epochs * steps_per_epoch
        warmup = (round(self.warmup_epochs * steps_per_epoch) if self.warmup_epochs > 0
                  else self.warmup_steps)
        model.to(self.device)
        runner = distributed.wrap(model)
        opt = torch.optim.AdamW(model.parameters(), lr=self.lr, weight_decay=self.weight_decay)
        sched = torch.optim.lr_scheduler.LambdaLR(
            opt, lambda s: lr_factor(s, warmup, self.schedule, total))
        stopper = EarlyStopping(patience=self.patience)
        log = MetricsLog(run_dir / "metrics.jsonl" if main else None)
        epoch, pos, step, elapsed, last_eval = 0, 0, 0, 0.0, -1
        if resume:
            st = load_checkpoint(run_dir / LAST, model, opt, sched, config_hash=config_hash)
            epoch, pos, step, elapsed = st["epoch"], st["batch"], st["step"], st["train_seconds"]
            last_eval = st["last_eval_step"]
            stopper = EarlyStopping(**st["early_stopping"])
            _truncate_log(log, step)                          # drop records past the resume point
        elif log.path is not None and log.path.is_file():    # a run killed before its 1st checkpoint
            _truncate_log(log, -1)
        users = self.eval_subsample(split.num_users)
        stopped_by = "max_epochs"
        window_loss, window_n, t_window = 0.0, 0, time.perf_counter()
        t_start = time.perf_counter() - elapsed

        def position_state(ep: int, b: int) -> dict:
            return {"epoch": ep, "batch": b, "step": step, "early_stopping": stopper.state(),
                    "last_eval_step": last_eval, "train_seconds": time.perf_counter() - t_start}

        def evaluate(ep: int, b: int) -> bool:
            """Validation on the subsample, best/last checkpoints; True when training should stop."""
            nonlocal last_eval
            last_eval = step
            res = evaluator.evaluate(model, split, "valid", users=users)
            value = res.metrics["full"][SELECT_METRIC]
            improved = stopper.update(value, step)          # same metrics on every rank
            log.write(kind="eval", step=step, epoch=ep + b / steps_per_epoch, users=len(users),
                      **{f"valid_{k}": v for k, v in res.metrics["full"].items()}, best=improved)
            if improved and main:
                save_checkpoint(run_dir / BEST, model, state=position_state(ep, b), config_hash=config_hash)
            if main:
                save_checkpoint(run_dir / LAST, model, opt, sched, position_state(ep, b), config_hash)
            return stopper.should_stop

        model.train()
        done = stopper.should_stop                            # a resumed run that had stopped
        if done:
            stopped_by = "early_stopping"
        bar = tqdm(total=total, initial=step, desc="train onerec",
                   disable=not self.progress or not main, dynamic_ncols=True)
        while not done and epoch < self.max_epochs:
            batches = samples.epoch_batches(self.batch_size, self.seed, epoch, self.bucket_batches)
            while pos < len(batches):
                rows = distributed.shard(batches[pos])          # this rank's part of the global batch
                n = samples.count(rows)                         # supervised targets of this rank
                weight = distributed.loss_weight(n, samples.count(batches[pos]))
                if len(rows) == 0:                              # keep in step with the other ranks
                    rows, weight = batches[pos][:1], 0.0
                batch = samples.batch(rows).to(self.device)
                with autocast(self.device, self.amp):
                    loss = runner(lambda m, b: m(b), batch)     # mean loss over this rank's targets
                if not torch.isfinite(loss):
                    raise RecError(f"training loss is {loss.item()} at step {step + 1} (epoch {epoch}, "
                                   f"batch {pos}); lower OneRecTrainer.lr or raise warmup_steps")
                opt.zero_grad(set_to_none=True)
                (loss * weight if weight != 1.0 else loss).backward()
                # A finite loss can still have non-finite gradients (e.g. an exploding lr); check the
                # norm before the step so no NaN weights reach a checkpoint.
                norm = torch.nn.utils.clip_grad_norm_(model.parameters(),
                                                      self.grad_clip if self.grad_clip > 0 else float("inf"))
                if not torch.isfinite(norm):
                    raise RecError(f"gradient norm is {norm.item()} at step {step + 1} (epoch {epoch}, "
                                   f"batch {pos}); lower OneRecTrainer.lr or raise warmup_steps")
                opt.step()
                sched.step()
                step, pos = step + 1, pos + 1
                bar.update(1)
                if weight:
                    window_loss, window_n = window_loss + loss.item() * n, window_n + n
                if step % self.log_every_steps == 0:
                    window_loss, window_n = distributed.all_reduce_sum([window_loss, window_n])
                    now = time.perf_counter()
                    log.write(kind="train", step=step, epoch=epoch + pos / len(batches),
                              loss=window_loss / window_n, lr=sched.get_last_lr()[0],
                              samples_per_s=window_n / max(now - t_window, 1e-9),
                              train_seconds=now - t_start)
                    bar.set_postfix(loss=f"{window_loss / window_n:.3f}")
                    window_loss, window_n, t_window = 0.0, 0, now
                if on_step is not None:
                    on_step(step)
                if self.eval_every_steps and step % self.eval_every_steps == 0 and evaluate(epoch, pos):
                    done, stopped_by = True, "early_stopping"
                elif self.checkpoint_every_steps and step % self.checkpoint_every_steps == 0:
                    save_checkpoint(run_dir / LAST, model, opt, sched, position_state(epoch, pos), config_hash)
                if self.max_steps and step >= self.max_steps:
                    done, stopped_by = True, "max_steps"
                elif self.max_minutes and distributed.any_rank(   # ranks stop at the same step
                        time.perf_counter() - t_start >= 60 * self.max_minutes):
                    done, stopped_by = True, "max_minutes"
                if done:
                    break
            if pos >= len(batches):
                epoch, pos = epoch + 1, 0
                if not self.eval_every_steps and evaluate(epoch, 0):
                    done, stopped_by = True, "early_stopping"
        bar.close()
        if last_eval != step:                                  # the last weights get a look too
            evaluate(epoch, pos)
        return TrainSummary(steps=step, epochs_done=epoch + pos / steps_per_epoch,
                            best_step=stopper.best_step, best_valid=stopper.best,
                            stopped_by=stopped_by, train_seconds=time.perf_counter() - t_start)


def _truncate_log(log: MetricsLog, step: int) -> None:
    """Keep only the metrics records up to `step` (the resume point), rewritten atomically."""
    records = [r for r in log.read() if r.get("step", 0) <= step]
    if log.path is not None:
        write_text(log.path, "".join(json.dumps(r, default=float) + "\n" for r in records))
