"""How a scorer trains (SASRec / TiSASRec ± mHC, GRU4Rec, BERT4Rec; any loss) inside the one
training loop (retrieval.core.trainer): its batches, its step and its validation.

Examples come from the model (`training_sequences(split)`, retrieval.scorers.sequences): SASRec's
all-position next items, BERT4Rec's masked items. Negatives come from a NegativeSampler, for the
flattened non-padding positions only (its hooks: bind_item_embeddings once, set_epoch every epoch,
the sequence states with every draw). Losses score through the model's similarity head; optional
λ-weighted terms (retrieval.scorers.auxiliary_losses: semantic consistency, interest contrast; off
by default) are added to the main loss; the sampler's and the terms' RNGs go into the checkpoints.

Per epoch: train → (every `eval_every` epochs) validation full-ranking NDCG@10 on all users or a
fixed subsample → early stopping → checkpoints. Test is computed once, for the best checkpoint.

Under torchrun every rank builds the same global batch and trains on its rows of it; negatives are
drawn for the whole global batch on every rank (same sampler stream, hard-negative queries gathered
from all ranks) and each rank keeps its rows', so a W-process run follows the single-process one.
"""
from __future__ import annotations

from pathlib import Path

import gin
import numpy as np
import torch

from retrieval.core import distributed
from retrieval.core.trainer import StepOutput, Trainer, TrainingTask, local_rows
from retrieval.data.types import SplitData
from retrieval.evaluation import Evaluator
from retrieval.evaluation.final import train_and_evaluate
from retrieval.negatives.base import NegativeSampler
from retrieval.scorers.auxiliary_losses import AuxiliaryLosses
from retrieval.scorers.losses import ScorerLoss
from retrieval.scorers.sequences import TrainBatch


@gin.configurable
class ScorerTrainer(Trainer):
    """The scorers' settings of the one training loop (retrieval.core.trainer.Trainer documents
    each). bucket_batches: length-bucketing window in batches (0 = plain random batches), see
    TrainingSequences.batches.
    """

    name = "ScorerTrainer"

    def __init__(self, num_epochs: int = 200, batch_size: int = 128, lr: float = 1e-3,
                 weight_decay: float = 0.0, betas: tuple = (0.9, 0.98), schedule: str = "constant",
                 warmup_steps: int = 0, warmup_epochs: float = 0.0, grad_clip: float | None = 5.0,
                 max_steps: int = 0, max_minutes: float = 0.0, eval_every: int = 1,
                 eval_every_steps: int = 0, eval_users: int | None = None, eval_seed: int = 0,
                 patience: int = 10, checkpoint_every_steps: int = 0, log_every_steps: int = 0,
                 seed: int = 42, device: str | None = None, amp: bool = True, progress: bool = True,
                 num_threads: int | None = None, bucket_batches: int = 64):
        settings = {k: v for k, v in locals().items() if k not in ("self", "__class__")}
        self.bucket_batches = int(settings.pop("bucket_batches"))
        super().__init__(**settings)                     # validates every shared setting

    def fit(self, model, split: SplitData, loss_fn: ScorerLoss, sampler: NegativeSampler,
            run_dir: Path, resume: bool = False, stop_after_epochs: int | None = None,
            aux: AuxiliaryLosses | None = None) -> dict | None:
        """Train with early stopping, then evaluate the best checkpoint on valid and test.

        Returns {"valid": EvalResult, "test": EvalResult, "protocol", "training", "timing"}
        (retrieval.evaluation.final), or None when `stop_after_epochs` ended
        this call before the run finished (call again with resume=True to continue).
        """
        task = ScorerTask(self, model, split, loss_fn, sampler, aux)
        return train_and_evaluate(self, task, run_dir, resume, stop_after_epochs)


