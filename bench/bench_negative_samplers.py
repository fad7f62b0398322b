"""Training-time overhead of negative samplers vs uniform on a real dataset (issue 6: FAISS hard
negatives should cost <= 30% per epoch over uniform sampling).

Runs the scorer trainer's own `train_epoch` on the same batches for each sampler, alternating
samplers every `--chunk` batches so that every sampler sees the same machine load (the box is
shared), and times the whole training step and the `sample` calls separately. Each sampler trains
its own model copy from the same initial weights.

    python bench/bench_negative_samplers.py                                  # Beauty, 60 batches each
    python bench/bench_negative_samplers.py --samplers uniform hard mixture --batches 175   # one epoch
"""
from __future__ import annotations

import argparse
import copy
import time

import numpy as np
import torch

import retrieval.samplers  # noqa: F401  (registers popularity/hard/mixture/curriculum/growing)
from retrieval.data import load_split
from retrieval.losses import ScorerLoss
from retrieval.models import SequentialScorer
from retrieval.negatives import build_negative_sampler
from retrieval.scorer_trainer import ScorerTrainer, TrainingSequences


class UserSubset:
    """The TrainingSequences interface restricted to some example rows (for chunked timing)."""

    def __init__(self, data: TrainingSequences, rows: np.ndarray):
        self.data, self.rows = data, rows

    def __len__(self) -> int:
        return len(self.rows)

    def batch(self, idx):
        return self.data.batch(self.rows[idx])


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--dataset", default="amazon-beauty")
    p.add_argument("--samplers", nargs="+", default=["uniform", "hard", "mixture"])
    p.add_argument("--batches", type=int, default=60, help="training batches per sampler")
    p.add_argument("--chunk", type=int, default=5, help="batches per sampler before switching")
    p.add_argument("--batch_size", type=int, default=128)
    p.add_argument("--maxlen", type=int, default=50)
    p.add_argument("--hidden", type=int, default=64)
    p.add_argument("--num_negatives", type=int, default=1)
    p.add_argument("--refresh_every", type=int, default=100)
    p.add_argument("--threads", type=int, default=0, help="torch threads (0 = default)")
    args = p.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)

    split = load_split(name=args.dataset)
    torch.manual_seed(0)
    base = SequentialScorer(num_items=split.num_items, maxlen=args.maxlen, hidden=args.hidden,
                            num_heads=1, dropout=0.2)
    trainer = ScorerTrainer(batch_size=args.batch_size, device="cpu", progress=False)
    loss = ScorerLoss(name="bce", num_negatives=args.num_negatives)
    data = TrainingSequences(split, base.maxlen)
    order = np.random.default_rng(0).permutation(len(data))[: args.batches * args.batch_size]

    runs = {}
    for name in args.samplers:
        model = copy.deepcopy(base)
        sampler = build_negative_sampler(split, name=name, seed=0)
        if hasattr(sampler, "refresh_every"):
            sampler.refresh_every = args.refresh_every
        for comp in getattr(sampler, "components", {}).values():
            if hasattr(comp, "refresh_every"):
                comp.refresh_every = args.refresh_every
        if hasattr(sampler, "bind_item_embeddings"):
            sampler.bind_item_embeddings(lambda m=model: m.item_emb.weight)
        timer = {"sample": 0.0, "train": 0.0}
        inner = sampler.sample

        def timed(*a, _inner=inner, _timer=timer, **k):
            t0 = time.perf_counter()
            out = _inner(*a, **k)
            _timer["sample"] += time.perf_counter() - t0
            return out

        sampler.sample = timed
        runs[name] = (model, sampler, trainer._optimizer(model), timer)

    step = 0
    per_chunk = args.chunk * args.batch_size
    for start in range(0, len(order), per_chunk):
        rows = order[start:start + per_chunk]
        for name, (model, sampler, opt, timer) in runs.items():
            t0 = time.perf_counter()
            trainer.train_epoch(model, UserSubset(data, rows), loss, sampler, opt,
                                np.random.default_rng(step), 1, step)
            timer["train"] += time.perf_counter() - t0
        step += 1

    n_batches = -(-len(order) // args.batch_size)
    epoch_batches = -(-len(data) // args.batch_size)
    ref = runs[args.samplers[0]][3]["train"]
    print(f"{args.dataset}: {len(data)} training sequences, {epoch_batches} batches/epoch; timed "
          f"{n_batches} batches per sampler (batch {args.batch_size}, maxlen {args.maxlen}, d "
          f"{args.hidden}, n {args.num_negatives}, hard refresh every {args.refresh_every} steps), "
          f"torch threads {torch.get_num_threads()}")
    print(f"{'sampler':<12}{'s/batch':>10}{'sample s/batch':>16}{'est. s/epoch':>14}{'overhead':>10}")
    for name, (_, _, _, timer) in runs.items():
        per = timer["train"] / n_batches
        print(f"{name:<12}{per:>10.4f}{timer['sample'] / n_batches:>16.4f}{per * epoch_batches:>14.1f}"
              f"{(timer['train'] / ref - 1) * 100:>9.1f}%")


if __name__ == "__main__":
    main()
