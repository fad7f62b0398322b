"""The one training loop of the project: scorers, generators, the CF baselines and the RQ-VAE.
(Over 400 lines on purpose: the task interface, the settings and the loop are one contract that
every model family depends on, and are read together.)

A model family supplies a TrainingTask: its batches for an epoch, its step (batch -> loss), and an
evaluation hook; the Trainer does the rest, the same way for everyone:

- epochs of batches, optionally capped by `max_steps` optimizer steps or `max_minutes` of training;
- AdamW, linear warm-up then a 'constant' / 'cosine' / 'inverse_sqrt' learning-rate factor;
- a finite-loss and finite-gradient-norm guard before every optimizer step, clipping at `grad_clip`;
- validation every `eval_every` epochs (or every `eval_every_steps` steps) on a fixed subsample of
  `eval_users` users (seed `eval_seed`; None/0 = all), early stopping on its NDCG@10 after
  `patience` validations without a better value, and once more at the end if the last step was
  not validated;
- checkpoints/last at every validation, at epoch ends and every `checkpoint_every_steps` steps;
  checkpoints/best on a new best; both atomic (retrieval.core.checkpoints). A checkpoint holds the
  data position (epoch, batch), the order RNG as of the epoch's start, the torch/numpy RNGs and the
  task's own state (e.g. a negative sampler's RNG), so --resume replays the uninterrupted run
  exactly; a checkpoint for another model/dataset/batching is refused, naming the field;
- metrics.jsonl: "train" records every `log_every_steps` steps (0 = once per epoch) and "eval"
  records; on resume the records past the checkpoint are dropped;
- under torchrun (retrieval.core.distributed) every rank builds the same global batch and the task
  trains on its share of it inside DistributedDataParallel (`local_rows`: an idle rank trains a
  weight-0 row so the collectives stay in step); only rank 0 writes files.
"""
from __future__ import annotations

import math
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, NamedTuple

import numpy as np
import torch
from tqdm.auto import tqdm

from retrieval.core import distributed, gin_values
from retrieval.core.checkpoints import (BEST, LAST, EarlyStopping, MetricsLog, autocast, check_signature,
                                        load_checkpoint, save_checkpoint, truncate_log)
from retrieval.core.errors import RecError
from retrieval.core.io import remove_stale_temps

SELECT_METRIC = "ndcg@10"                 # model selection: validation full-ranking NDCG@10
SCHEDULES = ("constant", "cosine", "inverse_sqrt")


class StepOutput(NamedTuple):
    """loss: the tensor to back-propagate (this rank's share of the global batch mean); value: the
    mean loss of this rank's targets, for the log; count: how many targets that mean is over (0 on
    a rank that trained a weight-0 row)."""

    loss: torch.Tensor
    value: float
    count: int


class TrainingTask:
    """What a model family gives the Trainer. Hooks with a default may be left alone."""

    model: torch.nn.Module
    num_users: int = 0                    # validation users (row ids 0..num_users-1)
    find_unused_parameters = False        # DDP: some parameters take no part in some steps

    def signature(self) -> dict:
        """What a checkpoint must match to be resumed or selected (model, dataset, batching)."""
        raise NotImplementedError

    def epoch_batches(self, epoch: int, rng: np.random.Generator) -> list:
        """The global batches of epoch `epoch` (0-based). `rng` is the Trainer's order RNG."""
        raise NotImplementedError

    def step(self, batch, runner: distributed.StepRunner) -> StepOutput:
        """Forward one global batch (this rank's rows of it) through `runner`; return the loss."""
        raise NotImplementedError

    def validate(self, users: np.ndarray) -> dict | None:
        """Full-ranking validation metrics of `users` ({"ndcg@10": ..., ...}); None = no validation
        (then there is no early stopping and no best checkpoint)."""
        return None

    def validation_order(self, users: np.ndarray) -> np.ndarray:
        """The order in which `users` are validated (means do not depend on it; speed may)."""
        return users

    def param_groups(self):
        return self.model.parameters()

    def lr_factor(self, total_steps: int) -> Callable[[int], float] | None:
        """A learning-rate factor of the step count overriding the Trainer's schedule, or None."""
        return None

    def on_epoch_start(self, epoch: int) -> None:
        pass

    def after_step(self, step: int, out: StepOutput) -> None:
        pass

    def state(self) -> dict:
        """JSON-able state a resume needs beyond the model and optimizer (e.g. a sampler's RNG)."""
        return {}

    def load_state(self, state: dict) -> None:
        pass


