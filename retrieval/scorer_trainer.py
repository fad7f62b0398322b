"""The training loop every scorer variant shares (SASRec / TiSASRec ± mHC, GRU4Rec, BERT4Rec; any loss).

Examples are SASRec's: for each user with ≥ 2 training items, input = train[:-1] and targets =
train[1:] (the last `maxlen` of each, right-aligned, left-padded); every non-padding position is a
prediction. A model with `training_sequences(split)` supplies its own examples in the same form
(BERT4Rec: masked items as input, targets only at the masked positions). Batches are built by one vectorised gather per batch and trimmed to the longest row, so
there is no DataLoader and no worker queue. Negatives come from a NegativeSampler, for the flattened
non-padding positions only (its hooks: bind_item_embeddings once, set_epoch every epoch, the
sequence states with every draw). Losses score through the model's similarity head; optional
λ-weighted terms (retrieval.auxiliary_losses: semantic consistency, interest contrast; off by
default) are added to the main loss, and their RNG goes into the checkpoints with the sampler's.

Per epoch: train → (every `eval_every` epochs) validation full-ranking NDCG@10 on all users or a
fixed subsample → early stopping → `checkpoints/last` (model, optimizer, RNGs, position) and, on a
new best, `checkpoints/best`. Test is computed once, for the best checkpoint, at the end.
A NaN/inf loss stops the run with a RecError before anything of that epoch is saved.

Under torchrun (retrieval.distributed) every rank builds the same global batch and trains on every
W-th row of it inside DistributedDataParallel; negatives are drawn for the whole global batch on
every rank (same sampler stream, hard-negative queries gathered from all ranks) and each rank keeps
its rows', so a W-process run follows the single-process one. Only rank 0 logs and checkpoints.
"""
from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path

import gin
import numpy as np
import torch
from tqdm.auto import tqdm

from retrieval import distributed, gin_values
from retrieval.auxiliary_losses import AuxiliaryLosses
from retrieval.data.types import SplitData
from retrieval.errors import RecError
from retrieval.evaluation import Evaluator
from retrieval.io import atomic_write, remove_stale_temps, write_text
from retrieval.losses import ScorerLoss
from retrieval.negatives import NegativeSampler
from retrieval.training import (EarlyStopping, MetricsLog, autocast, load_checkpoint, read_checkpoint_json,
                                save_checkpoint)

SELECT = ("full", "ndcg@10")          # model selection metric: validation, full ranking


def right_aligned_windows(values: np.ndarray, starts: np.ndarray, ends: np.ndarray,
                          width: int) -> np.ndarray:
    """values[starts[b]:ends[b]] (last `width` of each), right-aligned and zero-padded: (B, width)."""
    lengths = np.minimum(ends - starts, width)
    col = np.arange(width)[None, :]
    src = ends[:, None] - (width - col)                                   # (B, width)
    valid = col >= (width - lengths)[:, None]
    out = np.zeros((len(starts), width), dtype=values.dtype)
    out[valid] = values[src[valid]]
    return out


@dataclass(frozen=True)
class TrainBatch:
    """users (B,); items, times, targets (B, L) right-aligned, 0 = padding; L ≤ maxlen."""

    users: np.ndarray
    items: np.ndarray
    times: np.ndarray
    targets: np.ndarray


