"""Training throughput at ML-25M scale: SASRec and OneRec samples/s over a fixed number of optimizer
steps, and the epoch time that extrapolates to (one process; CPU unless CUDA is present).

Data: the ML-25M-format synthetic folder of bench/bench_preprocess.py (25,000,095 ratings; written
once, then reused), loaded through the real `load_split('ml-25m')` (5-core + leave-one-out, split
cache in a temporary directory). A full epoch on 2 CPU cores would take hours, so each model trains
for `--steps` steps of the real trainer code on a random sample of the epoch's examples (after
`--warmup` untimed steps), and the table reports samples/s and epoch = examples / (samples/s).

    SASRec  ScorerTrainer.train_epoch on a random subset of users (the config's model: hidden 50,
            2 blocks, 1 head, maxlen 200, batch 128; BCE + 1 uniform negative, or with
            --sasrec_loss ce the full softmax over all items). An epoch = every user with >= 2
            training items once ("samples" = user sequences).
    OneRec  OneRecTrainer's step (teacher-forced T5 forward/backward + AdamW) on random batches of
            TrainingSamples (every prefix of every training sequence: an epoch = ~all training
            events), with a random semantic-ID artifact of the split's item count (3 x 256 + d) and
            the TIGER-size model (d_model 128, 4+4 layers).

    python bench/bench_train_scale.py                          # both, 20 timed steps, 1 thread
    python bench/bench_train_scale.py --models sasrec --steps 50 --threads 2
"""
from __future__ import annotations

import argparse
import os
import tempfile
import time
from pathlib import Path

import numpy as np
import torch


def load_ml25m(data_dir: Path, rows: int):
    import gin

    from bench_preprocess import ensure_csv          # a sibling script: bench/ is sys.path[0]
    from retrieval.data import load_split
    ensure_csv(data_dir, rows)
    gin.bind_parameter("MovieLens25MSource.path", str(data_dir))
    t = time.perf_counter()
    split = load_split("ml-25m")
    print(f"load_split: {time.perf_counter() - t:.1f} s, {split.stats()}", flush=True)
    return split


def bench_sasrec(split, steps: int, warmup: int, batch_size: int, seed: int, loss_name: str) -> dict:
    from retrieval.scorers.losses import ScorerLoss
    from retrieval.scorers import SequentialScorer
    from retrieval.negatives.base import UniformNegativeSampler
    from retrieval.scorers.trainer import ScorerTask, ScorerTrainer

    torch.manual_seed(seed)
    model = SequentialScorer(num_items=split.num_items, maxlen=200, hidden=50, num_blocks=2,
                             num_heads=1, dropout=0.2)
    trainer = ScorerTrainer(batch_size=batch_size, progress=False, device="cpu" if not
                            torch.cuda.is_available() else None)
    model.to(trainer.device)
    loss = ScorerLoss(name=loss_name, num_negatives=1)
    sampler = UniformNegativeSampler(split, seed=seed)
    task = ScorerTask(trainer, model, split, loss, sampler, None)
    data = task.data
    rng = np.random.default_rng(seed)
    opt = torch.optim.AdamW(model.parameters(), lr=trainer.lr, betas=trainer.betas)
    pick = rng.choice(len(data), size=(warmup + steps) * batch_size, replace=False)
    batches = [pick[s:s + batch_size] for s in range(0, len(pick), batch_size)]   # random users
    trainer.train_batches(task, batches[:warmup], opt)
    t, c = time.perf_counter(), time.process_time()
    out = trainer.train_batches(task, batches[warmup:], opt)
    wall, cpu = time.perf_counter() - t, time.process_time() - c
    sps = steps * batch_size / wall
    return {"model": f"SASRec ({loss_name}{', 1 neg' if loss.num_negatives else ''})", "params": sum(p.numel() for p in model.parameters()),
            "batch": batch_size, "steps": steps, "wall_s": wall, "cpu_s": cpu, "samples_per_s": sps,
            "positions_per_s": out["targets"] / wall, "epoch_samples": len(data),
            "epoch_h": len(data) / sps / 3600, "device": str(trainer.device)}


