"""The training loop of the user-ID baselines (BPR-MF, NeuMF; retrieval.models.collaborative).

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

import time
from pathlib import Path

import gin
import numpy as np
import torch
import torch.nn.functional as F
from tqdm.auto import tqdm

from retrieval import distributed, gin_values
from retrieval.data.types import SplitData
from retrieval.errors import RecError
from retrieval.evaluation import EvalResult, Evaluator
from retrieval.evaluation.report import format_table, results_json, save_ranks, write_results
from retrieval.io import remove_stale_temps
from retrieval.negatives import NegativeSampler, build_negative_sampler
from retrieval.scorer_trainer import SELECT, check_signature, truncate_metrics
from retrieval.training import EarlyStopping, MetricsLog, load_checkpoint, save_checkpoint, set_seed

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
class CFTrainer:
    """num_epochs: most epochs. batch_size: positive pairs per step. lr / weight_decay: AdamW.
    l2: weight of the squared norms of the batch's embedding rows. loss: 'bpr' or 'bce'.
    num_negatives: sampled negatives per positive. eval_every / patience / eval_users: validation
    schedule and early stopping, as ScorerTrainer (eval_users None or 0 = all users). num_threads:
    torch CPU threads (None = torch's default).
    """

    def __init__(self, num_epochs: int = 100, batch_size: int = 1024, lr: float = 1e-3,
                 weight_decay: float = 0.0, l2: float = 0.0, loss: str = "bpr", num_negatives: int = 1,
                 eval_every: int = 1, patience: int = 5, eval_users: int | None = None, seed: int = 42,
                 device: str | None = None, progress: bool = True, num_threads: int | None = None):
        num_epochs, batch_size, num_negatives, eval_every, patience = (
            gin_values.integer(f"CFTrainer.{k}", v) for k, v in (
                ("num_epochs", num_epochs), ("batch_size", batch_size),
                ("num_negatives", num_negatives), ("eval_every", eval_every), ("patience", patience)))
        lr = gin_values.positive_number("CFTrainer.lr", lr)
        for key, value in (("weight_decay", weight_decay), ("l2", l2)):
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not value >= 0:
                raise RecError(f"CFTrainer.{key} = {value!r} must be a number >= 0; fix it in the gin config")
        if loss not in LOSSES:
            raise RecError(f"CFTrainer.loss = {loss!r} is unknown; use one of {', '.join(LOSSES)}")
        if eval_users is not None:
            eval_users = gin_values.integer("CFTrainer.eval_users", eval_users, minimum=0) or None
        self.num_epochs, self.batch_size, self.lr = num_epochs, batch_size, lr
        self.weight_decay, self.l2, self.loss = float(weight_decay), float(l2), loss
        self.num_negatives, self.eval_every, self.patience = num_negatives, eval_every, patience
        self.eval_users, self.seed, self.progress = eval_users, seed, progress
        if num_threads:
            torch.set_num_threads(int(num_threads))
        self.device = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))

    def train_epoch(self, model, data: InteractionPairs, sampler: NegativeSampler, optimizer,
                    rng: np.random.Generator, epoch: int, step: int) -> dict:
        model.train()
        total = 0.0
        for b, idx in enumerate(tqdm(data.batches(rng, self.batch_size), desc=f"epoch {epoch}",
                                     disable=not self.progress, leave=False)):
            users_np, pos_np = data.users[idx], data.items[idx]
            neg_np = sampler.sample(users_np, pos_np, self.num_negatives)          # (P, n)
            users = torch.from_numpy(users_np).to(self.device)
            items = torch.from_numpy(np.concatenate([pos_np[:, None], neg_np], 1)).to(self.device)
            scores = model.pair_scores(users, items)                               # (P, 1 + n)
            loss = pair_loss(self.loss, scores[:, 0], scores[:, 1:])
            if self.l2:
                loss = loss + self.l2 * model.embedding_norms(users, items).mean()
            if not torch.isfinite(loss):
                raise RecError(f"training loss is {float(loss)} at epoch {epoch}, batch {b}; nothing of "
                               "this epoch was saved. Lower CFTrainer.lr, then start again or --resume")
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            step += 1
            total += float(loss.detach()) * len(idx)
        return {"loss": total / len(data), "pairs": len(data), "step": step}

    def fit(self, model, split: SplitData, sampler: NegativeSampler, run_dir: Path,
            resume: bool = False, max_epochs_this_run: int | None = None) -> dict | None:
        """Train with early stopping, then evaluate the best checkpoint on valid and test.

        Returns {"valid": EvalResult, "test": EvalResult, "protocol", "best_epoch", "epochs_run",
        "steps", "early_stopping", "timing"}, or None when `max_epochs_this_run` ended this call
        before the run finished (call again with resume=True).
        """
        if distributed.world_size() > 1:
            raise RecError("CFTrainer trains in one process; start scripts/train_cf.py without torchrun")
        run_dir = Path(run_dir)
        remove_stale_temps(run_dir)
        last, best = run_dir / "checkpoints" / "last", run_dir / "checkpoints" / "best"
        model.to(self.device)
        optimizer = torch.optim.AdamW(model.parameters(), lr=self.lr, weight_decay=self.weight_decay)
        data = InteractionPairs(split)
        signature = {"variant": model.variant, "model": model.config, "dataset": split.name,
                     "dataset_fingerprint": split.fingerprint, "num_items": split.num_items,
                     "loss": f"{self.loss}x{self.num_negatives}"}
        metrics = MetricsLog(run_dir / "metrics.jsonl")
        rng = np.random.default_rng(self.seed)
        stopper = EarlyStopping(patience=self.patience)
        epoch, step, epoch_times = 0, 0, []
        if resume and not last.with_suffix(".json").is_file():
            raise RecError(f"--resume given but {last.with_suffix('.json')} does not exist; drop "
                           "--resume to start a new run")
        if last.with_suffix(".json").is_file():
            if not resume:
                raise RecError(f"{run_dir} already holds a checkpoint; pass --resume to continue it "
                               "or choose a fresh --run_dir")
            check_signature(last.with_suffix(".json"), signature)
            st = load_checkpoint(last, model, optimizer)
            for group in optimizer.param_groups:               # this config's lr / decay go on
                group.update(lr=self.lr, weight_decay=self.weight_decay)
            epoch, step, epoch_times = st["epoch"], st["step"], st["epoch_seconds"]
            stopper = EarlyStopping(**{**st["early_stopping"], "patience": self.patience})
            rng.bit_generator.state = st["order_rng"]
            sampler.load_state(st["sampler"])
        truncate_metrics(metrics.path, epoch)

        val_eval = Evaluator(sampled=False, progress=False)
        val_users = np.arange(split.num_users)
        if self.eval_users is not None and self.eval_users < split.num_users:
            val_users = np.sort(np.random.default_rng(self.seed + 1).choice(
                split.num_users, size=self.eval_users, replace=False))
        ran = 0
        while epoch < self.num_epochs and not stopper.should_stop:
            if max_epochs_this_run is not None and ran >= max_epochs_this_run:
                return None
            epoch += 1
            t0 = time.perf_counter()
            out = self.train_epoch(model, data, sampler, optimizer, rng, epoch, step)
            step = out["step"]
            epoch_times.append(time.perf_counter() - t0)
            record = {"epoch": epoch, "step": step, "loss": out["loss"], "epoch_seconds": epoch_times[-1]}
            if epoch % self.eval_every == 0 or epoch == self.num_epochs:
                res = val_eval.evaluate(model, split, "valid", users=val_users)
                value = res.metrics[SELECT[0]][SELECT[1]]
                record.update({f"valid_{k}": v for k, v in res.metrics["full"].items()
                               if k in ("hr@10", "ndcg@10", "mrr", "auc")})
                record["best"] = stopper.update(value, epoch)
                if record["best"]:
                    save_checkpoint(best, model, state={"epoch": epoch, "signature": signature,
                                                        "valid_ndcg@10": value})
            metrics.write(**record)
            save_checkpoint(last, model, optimizer, state={
                "epoch": epoch, "step": step, "signature": signature, "epoch_seconds": epoch_times,
                "early_stopping": stopper.state(), "order_rng": rng.bit_generator.state,
                "sampler": sampler.state()})
            ran += 1
            if self.progress:
                print({k: round(v, 5) if isinstance(v, float) else v for k, v in record.items()},
                      flush=True)

        if not best.with_suffix(".json").is_file():
            raise RecError(f"{run_dir}: training finished without a validation checkpoint; "
                           "check CFTrainer.eval_every")
        check_signature(best.with_suffix(".json"), signature)
        best_state = load_checkpoint(best, model, restore_rng=False)
        final_eval = Evaluator(progress=self.progress)
        t1 = time.perf_counter()
        results: dict[str, EvalResult] = {st: final_eval.evaluate(model, split, st)
                                          for st in ("valid", "test")}
        return {**results,
                "protocol": {"primary": "full", "secondary": "sampled-100", "split": "leave-one-out",
                             "selection": f"best validation {SELECT[0]} {SELECT[1]}; test computed "
                                          "once for that checkpoint", **final_eval.protocol()},
                "best_epoch": best_state["epoch"], "epochs_run": epoch, "steps": step,
                "early_stopping": stopper.state(),
                "timing": {"epoch_seconds": epoch_times,
                           "mean_epoch_seconds": float(np.mean(epoch_times)) if epoch_times else None,
                           "train_seconds_total": float(np.sum(epoch_times)),
                           "final_eval_seconds": time.perf_counter() - t1, "device": str(self.device)}}


def train_cf(run_dir: Path, resume: bool = False) -> dict:
    """Train the gin-configured user-ID model (make_cf_model) on the gin-selected split, evaluate
    its validation-selected checkpoint, print a table and write run_dir/results.json and
    run_dir/ranks.safetensors in the shape every evaluation writes (retrieval.evaluation.report;
    the model's name is its variant, 'bpr-mf' or 'ncf'). Returns the results.json record."""
    from retrieval.cli import env_info
    from retrieval.data import load_split
    from retrieval.models.collaborative import make_cf_model

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
        **{k: out[k] for k in ("best_epoch", "epochs_run", "steps", "early_stopping", "timing")},
        "env": env_info()})
    write_results(run_dir, record)
    save_ranks(Path(run_dir) / "ranks.safetensors", results)
    print(format_table(results))
    return record