class TrainingSequences:
    """The training examples of a split (users with ≥ 2 training items)."""

    def __init__(self, split: SplitData, maxlen: int):
        lengths = split.train_lengths
        self.users = np.nonzero(lengths >= 2)[0].astype(np.int64)
        if len(self.users) == 0:
            raise RecError(f"dataset {split.name!r}: no user has >= 2 training items; nothing to train on")
        self.starts = split.train_offsets[self.users]
        self.ends = split.train_offsets[self.users + 1]
        self.items, self.times, self.maxlen = split.train_items, split.train_times, maxlen

    def __len__(self) -> int:
        return len(self.users)

    @property
    def num_positions(self) -> int:
        """Non-padding predictions in one epoch."""
        return int(np.minimum(self.ends - self.starts - 1, self.maxlen).sum())

    def batches(self, rng: np.random.Generator, batch_size: int, bucket_batches: int) -> list[np.ndarray]:
        """One epoch's batches (indices into the examples), every example once, random order.

        bucket_batches > 0: a random permutation is cut into chunks of that many batches, each chunk
        is sorted by sequence length before it is cut into batches, and the batches are shuffled.
        Rows of a batch then have similar lengths, so little of the (B, L) batch is padding (on
        Beauty, 89% of a random batch is), while the examples a batch holds stay random.
        """
        order = rng.permutation(len(self))
        if bucket_batches > 0:
            chunk = np.arange(len(order)) // (batch_size * bucket_batches)
            order = order[np.lexsort(((self.ends - self.starts)[order], chunk))]
        cuts = [order[s:s + batch_size] for s in range(0, len(order), batch_size)]
        if bucket_batches > 0:
            cuts = [cuts[i] for i in rng.permutation(len(cuts))]
        return cuts

    def batch(self, idx: np.ndarray) -> TrainBatch:
        s, e = self.starts[idx], self.ends[idx]
        width = int(min(self.maxlen, (e - s).max() - 1))                  # longest input in the batch
        return TrainBatch(self.users[idx],
                          right_aligned_windows(self.items, s, e - 1, width),
                          right_aligned_windows(self.times, s, e - 1, width),
                          right_aligned_windows(self.items, s + 1, e, width))