def bench_onerec(split, steps: int, warmup: int, batch_size: int, seed: int) -> dict:
    from bench_beam_search import random_artifact
    from onerec.model import OneRecModel
    from onerec.sequences import TrainingSamples

    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    sids = random_artifact(split.num_items, 3, 256, seed)
    torch.manual_seed(seed)
    model = OneRecModel(sids).to(device)                     # TIGER defaults
    model.train()
    samples = TrainingSamples(split)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3, weight_decay=0.01)
    rng = np.random.default_rng(seed)
    amp = torch.autocast("cuda", dtype=torch.bfloat16) if device.type == "cuda" else None

    def step():
        # integers, not choice(replace=False): that permutes all ~25M samples on every call
        batch = samples.batch(rng.integers(0, len(samples), batch_size), model.tokenizer).to(device)
        if amp is not None:
            with amp:
                loss = model(batch)
        else:
            loss = model(batch)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()

    for _ in range(warmup):
        step()
    t, c = time.perf_counter(), time.process_time()
    for _ in range(steps):
        step()
    if device.type == "cuda":
        torch.cuda.synchronize()
    wall, cpu = time.perf_counter() - t, time.process_time() - c
    sps = steps * batch_size / wall
    return {"model": "OneRec/TIGER (T5 4+4, d 128)", "params": model.num_parameters(),
            "batch": batch_size, "steps": steps, "wall_s": wall, "cpu_s": cpu, "samples_per_s": sps,
            "positions_per_s": None, "epoch_samples": len(samples),
            "epoch_h": len(samples) / sps / 3600, "device": str(device)}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--models", nargs="+", default=["sasrec", "onerec"], choices=["sasrec", "onerec"])
    p.add_argument("--rows", type=int, default=25_000_095)
    p.add_argument("--steps", type=int, default=20)
    p.add_argument("--warmup", type=int, default=2)
    p.add_argument("--sasrec_batch", type=int, default=128)
    p.add_argument("--sasrec_loss", default="bce", choices=["bce", "ce"],
                   help="bce: 1 uniform negative per position; ce: softmax over all items")
    p.add_argument("--onerec_batch", type=int, default=256)
    p.add_argument("--threads", type=int, default=1, help="torch CPU threads (1: best on a shared box)")
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    from bench_preprocess import default_dir
    data_dir = default_dir(args.rows)                     # before the cache variable changes
    with tempfile.TemporaryDirectory(prefix="semid-bench-cache-") as cache:
        os.environ["SEMID_CACHE_DIR"] = cache
        split = load_ml25m(data_dir, args.rows)
        load0 = os.getloadavg()[0]
        rows = []
        if "sasrec" in args.models:
            rows.append(bench_sasrec(split, args.steps, args.warmup, args.sasrec_batch, args.seed,
                                     args.sasrec_loss))
            print(rows[-1], flush=True)
        if "onerec" in args.models:
            rows.append(bench_onerec(split, args.steps, args.warmup, args.onerec_batch, args.seed))
            print(rows[-1], flush=True)
    import resource
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024 / 1e9     # KiB -> GB
    print(f"\ntorch {torch.__version__}, {args.threads} thread(s), cpus {os.cpu_count()}, "
          f"load average {load0:.1f} -> {os.getloadavg()[0]:.1f}, peak RSS {peak:.2f} GB")
    print("| model | device | params | batch | timed steps | wall s | CPU s | samples/s | "
          "positions/s | samples per epoch | extrapolated epoch (h) |")
    print("|---|---|---|---|---|---|---|---|---|---|---|")
    for r in rows:
        pos = f"{r['positions_per_s']:,.0f}" if r["positions_per_s"] else "-"
        print(f"| {r['model']} | {r['device']} | {r['params']:,} | {r['batch']} | {r['steps']} | "
              f"{r['wall_s']:.1f} | {r['cpu_s']:.1f} | {r['samples_per_s']:,.1f} | {pos} | "
              f"{r['epoch_samples']:,} | {r['epoch_h']:.2f} |")


if __name__ == "__main__":
    main()