class ScorerTask(TrainingTask):
    """A scorer's batches, step and validation for the Trainer."""

    find_unused_parameters = True          # a similarity head may serve some losses and not others

    def __init__(self, trainer: ScorerTrainer, model, split: SplitData, loss_fn: ScorerLoss,
                 sampler: NegativeSampler, aux: AuxiliaryLosses | None):
        self.trainer, self.model, self.split, self.num_users = trainer, model, split, split.num_users
        self.loss_fn, self.sampler, self.aux = loss_fn, sampler, aux
        self.data = model.training_sequences(split)
        self.device = trainer.device
        self.per_batch: float | None = None     # mean positions per batch, for the bucketing weight
        self.log_q = None
        sampler.bind_item_embeddings(lambda: model.item_emb.weight)       # hard negatives
        self.evaluator = Evaluator(sampled=False, progress=False)

    def signature(self) -> dict:
        s = self.split
        return {"variant": self.model.variant, "model": self.model.config, "dataset": s.name,
                "dataset_fingerprint": s.fingerprint, "num_items": s.num_items,
                "loss": self.loss_fn.name, "batch_size": self.trainer.batch_size}

    def epoch_batches(self, epoch: int, rng: np.random.Generator) -> list:
        bucket = self.trainer.bucket_batches
        batches = self.data.batches(rng, self.trainer.batch_size, bucket)
        self.per_batch = self.data.num_positions / len(batches) if bucket > 0 else None
        return batches

    def on_epoch_start(self, epoch: int) -> None:
        self.sampler.set_epoch(epoch + 1)                 # curriculum / growing count (1-based)
        log_q = self.sampler.log_q() if self.loss_fn.num_negatives else None
        self.log_q = log_q.to(self.device) if log_q is not None else None

    def step(self, idx: np.ndarray, runner) -> StepOutput:
        gtb = self.data.batch(idx)                                         # the global batch
        gvalid = gtb.targets > 0                                           # (B, L)
        rows, weight = local_rows(len(gtb.users), gvalid.sum(1))
        mine = np.zeros(len(gtb.users), dtype=bool)
        mine[rows] = weight > 0                                            # a weight-0 stand-in owns none
        sel = np.repeat(mine, gvalid.sum(1))                               # this rank's positions
        tb = TrainBatch(gtb.users[rows], gtb.items[rows], gtb.times[rows], gtb.targets[rows])
        valid = tb.targets > 0
        pos = tb.targets[valid]                                            # (P,)
        items = torch.from_numpy(tb.items).to(self.device)
        times = torch.from_numpy(tb.times).to(self.device) if self.model.use_time else None
        vmask = torch.from_numpy(valid).to(self.device)
        n_neg, sampler, loss_fn, aux = self.loss_fn.num_negatives, self.sampler, self.loss_fn, self.aux

        def forward_loss(model):              # DDP's forward: everything with gradients
            states = model.encode(items, times)                           # (B, L', d)
            hidden = states[vmask[:, -states.shape[1]:]]                  # (P, d); encode may drop
            # leading all-padding columns (this rank's rows can be shorter than the global batch)

            def draw(n):                                                  # (P, n) negatives
                return torch.from_numpy(_negatives(sampler, gtb, sel, n, hidden.detach())
                                        ).to(self.device)

            neg = draw(n_neg) if n_neg else None
            pos_t = torch.from_numpy(pos).to(self.device)
            loss = loss_fn(hidden, pos_t, neg, model.item_emb.weight, self.log_q,
                           similarity=model.similarity)
            if aux is not None and aux.active:                            # λ-weighted extra terms
                terms = aux(model, items, times, states, hidden, pos_t, neg, draw)
                loss = loss + sum(terms.values())
            return loss

        loss = runner(forward_loss)
        if weight != 1.0:
            loss = loss * weight                  # this rank's share of the global mean
        value = float(loss.detach()) / weight if weight else 0.0
        if self.per_batch is not None:
            # Bucketed batches hold very different numbers of positions (a batch of short
            # sequences ~2 per row, of long ones ~maxlen). Weighting the batch mean by
            # P / (mean P) gives every position the same weight in every step, as random
            # batches do on average; without it the few positions of short-sequence batches
            # weigh ~10x more and Beauty trains visibly worse per epoch.
            loss = loss * (int(gvalid.sum()) / self.per_batch)
        return StepOutput(loss, value, len(pos) if weight else 0)

    def validate(self, users: np.ndarray) -> dict:
        return self.evaluator.evaluate(self.model, self.split, "valid", users=users).metrics["full"]

    def validation_order(self, users: np.ndarray) -> np.ndarray:
        # By history length: each evaluation batch is then only as wide as its rows (the model
        # drops all-padding columns), ~5x less work on Beauty. The metrics are means, so the order
        # does not change them. (The final evaluation keeps the natural order: its sampled-100
        # negatives are drawn in user order and must match other models'.)
        return users[np.argsort(self.split.train_lengths[users], kind="stable")]

    def state(self) -> dict:
        return {"sampler": self.sampler.state(),
                "auxiliary": self.aux.state() if self.aux is not None else None}

    def load_state(self, state: dict) -> None:
        self.sampler.load_state(state["sampler"])
        if self.aux is not None:
            self.aux.load_state(state.get("auxiliary"))


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