@gin.configurable
class ScorerTrainer:
    """num_epochs: most epochs. eval_every: validate every E epochs. patience: validations without
    improvement before stopping. eval_users: validate on a fixed random subsample of this many users
    (None or 0 = all, as OneRecTrainer.eval_users; negative is refused; the final valid/test numbers
    always use all users). grad_clip: max global grad norm (None = off). amp: bf16 autocast on CUDA
    (CPU runs in float32). bucket_batches: length-bucketing window in batches (0 = plain random
    batches), see TrainingSequences.batches. num_threads: torch CPU threads (None = torch's
    default; 1 is fastest on a shared, oversubscribed box).
    """

    def __init__(self, num_epochs: int = 200, batch_size: int = 128, lr: float = 1e-3,
                 weight_decay: float = 0.0, betas: tuple = (0.9, 0.98), grad_clip: float | None = 5.0,
                 eval_every: int = 1, patience: int = 10, eval_users: int | None = None,
                 seed: int = 42, device: str | None = None, amp: bool = True, progress: bool = True,
                 bucket_batches: int = 64, num_threads: int | None = None):
        num_epochs, batch_size, eval_every, patience = (
            gin_values.integer(f"ScorerTrainer.{k}", v) for k, v in (
                ("num_epochs", num_epochs), ("batch_size", batch_size), ("eval_every", eval_every),
                ("patience", patience)))
        lr = gin_values.positive_number("ScorerTrainer.lr", lr)
        if eval_users is not None:              # 0 = all users, as OneRecTrainer.eval_users
            eval_users = gin_values.integer("ScorerTrainer.eval_users", eval_users, minimum=0) or None
        self.num_epochs, self.batch_size, self.lr = num_epochs, batch_size, lr
        self.weight_decay, self.betas, self.grad_clip = weight_decay, tuple(betas), grad_clip
        self.eval_every, self.patience, self.eval_users = eval_every, patience, eval_users
        self.seed, self.amp, self.progress = seed, amp, progress
        self.bucket_batches = bucket_batches
        if num_threads:
            torch.set_num_threads(int(num_threads))
        self.device = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))

    # ---------------------------------------------------------------- pieces
    def _optimizer(self, model) -> torch.optim.Optimizer:
        # AdamW with weight_decay 0 is Adam (the reference's optimizer, betas (0.9, 0.98)).
        return torch.optim.AdamW(model.parameters(), lr=self.lr, betas=self.betas,
                                 weight_decay=self.weight_decay)

    def _apply_hyperparameters(self, optimizer, run_dir: Path) -> None:
        """A resumed run trains on with this config's lr / betas / weight decay (the optimizer
        state restores the checkpoint's), e.g. a lower lr after a divergence; changes are logged."""
        wanted = {"lr": self.lr, "betas": tuple(self.betas), "weight_decay": self.weight_decay}
        norm = lambda v: tuple(v) if isinstance(v, (list, tuple)) else v            # noqa: E731
        changed = {k: (norm(optimizer.param_groups[0][k]), v) for k, v in wanted.items()
                   if norm(optimizer.param_groups[0][k]) != v}
        for group in optimizer.param_groups:
            group.update(wanted)
        if changed and distributed.is_main():
            said = ", ".join(f"{k} {old} -> {new}" for k, (old, new) in changed.items())
            tqdm.write(f"{run_dir}: resuming with ScorerTrainer {said}")

    def train_epoch(self, model, data: TrainingSequences, loss_fn: ScorerLoss, sampler: NegativeSampler,
                    optimizer, rng: np.random.Generator, epoch: int, step: int,
                    aux: AuxiliaryLosses | None = None) -> dict:
        """One pass over all training users in a random order. Returns loss and counts.
        aux: optional semantic-consistency / interest-contrast terms added to the loss."""
        model.train()
        per_batch = None                   # mean positions per batch, for the bucketing weight
        if hasattr(data, "batches"):
            batches = data.batches(rng, self.batch_size, self.bucket_batches)
            if self.bucket_batches > 0:
                per_batch = data.num_positions / len(batches)
        else:   # a view offering only len() and batch() (e.g. a subset in a benchmark): random batches
            order = rng.permutation(len(data))
            batches = [order[s:s + self.batch_size] for s in range(0, len(order), self.batch_size)]
        if hasattr(sampler, "set_epoch"):                                 # curriculum / growing count
            sampler.set_epoch(epoch)
        n_neg = loss_fn.num_negatives
        log_q = sampler.log_q() if n_neg else None
        log_q = log_q.to(self.device) if log_q is not None else None
        runner = getattr(self, "_runner", None)
        if runner is None or runner.model is not model:
            # find_unused_parameters: a similarity head may be used by some losses and not others.
            runner = distributed.wrap(model, find_unused_parameters=True)
        total, positions = 0.0, 0
        for b, idx in enumerate(tqdm(batches, desc=f"epoch {epoch}",
                                     disable=not self.progress or not distributed.is_main(),
                                     leave=False)):
            gtb = data.batch(idx)                                          # the global batch
            rows, weight, sel = _local_rows(gtb)
            tb = TrainBatch(gtb.users[rows], gtb.items[rows], gtb.times[rows], gtb.targets[rows])
            valid = tb.targets > 0                                        # (B, L)
            pos = tb.targets[valid]                                       # (P,)
            items = torch.from_numpy(tb.items).to(self.device)
            times = torch.from_numpy(tb.times).to(self.device) if model.use_time else None
            vmask = torch.from_numpy(valid).to(self.device)

            def forward_loss(model):              # DDP's forward: everything with gradients
                states = model.encode(items, times)                       # (B, L', d)
                hidden = states[vmask[:, -states.shape[1]:]]              # (P, d); encode may drop
                # leading all-padding columns (this rank's rows can be shorter than the global batch)

                def draw(n):                                              # (P, n) negatives
                    return torch.from_numpy(_negatives(sampler, gtb, sel, n, hidden.detach())
                                            ).to(self.device)

                neg = draw(n_neg) if n_neg else None
                pos_t = torch.from_numpy(pos).to(self.device)
                loss = loss_fn(hidden, pos_t, neg, model.item_emb.weight, log_q,
                               similarity=model.similarity)
                if aux is not None and aux.active:                        # λ-weighted extra terms
                    terms = aux(model, items, times, states, hidden, pos_t, neg, draw)
                    loss = loss + sum(terms.values())
                return loss

            with autocast(self.device, self.amp):
                loss = runner(forward_loss)
            if weight != 1.0:
                loss = loss * weight              # this rank's share of the global mean
            value = float(loss.detach()) / weight if weight else 0.0
            if not np.isfinite(float(loss.detach())):
                raise RecError(f"training loss is {value} at epoch {epoch}, batch {b} (global step "
                               f"{step + 1}); nothing of this epoch was saved. Lower ScorerTrainer.lr "
                               "or set ScorerTrainer.grad_clip, then start again or --resume from "
                               "the last checkpoint")
            optimizer.zero_grad(set_to_none=True)
            if per_batch is not None:
                # Bucketed batches hold very different numbers of positions (a batch of short
                # sequences ~2 per row, of long ones ~maxlen). Weighting the batch mean by
                # P / (mean P) gives every position the same weight in every step, as random
                # batches do on average; without it the few positions of short-sequence batches
                # weigh ~10x more and Beauty trains visibly worse per epoch.
                loss = loss * (int((gtb.targets > 0).sum()) / per_batch)
            loss.backward()
            norm = torch.nn.utils.clip_grad_norm_(model.parameters(), self.grad_clip or float("inf"))
            if not torch.isfinite(norm):   # finite loss, exploding gradients: stop before the step
                raise RecError(f"gradient norm is {norm.item()} at epoch {epoch}, batch {b} (global "
                               f"step {step + 1}); lower ScorerTrainer.lr, then start again or --resume")
            optimizer.step()
            step += 1
            total += value * len(pos) if weight else 0.0
            positions += len(pos) if weight else 0
        total, positions = distributed.all_reduce_sum([total, positions])
        positions = int(positions)
        return {"loss": total / max(1, positions), "positions": positions, "sequences": len(data),
                "step": step}

    # ---------------------------------------------------------------- the run
    def fit(self, model, split: SplitData, loss_fn: ScorerLoss, sampler: NegativeSampler,
            run_dir: Path, resume: bool = False, max_epochs_this_run: int | None = None,
            aux: AuxiliaryLosses | None = None) -> dict | None:
        """Train with early stopping, then evaluate the best checkpoint on valid and test.
        aux: optional extra loss terms (retrieval.auxiliary_losses); their RNG is checkpointed.

        Returns the results dict, or None when `max_epochs_this_run` ended this call before the run
        finished (call again with resume=True to continue).
        """
        run_dir = Path(run_dir)
        main = distributed.is_main()                         # the one process that writes files
        if main:
            remove_stale_temps(run_dir)                      # left by a process killed mid-write
        ck_dir = run_dir / "checkpoints"
        last, best = ck_dir / "last", ck_dir / "best"
        model.to(self.device)
        self._runner = distributed.wrap(model, find_unused_parameters=True)
        optimizer = self._optimizer(model)
        data = (model.training_sequences(split) if hasattr(model, "training_sequences")
                else TrainingSequences(split, model.maxlen))
        if hasattr(sampler, "bind_item_embeddings"):                       # hard negatives
            sampler.bind_item_embeddings(lambda: model.item_emb.weight)
        signature = {"variant": model.variant, "model": model.config, "dataset": split.name,
                     "dataset_fingerprint": split.fingerprint, "num_items": split.num_items,
                     "loss": loss_fn.name}
        metrics = MetricsLog(run_dir / "metrics.jsonl" if main else None)
        rng = np.random.default_rng(self.seed)
        stopper = EarlyStopping(patience=self.patience)
        epoch, step, epoch_times, epoch_cpu = 0, 0, [], []

        if resume and not last.with_suffix(".json").is_file():
            raise RecError(f"--resume given but {last.with_suffix('.json')} does not exist; drop "
                           "--resume to start a new run")
        if last.with_suffix(".json").is_file():
            if not resume:
                raise RecError(f"{run_dir} already holds a checkpoint; pass --resume to continue it "
                               "or choose a fresh --run_dir")
            check_signature(last.with_suffix(".json"), signature)
            st = load_checkpoint(last, model, optimizer)
            self._apply_hyperparameters(optimizer, run_dir)
            epoch, step, epoch_times = st["epoch"], st["step"], st["epoch_seconds"]
            epoch_cpu = st["epoch_cpu_seconds"]
            stopper = EarlyStopping(**{**st["early_stopping"], "patience": self.patience})
            rng.bit_generator.state = st["order_rng"]
            sampler.load_state(st["sampler"])
            if aux is not None:
                aux.load_state(st.get("auxiliary"))
            truncate_metrics(metrics.path, epoch)         # path is None off rank 0
        else:                       # a fresh start: drop lines of a run killed before its 1st checkpoint
            truncate_metrics(metrics.path, 0)

        val_eval = Evaluator(sampled=False, progress=False)
        val_users = np.arange(split.num_users)
        if self.eval_users is not None and self.eval_users < split.num_users:
            val_users = np.sort(np.random.default_rng(self.seed + 1).choice(
                split.num_users, size=self.eval_users, replace=False))
        # Validate users in order of history length: each evaluation batch is then only as wide as
        # its rows (the model drops all-padding columns), ~5x less work on Beauty. The metrics are
        # means, so the order does not change them. (The final evaluation keeps the natural order:
        # its sampled-100 negatives are drawn in user order and must match other models'.)
        val_users = val_users[np.argsort(split.train_lengths[val_users], kind="stable")]

        ran = 0
        while epoch < self.num_epochs and not stopper.should_stop:
            if max_epochs_this_run is not None and ran >= max_epochs_this_run:
                return None
            epoch += 1
            t0, c0 = time.perf_counter(), time.process_time()
            out = self.train_epoch(model, data, loss_fn, sampler, optimizer, rng, epoch, step, aux)
            seconds = time.perf_counter() - t0
            step = out["step"]
            epoch_times.append(seconds)
            epoch_cpu.append(time.process_time() - c0)     # CPU time: comparable on a shared box
            record = {"epoch": epoch, "step": step, "loss": out["loss"], "epoch_seconds": seconds,
                      "epoch_cpu_seconds": epoch_cpu[-1],
                      "sequences_per_s": out["sequences"] / seconds,
                      "positions_per_s": out["positions"] / seconds}
            if epoch % self.eval_every == 0 or epoch == self.num_epochs:
                t1 = time.perf_counter()
                res = val_eval.evaluate(model, split, "valid", users=val_users)
                value = res.metrics[SELECT[0]][SELECT[1]]
                record.update({f"valid_{k}": v for k, v in res.metrics["full"].items()
                               if k in ("hr@10", "ndcg@10", "mrr")})
                record["eval_seconds"] = time.perf_counter() - t1
                record["best"] = stopper.update(value, epoch)
                if record["best"] and main:
                    save_checkpoint(best, model, state={"epoch": epoch, "signature": signature,
                                                        "valid_ndcg@10": value})
            metrics.write(**record)
            if main:
                save_checkpoint(last, model, optimizer, state={
                    "epoch": epoch, "step": step, "signature": signature,
                    "epoch_seconds": epoch_times, "epoch_cpu_seconds": epoch_cpu,
                    "early_stopping": stopper.state(),
                    "order_rng": rng.bit_generator.state, "sampler": sampler.state(),
                    "auxiliary": aux.state() if aux is not None else None})
            ran += 1
            if self.progress and main:
                shown = {k: round(v, 5) if isinstance(v, float) else v for k, v in record.items()}
                print(shown, flush=True)

        distributed.barrier()                                # rank 0's checkpoints are on disk
        if not best.with_suffix(".json").is_file():
            raise RecError(f"{run_dir}: training finished without a validation checkpoint; "
                           "check ScorerTrainer.eval_every")
        check_signature(best.with_suffix(".json"), signature)
        best_state = load_checkpoint(best, model, restore_rng=False)
        final_eval = Evaluator(progress=self.progress and main)
        t1 = time.perf_counter()
        valid = final_eval.evaluate(model, split, "valid")
        test = final_eval.evaluate(model, split, "test")
        final_seconds = time.perf_counter() - t1
        if main:
            _save_ranks(run_dir / "per_user_ranks.npz", valid, test)
        return {
            "valid": valid.to_json(), "test": test.to_json(),
            "protocol": {"primary": "full", "secondary": "sampled-100", "split": "leave-one-out",
                         "selection": f"best validation {SELECT[0]} {SELECT[1]}; test computed once "
                                      "for that checkpoint", **final_eval.protocol()},
            "best_epoch": best_state["epoch"], "epochs_run": epoch, "steps": step,
            "early_stopping": stopper.state(),
            "timing": {"epoch_seconds": epoch_times,
                       "mean_epoch_seconds": float(np.mean(epoch_times)) if epoch_times else None,
                       "epoch_cpu_seconds": epoch_cpu,
                       "mean_epoch_cpu_seconds": float(np.mean(epoch_cpu)) if epoch_cpu else None,
                       "train_seconds_total": float(np.sum(epoch_times)),
                       "final_eval_seconds": final_seconds, "device": str(self.device)},
        }