def local_rows(num_rows: int, counts: np.ndarray | None = None) -> tuple[np.ndarray, float]:
    """This rank's rows of a global batch of `num_rows` and the factor on its mean loss
    (its share of the targets, `counts` per row; 1 per row when None). A rank left without rows
    trains on row 0 with weight 0, so every rank still runs the step's collectives."""
    rows = distributed.shard(np.arange(num_rows))
    if len(rows) == 0:
        return np.arange(1), 0.0
    if counts is None:
        return rows, distributed.loss_weight(len(rows), num_rows)
    return rows, distributed.loss_weight(int(counts[rows].sum()), int(counts.sum()))


def lr_factor(step: int, warmup_steps: int, schedule: str, total_steps: int) -> float:
    """Multiplier of the peak learning rate after `step` optimizer steps: linear warm-up, then
    constant, inverse square root (T5/TIGER) or cosine decay to 0 over `total_steps`."""
    s = step + 1
    if s <= warmup_steps:
        return s / max(1, warmup_steps)
    if schedule == "inverse_sqrt":
        return math.sqrt(max(1, warmup_steps) / s)
    if schedule == "cosine":
        progress = min(1.0, (s - warmup_steps) / max(1, total_steps - warmup_steps))
        return 0.5 * (1.0 + math.cos(math.pi * progress))
    return 1.0


def subsample(num_users: int, n: int | None, seed: int) -> np.ndarray:
    """A sorted fixed-seed sample of n user rows (all users when n is None, <= 0 or >= num_users)."""
    if not n or n <= 0 or n >= num_users:
        return np.arange(num_users)
    return np.sort(np.random.default_rng(seed).choice(num_users, size=n, replace=False))


@dataclass
class FitSummary:
    """How a run went. epochs: completed epochs + the fraction of the current one."""

    steps: int
    epochs: float
    best_step: int
    best_valid: float
    stopped_by: str
    train_seconds: float
    epoch_seconds: list = field(default_factory=list)
    epoch_cpu_seconds: list = field(default_factory=list)
    eval_users: int = 0
    finished: bool = True                 # False: stopped by `stop_after_epochs`, resume later

    def timing(self) -> dict:
        e, c = self.epoch_seconds, self.epoch_cpu_seconds
        return {"train_seconds_total": self.train_seconds, "epoch_seconds": e,
                "mean_epoch_seconds": float(np.mean(e)) if e else None, "epoch_cpu_seconds": c,
                "mean_epoch_cpu_seconds": float(np.mean(c)) if c else None}

    def training(self) -> dict:
        return {"steps": self.steps, "epochs": self.epochs, "best_step": self.best_step,
                "best_valid_ndcg@10": self.best_valid, "stopped_by": self.stopped_by,
                "validation_users": self.eval_users}


