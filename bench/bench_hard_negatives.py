"""Per-epoch cost of FAISS hard-negative mining vs uniform negatives, in the setting of the Beauty
ablation rows (configs/amazon-beauty/ablations/neg-*.gin): SASRec (maxlen 50, d 50), sampled softmax
over 100 negatives, hard negatives drawn from the 200 nearest items (flat inner-product index,
rebuilt from the live item table every 100 steps). Issue 6 goal: <= 30% over uniform.

Every sampler trains its own copy of one initial model with the trainer's own `train_epoch`, on the
same batches (the first `--batches` of one epoch, length-bucketed as the trainer builds them);
samplers take turns every `--chunk` batches so that all see the same machine load (the box may be
shared). Reported: wall and CPU seconds per batch, the share spent in `sample`, and
the per-epoch estimate (per-batch time x batches per epoch).

    python bench/bench_hard_negatives.py                          # Beauty, 40 batches per sampler
    python bench/bench_hard_negatives.py --batches 175            # one full epoch per sampler
"""
from __future__ import annotations

import argparse
import copy
import time

import gin
import numpy as np
import torch

import retrieval.negatives  # noqa: F401  (registers every negative sampler)
from retrieval.data import load_split
from retrieval.scorers.losses import ScorerLoss
from retrieval.scorers import SequentialScorer
from retrieval.negatives.base import NegativeSampler, build_negative_sampler
from retrieval.negatives.samplers import HardNegativeSampler, MixtureNegativeSampler
from retrieval.scorers.sequences import TrainingSequences
from retrieval.scorers.trainer import ScorerTask, ScorerTrainer

VARIANTS = {                        # label -> (sampler name, hard-negative query)
    "uniform": ("uniform", None),
    "hard-state": ("hard", "state"),
    "hard-sequence": ("hard", "sequence"),
    "hard-target": ("hard", "target"),
    "mixture": ("mixture", "sequence"),         # as configs/amazon-beauty/ablations/neg-mixture.gin
}


class Timed(NegativeSampler):
    """Forwards a sampler, timing `sample`. The batches are timed in chunks through
    ScorerTrainer.train_batches, which does not call set_epoch (the per-epoch index rebuild is
    counted once per epoch below, not once per chunk)."""

    def __init__(self, sampler):
        self.inner, self.seconds = sampler, 0.0

    def sample(self, *a, **k):
        t0 = time.perf_counter()
        out = self.inner.sample(*a, **k)
        self.seconds += time.perf_counter() - t0
        return out

    def log_q(self):
        return self.inner.log_q()

    def bind_item_embeddings(self, source):
        self.inner.bind_item_embeddings(source)


def hard_parts(sampler):
    if isinstance(sampler, HardNegativeSampler):
        return [sampler]
    if isinstance(sampler, MixtureNegativeSampler):
        return [c for c in sampler.components.values() if isinstance(c, HardNegativeSampler)]
    return []


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--dataset", default="amazon-beauty")
    p.add_argument("--variants", nargs="+", default=["uniform", "hard-state", "hard-target"],
                   choices=sorted(VARIANTS))
    p.add_argument("--batches", type=int, default=40, help="training batches per sampler")
    p.add_argument("--chunk", type=int, default=5, help="batches per sampler before switching")
    p.add_argument("--batch_size", type=int, default=128)
    p.add_argument("--maxlen", type=int, default=50)
    p.add_argument("--hidden", type=int, default=50)
    p.add_argument("--num_negatives", type=int, default=100)
    p.add_argument("--pool_size", type=int, default=200)
    p.add_argument("--refresh_every", type=int, default=100)
    p.add_argument("--threads", type=int, default=1, help="torch threads")
    p.add_argument("--gin_param", action="append", default=[],
                   help="extra gin binding, e.g. \"ItemIndex.kind='ivf'\" (repeatable)")
    args = p.parse_args()
    gin.parse_config(args.gin_param)
    torch.set_num_threads(args.threads)

    split = load_split(name=args.dataset)
    torch.manual_seed(0)
    base = SequentialScorer(num_items=split.num_items, maxlen=args.maxlen, hidden=args.hidden,
                            num_heads=1, dropout=0.2)
    trainer = ScorerTrainer(batch_size=args.batch_size, device="cpu", progress=False, amp=False)
    loss = ScorerLoss(name="sampled_softmax", num_negatives=args.num_negatives)
    data = TrainingSequences(split, base.maxlen)
    # The first batches of one epoch as the trainer builds them (length-bucketed, shuffled).
    epoch = data.batches(np.random.default_rng(0), args.batch_size, trainer.bucket_batches)
    timed_batches = epoch[: args.batches]

    runs = {}
    for label in args.variants:
        name, query = VARIANTS[label]
        model = copy.deepcopy(base)
        sampler = build_negative_sampler(split, name=name, seed=0)
        for hard in hard_parts(sampler):
            hard.query, hard.pool_size, hard.refresh_every = query, args.pool_size, args.refresh_every
        timed = Timed(sampler)
        task = ScorerTask(trainer, model, split, loss, timed, None)   # binds the live item table
        task.log_q = timed.log_q()                                     # (train_batches: no epochs)
        runs[label] = {"model": model, "sampler": timed, "task": task, "wall": 0.0, "cpu": 0.0,
                       "opt": torch.optim.AdamW(model.parameters(), lr=trainer.lr, betas=trainer.betas),
                       "raw": sampler}

    for start in range(0, len(timed_batches), args.chunk):
        rows = timed_batches[start:start + args.chunk]
        for run in runs.values():
            t0, c0 = time.perf_counter(), time.process_time()
            trainer.train_batches(run["task"], rows, run["opt"])
            run["wall"] += time.perf_counter() - t0
            run["cpu"] += time.process_time() - c0

    n_batches, epoch_batches = len(timed_batches), len(epoch)
    print(f"{args.dataset}: {len(data)} training sequences, {epoch_batches} batches/epoch; timed "
          f"{n_batches} batches per sampler (batch {args.batch_size}, maxlen {args.maxlen}, d "
          f"{args.hidden}, sampled softmax over {args.num_negatives} negatives, hard pool "
          f"{args.pool_size}, refresh every {args.refresh_every} steps), torch threads "
          f"{torch.get_num_threads()}")
    ref = runs[args.variants[0]]
    print(f"| sampler | wall s/batch | CPU s/batch | sample share | est. wall s/epoch | "
          f"est. CPU s/epoch | CPU overhead vs {args.variants[0]} |")
    print("|---|---|---|---|---|---|---|")
    for label, run in runs.items():
        refreshes = sum(h.refreshes for h in hard_parts(run["raw"]))
        wall, cpu = run["wall"] / n_batches, run["cpu"] / n_batches
        extra = f" ({refreshes} index builds)" if refreshes else ""
        print(f"| {label}{extra} | {wall:.4f} | {cpu:.4f} | {run['sampler'].seconds / run['wall']:.0%} | "
              f"{wall * epoch_batches:.1f} | {cpu * epoch_batches:.1f} | "
              f"{(run['cpu'] / ref['cpu'] - 1) * 100:+.1f}% |")


if __name__ == "__main__":
    main()