def _local_rows(gtb: TrainBatch) -> tuple[np.ndarray, float, np.ndarray]:
    """This rank's rows of a global batch, the factor on its mean loss, and which of the global
    batch's flattened positions are its own (bool (P_global,)).

    A rank left without rows (a last batch smaller than the world) trains on row 0 with weight 0,
    so every rank still runs the step's collectives.
    """
    gvalid = gtb.targets > 0                                               # (B, L)
    rows = distributed.shard(np.arange(len(gtb.users)))
    mine = np.zeros(len(gtb.users), dtype=bool)
    mine[rows] = True
    sel = np.repeat(mine, gvalid.sum(1))                                   # (P_global,)
    if len(rows) == 0:
        return np.arange(1), 0.0, sel
    return rows, distributed.loss_weight(int(sel.sum()), len(sel)), sel


def _negatives(sampler, gtb: TrainBatch, sel: np.ndarray, n: int, hidden: torch.Tensor) -> np.ndarray:
    """(P_local, n) negatives: drawn for the whole global batch (every rank the same draws, as in
    a single process; hard-negative queries gathered from all ranks), then this rank's positions."""
    gvalid = gtb.targets > 0
    users_p = np.broadcast_to(gtb.users[:, None], gvalid.shape)[gvalid]    # (P_global,)
    pos = gtb.targets[gvalid]
    if distributed.world_size() > 1:
        mine = np.flatnonzero(sel)
        sent = hidden[:len(mine)]            # a weight-0 stand-in row of an idle rank sends nothing
        hidden = distributed.all_gather_rows(sent, mine, len(pos))
    neg = sampler.sample(users_p, pos, n, hidden)                          # (P_global, n)
    if not sel.any():                                                      # weight-0 stand-in
        return np.ones((int((gtb.targets[0] > 0).sum()), n), dtype=np.int64)
    return neg[sel]