class Trainer:
    """The settings every family shares (same names, same meanings); `name` prefixes messages
    (the family's gin name, e.g. 'ScorerTrainer').

    num_epochs: most epochs. max_steps / max_minutes: also stop after this many optimizer steps /
    minutes of training, summed over resumes (0 = no limit). batch_size: global batch. lr, betas,
    weight_decay: AdamW. schedule / warmup_steps / warmup_epochs: the learning-rate factor
    (warm-up in epochs when warmup_epochs > 0). grad_clip: max global gradient norm (None or 0 =
    off). eval_every: validate every E epochs; eval_every_steps > 0 validates every S steps instead.
    eval_users: validation subsample (None or 0 = all users; the final numbers always use all),
    drawn with eval_seed. patience: validations without a better NDCG@10 before stopping.
    checkpoint_every_steps: also write checkpoints/last every S steps (0 = only at validations and
    epoch ends). log_every_steps: a "train" metrics record every S steps (0 = once per epoch).
    seed: batch order and model initialisation. device: None = CUDA when available. amp: bf16
    autocast on CUDA (CPU trains in float32). num_threads: torch CPU threads (None or 0 = torch's
    default; 1 is fastest on an oversubscribed box). progress: tqdm bar.
    """

    name = "Trainer"

    def __init__(self, *, num_epochs: int, batch_size: int, lr: float, weight_decay: float = 0.0,
                 betas: tuple = (0.9, 0.999), schedule: str = "constant", warmup_steps: int = 0,
                 warmup_epochs: float = 0.0, grad_clip: float | None = None, max_steps: int = 0,
                 max_minutes: float = 0.0, eval_every: int = 1, eval_every_steps: int = 0,
                 eval_users: int | None = None, eval_seed: int = 0, patience: int = 10,
                 checkpoint_every_steps: int = 0, log_every_steps: int = 0, seed: int = 42,
                 device: str | None = None, amp: bool = True, progress: bool = True,
                 num_threads: int | None = None):
        n = self.name
        self.num_epochs = gin_values.integer(f"{n}.num_epochs", num_epochs)
        self.batch_size = gin_values.integer(f"{n}.batch_size", batch_size)
        self.lr = gin_values.positive_number(f"{n}.lr", lr)
        for key, value in (("weight_decay", weight_decay), ("warmup_epochs", warmup_epochs),
                           ("max_minutes", max_minutes), ("grad_clip", grad_clip or 0)):
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not value >= 0:
                raise RecError(f"{n}.{key} = {value!r} must be a number >= 0; fix it in the gin config")
        self.weight_decay, self.betas = float(weight_decay), tuple(betas)
        if schedule not in SCHEDULES:
            raise RecError(f"{n}.schedule = {schedule!r} is unknown; use one of {', '.join(SCHEDULES)}")
        self.schedule, self.warmup_epochs = schedule, float(warmup_epochs)
        self.warmup_steps = gin_values.integer(f"{n}.warmup_steps", warmup_steps, minimum=0)
        self.grad_clip = float(grad_clip) if grad_clip else None
        self.max_steps = gin_values.integer(f"{n}.max_steps", max_steps, minimum=0)
        self.max_minutes = float(max_minutes)
        self.eval_every = gin_values.integer(f"{n}.eval_every", eval_every)
        self.eval_every_steps = gin_values.integer(f"{n}.eval_every_steps", eval_every_steps, minimum=0)
        self.eval_users = (gin_values.integer(f"{n}.eval_users", eval_users, minimum=0) or None
                           if eval_users is not None else None)
        self.eval_seed = int(eval_seed)
        self.patience = gin_values.integer(f"{n}.patience", patience)
        self.checkpoint_every_steps = gin_values.integer(f"{n}.checkpoint_every_steps",
                                                         checkpoint_every_steps, minimum=0)
        self.log_every_steps = gin_values.integer(f"{n}.log_every_steps", log_every_steps, minimum=0)
        self.seed, self.amp, self.progress = int(seed), bool(amp), bool(progress)
        self.num_threads = int(num_threads) if num_threads else None
        if self.num_threads:
            torch.set_num_threads(self.num_threads)
        self.device = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))

    def describe(self) -> dict:
        """The settings, for results.json."""
        keys = ("num_epochs", "max_steps", "max_minutes", "batch_size", "lr", "betas", "weight_decay",
                "schedule", "warmup_steps", "warmup_epochs", "grad_clip", "eval_every",
                "eval_every_steps", "eval_users", "eval_seed", "patience", "seed")
        return {k: getattr(self, k) for k in keys}

    def eval_subsample(self, num_users: int) -> np.ndarray:
        return subsample(num_users, self.eval_users, self.eval_seed)

    # ------------------------------------------------------------------------------ the loop
    def run(self, task: TrainingTask, run_dir: Path | None, resume: bool = False,
            stop_after_epochs: int | None = None) -> FitSummary:
        """Train task.model in place (it ends with the last weights; the best are in run_dir).

        run_dir None: an in-memory fit (no checkpoints, no log, no resume). stop_after_epochs:
        return after that many epochs of this call (FitSummary.finished False), to be resumed.
        """
        main = distributed.is_main()                           # the one process that writes files
        files = run_dir is not None
        run_dir = Path(run_dir) if files else None
        last = run_dir / LAST if files else None
        if files and main:
            remove_stale_temps(run_dir)                        # left by a process killed mid-write
        has_last = files and last.with_suffix(".json").is_file()
        if resume and not has_last:
            raise RecError(f"--resume given but {run_dir / LAST}.json does not exist; drop --resume to "
                           "start a new run")
        if has_last and not resume:
            raise RecError(f"{run_dir} already holds a checkpoint; pass --resume to continue it or "
                           "choose a fresh --run_dir")
        model = task.model.to(self.device)
        runner = distributed.wrap(model, find_unused_parameters=task.find_unused_parameters)
        opt = torch.optim.AdamW(task.param_groups(), lr=self.lr, betas=self.betas,
                                weight_decay=self.weight_decay)
        order = np.random.default_rng(self.seed)               # batch order (tasks may ignore it)
        epoch_start_state = order.bit_generator.state
        batches = task.epoch_batches(0, order)
        steps_per_epoch = max(1, len(batches))
        total = self.max_steps or self.num_epochs * steps_per_epoch
        warmup = (round(self.warmup_epochs * steps_per_epoch) if self.warmup_epochs > 0
                  else self.warmup_steps)
        factor = task.lr_factor(total) or (lambda s: lr_factor(s, warmup, self.schedule, total))
        sched = torch.optim.lr_scheduler.LambdaLR(opt, factor)
        stopper = EarlyStopping(patience=self.patience)
        log = MetricsLog(run_dir / "metrics.jsonl" if files and main else None)
        signature = task.signature()
        st = {"epoch": 0, "batch": 0, "step": 0, "last_eval_step": -1, "train_seconds": 0.0,
              "epoch_seconds": [], "epoch_cpu_seconds": []}
        if resume:
            check_signature(last.with_suffix(".json"), signature)
            saved = load_checkpoint(last, model, opt, sched)
            st = {k: saved[k] for k in st}
            stopper = EarlyStopping(**{**saved["early_stopping"], "patience": self.patience})
            self._apply_hyperparameters(opt, sched, run_dir)
            task.load_state(saved["task"])
            order.bit_generator.state = saved["order_rng"]
            epoch_start_state = order.bit_generator.state
            batches = task.epoch_batches(st["epoch"], order)
        truncate_log(log, st["step"] if resume else -1)        # drop records past the resume point
        users = task.validation_order(self.eval_subsample(task.num_users))
        epoch, pos, step, last_eval = st["epoch"], st["batch"], st["step"], st["last_eval_step"]
        epoch_seconds, epoch_cpu = list(st["epoch_seconds"]), list(st["epoch_cpu_seconds"])
        t_start = time.perf_counter() - st["train_seconds"]
        window = [0.0, 0, time.perf_counter()]                 # loss sum, targets, start time

        def position() -> dict:
            return {"epoch": epoch, "batch": pos, "step": step, "last_eval_step": last_eval,
                    "train_seconds": time.perf_counter() - t_start, "epoch_seconds": epoch_seconds,
                    "epoch_cpu_seconds": epoch_cpu, "early_stopping": stopper.state(),
                    "order_rng": epoch_start_state, "signature": signature, "task": task.state()}

        def save_last() -> None:
            if files and main:
                save_checkpoint(last, model, opt, sched, position())

        def evaluate() -> bool:
            """Validation, best/last checkpoints; True when early stopping says stop."""
            nonlocal last_eval
            last_eval = step
            metrics = task.validate(users)
            if metrics is None:
                return False
            improved = stopper.update(metrics[SELECT_METRIC], step)
            log.write(kind="eval", step=step, epoch=epoch + pos / len(batches), users=len(users),
                      **{f"valid_{k}": v for k, v in metrics.items()}, best=improved)
            if improved and files and main:
                save_checkpoint(run_dir / BEST, model, state={**position(), "valid_ndcg@10":
                                                              metrics[SELECT_METRIC]})
            save_last()
            if self.progress and main:
                tqdm.write(f"{self.name}: step {step} epoch {epoch + pos / len(batches):.2f} valid "
                           f"ndcg@10 {metrics[SELECT_METRIC]:.4f}" + (" (best)" if improved else ""))
            return stopper.should_stop

        def write_train_record(now: float) -> None:
            loss_sum, n = distributed.all_reduce_sum(window[:2])
            log.write(kind="train", step=step, epoch=epoch + pos / len(batches),
                      loss=loss_sum / max(n, 1), lr=sched.get_last_lr()[0],
                      targets_per_s=n / max(now - window[2], 1e-9), train_seconds=now - t_start)
            window[:] = [0.0, 0, now]

        stopped_by = "early_stopping" if stopper.should_stop else "num_epochs"
        done = stopper.should_stop                             # a resumed run that had stopped
        if self.max_steps and step >= self.max_steps:          # ... or had used its step budget
            done, stopped_by = True, "max_steps"
        ran = 0
        bar = tqdm(total=total, initial=step, desc=f"train ({self.name})", dynamic_ncols=True,
                   disable=not self.progress or not main)
        model.train()
        while not done and epoch < self.num_epochs:
            if stop_after_epochs is not None and ran >= stop_after_epochs:
                bar.close()
                return self._summary(stopper, step, epoch, pos, len(batches), "paused", t_start,
                                     epoch_seconds, epoch_cpu, len(users), finished=False)
            task.on_epoch_start(epoch)
            model.train()
            t_epoch, c_epoch = time.perf_counter(), time.process_time()
            while pos < len(batches):
                out = self.train_step(task, runner, opt, batches[pos],
                                      f"at step {step + 1} (epoch {epoch + 1}, batch {pos})")
                sched.step()
                step, pos = step + 1, pos + 1
                bar.update(1)
                window[0] += out.value * out.count
                window[1] += out.count
                task.after_step(step, out)
                if self.log_every_steps and step % self.log_every_steps == 0:
                    write_train_record(time.perf_counter())
                if self.eval_every_steps and step % self.eval_every_steps == 0 and evaluate():
                    done, stopped_by = True, "early_stopping"
                elif self.checkpoint_every_steps and step % self.checkpoint_every_steps == 0:
                    save_last()
                if self.max_steps and step >= self.max_steps:
                    done, stopped_by = True, "max_steps"
                elif self.max_minutes and distributed.any_rank(   # ranks stop at the same step
                        time.perf_counter() - t_start >= 60 * self.max_minutes):
                    done, stopped_by = True, "max_minutes"
                if done:
                    break
            if pos < len(batches):                             # stopped inside the epoch
                break
            epoch_seconds.append(time.perf_counter() - t_epoch)
            epoch_cpu.append(time.process_time() - c_epoch)   # CPU time: comparable on a shared box
            epoch, pos, ran = epoch + 1, 0, ran + 1
            if not self.log_every_steps:
                write_train_record(time.perf_counter())
            epoch_start_state = order.bit_generator.state
            if epoch < self.num_epochs and not done:
                batches = task.epoch_batches(epoch, order)
            validate_now = not self.eval_every_steps and epoch % self.eval_every == 0
            if validate_now and not done and evaluate():
                done, stopped_by = True, "early_stopping"
            elif last_eval != step:
                save_last()
        bar.close()
        if last_eval != step:                                  # the last weights get a look too
            if evaluate():
                stopped_by = "early_stopping" if stopped_by == "num_epochs" else stopped_by
        distributed.barrier()                                  # rank 0's checkpoints are on disk
        return self._summary(stopper, step, epoch, pos, len(batches), stopped_by, t_start,
                             epoch_seconds, epoch_cpu, len(users))

    def train_step(self, task: TrainingTask, runner, opt, batch, where: str) -> StepOutput:
        """One optimizer step on one global batch, behind the finite-loss and -gradient guards."""
        with autocast(self.device, self.amp):
            out = task.step(batch, runner)
        if not torch.isfinite(out.loss):
            raise RecError(f"training loss is {float(out.loss.detach())} {where}; nothing after the last "
                           f"checkpoint was saved. Lower {self.name}.lr or set a warm-up / "
                           f"{self.name}.grad_clip, then start again or --resume")
        opt.zero_grad(set_to_none=True)
        out.loss.backward()
        # A finite loss can still have non-finite gradients (e.g. an exploding lr): check the
        # norm before the step, so no NaN weights reach a checkpoint.
        norm = torch.nn.utils.clip_grad_norm_(task.model.parameters(), self.grad_clip or float("inf"))
        if not torch.isfinite(norm):
            raise RecError(f"gradient norm is {norm.item()} {where}; lower {self.name}.lr or set "
                           f"{self.name}.grad_clip, then start again or --resume")
        opt.step()
        return out

    def train_batches(self, task: TrainingTask, batches: list, optimizer=None) -> dict:
        """One pass over `batches` with no files, validation or schedule (benchmarks); returns the
        mean loss, the targets and the wall seconds. `optimizer` carries over between calls."""
        model = task.model.to(self.device)
        runner = distributed.wrap(model, find_unused_parameters=task.find_unused_parameters)
        opt = optimizer or torch.optim.AdamW(task.param_groups(), lr=self.lr, betas=self.betas,
                                             weight_decay=self.weight_decay)
        model.train()
        t0, loss_sum, targets = time.perf_counter(), 0.0, 0
        for b, batch in enumerate(batches):
            out = self.train_step(task, runner, opt, batch, f"at batch {b}")
            loss_sum, targets = loss_sum + out.value * out.count, targets + out.count
        return {"loss": loss_sum / max(targets, 1), "targets": targets,
                "seconds": time.perf_counter() - t0}

    def _summary(self, stopper, step, epoch, pos, n_batches, stopped_by, t_start, epoch_seconds,
                 epoch_cpu, eval_users, finished: bool = True) -> FitSummary:
        return FitSummary(steps=step, epochs=epoch + pos / max(n_batches, 1), best_step=stopper.best_step,
                          best_valid=stopper.best, stopped_by=stopped_by,
                          train_seconds=time.perf_counter() - t_start, epoch_seconds=epoch_seconds,
                          epoch_cpu_seconds=epoch_cpu, eval_users=eval_users, finished=finished)

    def _apply_hyperparameters(self, opt, sched, run_dir: Path) -> None:
        """A resumed run trains on with this config's lr / betas / weight decay (the optimizer state
        is the checkpoint's), e.g. a lower lr after a divergence; changes are logged."""
        norm = lambda v: tuple(v) if isinstance(v, (list, tuple)) else v            # noqa: E731
        group = opt.param_groups[0]
        old = {"lr": sched.base_lrs[0], "betas": norm(group["betas"]), "weight_decay": group["weight_decay"]}
        new = {"lr": self.lr, "betas": self.betas, "weight_decay": self.weight_decay}
        changed = {k: (old[k], v) for k, v in new.items() if old[k] != v}
        if not changed:
            return
        for g in opt.param_groups:
            if "lr" in changed:
                g["initial_lr"], g["lr"] = self.lr, g["lr"] * self.lr / sched.base_lrs[0]
            if "betas" in changed:
                g["betas"] = self.betas
            if "weight_decay" in changed and g["weight_decay"] == old["weight_decay"]:
                g["weight_decay"] = self.weight_decay
        sched.base_lrs = [self.lr] * len(sched.base_lrs)
        if distributed.is_main():
            said = ", ".join(f"{k} {a} -> {b}" for k, (a, b) in changed.items())
            tqdm.write(f"{run_dir}: resuming with {self.name} {said}")
