"""Full-ranking evaluation benchmark (docs/protocol.md §7: 160k users x 60k items in <= 60 s on the 2-core CPU).

Builds a SplitData directly in numpy (log-normal history lengths like ML-25M: median ~70, mean
~150 events per user; Zipfian item popularity) and evaluates a cheap Scorer: a random item table
(d = 64); the user vector is the embedding of the last history item, dotted with every item (the
cost of a real model's encoder is not what this measures). Prints wall time and users/s, split into the scorer's own time and the evaluator's
(batching, history exclusion, pessimistic-tie counting), and the process CPU time (on a shared box
the wall time includes waiting for the CPU; CPU time does not).

    python bench/bench_eval.py                        # 160k x 60k, the budgeted size
    python bench/bench_eval.py --users 20000 --batch_sizes 128 256 512
"""
from __future__ import annotations

import argparse
import time

import numpy as np
import torch

from retrieval.data.batch import HistoryBatch
from retrieval.data.types import ItemCatalogue, SplitData
from retrieval.evaluation import Evaluator


def synthetic_split(num_users: int, num_items: int, seed: int = 0) -> SplitData:
    rng = np.random.default_rng(seed)
    lengths = np.clip(rng.lognormal(np.log(70.0), 1.2, size=num_users), 3, 5000).astype(np.int64)
    total = int(lengths.sum())
    pop = 1.0 / np.arange(1, num_items + 1) ** 0.9
    items = rng.choice(np.arange(1, num_items + 1), size=total, p=pop / pop.sum())
    ends = np.cumsum(lengths)
    is_last2 = np.zeros(total, dtype=bool)
    is_last2[ends - 1] = is_last2[ends - 2] = True
    offsets = np.zeros(num_users + 1, dtype=np.int64)
    np.cumsum(lengths - 2, out=offsets[1:])
    times = np.arange(total, dtype=np.int64)
    empty = np.array([""] * (num_items + 1), dtype=object)
    return SplitData(name="bench", train_offsets=offsets, train_items=items[~is_last2],
                     train_times=times[~is_last2], valid_item=items[ends - 2],
                     valid_time=times[ends - 2], test_item=items[ends - 1], test_time=times[ends - 1],
                     user_raw_ids=np.arange(num_users).astype(str).astype(object),
                     catalogue=ItemCatalogue(empty, empty), has_time=True, fingerprint="bench")


class RandomDotScorer:
    """Scores = (last history item's vector) @ item vectors^T, d-dimensional random vectors."""

    def __init__(self, num_items: int, dim: int = 64, seed: int = 0, reuse_output: bool = True):
        g = torch.Generator().manual_seed(seed)
        self.emb = torch.randn(num_items + 1, dim, generator=g)
        # The evaluator reads a score matrix only during its batch, so one output buffer can be
        # reused: a fresh (B, N+1) tensor per batch costs page faults and zeroing (~25% here).
        self.reuse_output = reuse_output
        self._out = None
        self.seconds = 0.0
        self.cpu_seconds = 0.0

    def score_all(self, batch: HistoryBatch) -> torch.Tensor:
        t0, c0 = time.perf_counter(), time.process_time()
        q = self.emb[batch.items[:, -1]]                             # (B, d)
        if not self.reuse_output:
            out = q @ self.emb.T                                     # (B, N+1)
        else:
            if self._out is None or self._out.shape[0] < len(q):
                self._out = torch.empty(len(q), len(self.emb))
            out = torch.matmul(q, self.emb.T, out=self._out[:len(q)])
        self.seconds += time.perf_counter() - t0
        self.cpu_seconds += time.process_time() - c0
        return out


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--users", type=int, default=160_000)
    p.add_argument("--items", type=int, default=60_000)
    p.add_argument("--dim", type=int, default=64)
    p.add_argument("--batch_sizes", type=int, nargs="+", default=[512])
    p.add_argument("--stage", default="test", choices=["valid", "test"])
    p.add_argument("--no_exclude_history", action="store_true")
    p.add_argument("--fresh_output", action="store_true",
                   help="scorer allocates a new score matrix per batch instead of reusing one")
    a = p.parse_args()

    t0 = time.perf_counter()
    split = synthetic_split(a.users, a.items)
    build = time.perf_counter() - t0
    hist = np.diff(split.train_offsets)
    print(f"data: {split.num_users:,} users x {split.num_items:,} items, "
          f"{len(split.train_items):,} training events (history length median {np.median(hist):.0f}, "
          f"mean {hist.mean():.0f}); built in {build:.1f} s; torch threads {torch.get_num_threads()}")
    print(f"{'batch':>6} {'wall s':>8} {'users/s':>9} {'scorer s':>9} {'evaluator s':>12} "
          f"{'cpu s':>7} {'scorer cpu s':>13} {'evaluator cpu s':>16} {'ndcg@10':>9}")
    for bs in a.batch_sizes:
        scorer = RandomDotScorer(a.items, a.dim, reuse_output=not a.fresh_output)
        ev = Evaluator(batch_size=bs, exclude_history=not a.no_exclude_history, sampled=False,
                       progress=False)
        t0, c0 = time.perf_counter(), time.process_time()
        res = ev.evaluate(scorer, split, a.stage)
        wall, cpu = time.perf_counter() - t0, time.process_time() - c0
        print(f"{bs:>6} {wall:>8.1f} {a.users / wall:>9,.0f} {scorer.seconds:>9.1f} "
              f"{wall - scorer.seconds:>12.1f} {cpu:>7.1f} {scorer.cpu_seconds:>13.1f} "
              f"{cpu - scorer.cpu_seconds:>16.1f} {res.metrics['full']['ndcg@10']:>9.5f}")


if __name__ == "__main__":
    main()