def check_signature(path: Path, expected: dict) -> None:
    """Refuse a checkpoint made for another variant, model shape, loss or dataset, naming the field."""
    got = read_checkpoint_json(path).get("state", {}).get("signature")
    if got is None:
        raise RecError(f"{path}: not a scorer checkpoint (no signature); use a fresh --run_dir")
    if got.get("variant") != expected["variant"]:
        raise RecError(f"{path}: checkpoint is for variant {got.get('variant')!r} but this config "
                       f"builds {expected['variant']!r}; use the matching config or a fresh --run_dir")
    if (got.get("dataset"), got.get("dataset_fingerprint")) != (expected["dataset"],
                                                                 expected["dataset_fingerprint"]):
        raise RecError(f"{path}: checkpoint was trained on dataset {got.get('dataset')!r} (fingerprint "
                       f"{got.get('dataset_fingerprint')}) but this run loads {expected['dataset']!r} "
                       f"(fingerprint {expected['dataset_fingerprint']}); use a fresh --run_dir")
    for key in ("model", "num_items", "loss"):
        if got.get(key) != expected[key]:
            raise RecError(f"{path}: checkpoint has {key} = {got.get(key)} but this config has "
                           f"{expected[key]}; use the matching config or a fresh --run_dir")


def truncate_metrics(path: Path | None, epoch: int) -> None:
    """Drop metric lines written after the checkpoint a resumed run restarts from."""
    if path is None or not path.is_file():
        return
    import json
    keep = [line for line in path.read_text(encoding="utf-8").splitlines()
            if line.strip() and json.loads(line).get("epoch", 0) <= epoch]
    write_text(path, "".join(line + "\n" for line in keep))


def _save_ranks(path: Path, valid, test) -> None:
    """Per-user 0-based ranks (for paired tests between models), plain .npz without pickle."""
    arrays = {"users": valid.users}
    for name, res in (("valid", valid), ("test", test)):
        for proto, r in res.ranks.items():
            arrays[f"{name}_{proto.replace('-', '_')}"] = r
        for proto, c in res.candidates.items():                           # for per-user AUC
            arrays[f"{name}_{proto.replace('-', '_')}_candidates"] = c

    def _w(tmp):
        with open(tmp, "wb") as f:
            np.savez(f, **arrays)
    atomic_write(path, _w)
