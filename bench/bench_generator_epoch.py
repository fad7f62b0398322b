"""Cost of one training epoch of each generator design on a real split, side by side in one run.

    default onerec.parallel_generator.ParallelSidGenerator, objective 'items' (onerec.gin, OPQ IDs):
            one position per item, every position supervised, catalogue softmax over code-built
            item vectors; an epoch = every training window once.
    parallel the same trunk, RPG's per-codebook objective (onerec-parallel.gin, OPQ IDs).
    causal  onerec.causal_generator.CausalSidGenerator (onerec-causal.gin, RQ-VAE IDs): the same
            windows, a level-by-level semantic-ID head.
    tiger   onerec.model.OneRecModel (T5 encoder-decoder): an epoch = every prefix of every
            training sequence once (sliding windows).

Each design runs its real training step (the model's own samples, forward, backward, clipping,
AdamW) on `--steps` batches of one epoch's order (after `--warmup` untimed steps), with the sizes of
its frozen config; the table reports CPU and wall seconds per step and the epoch they extrapolate
to. Run it on an otherwise idle machine:

    python bench/bench_generator_epoch.py --dataset amazon-beauty --sids runs/beauty-rqvae \
        --long_sids runs/beauty-opq
"""
from __future__ import annotations

import argparse
import time

import gin
import numpy as np
import torch


def measure(kind: str, config: str, sids_dir: str, steps: int, warmup: int) -> dict:
    import onerec.pipeline  # noqa: F401  (registers the configurables)
    import retrieval.data  # noqa: F401
    from onerec.generators import make_generator
    from onerec.pipeline import load_semantic_ids
    from onerec.trainer import OneRecTrainer
    from retrieval.data.registry import load_split

    gin.clear_config()
    gin.parse_config_files_and_bindings([config], ["OneRecTrainer.progress = False"])
    split = load_split()
    sids = load_semantic_ids(sids_dir, split)
    trainer = OneRecTrainer()
    torch.manual_seed(0)
    model = make_generator(sids)
    model.train()
    samples = model.training_samples(split)
    batches = samples.epoch_batches(trainer.batch_size, trainer.seed, 0, trainer.bucket_batches)
    opt = torch.optim.AdamW(model.parameters(), lr=trainer.lr, weight_decay=trainer.weight_decay)

    def step(rows):
        loss = model(samples.batch(rows))
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()

    rng = np.random.default_rng(0)
    order = rng.permutation(len(batches))            # a random sample of the epoch's batches
    for i in order[:warmup]:
        step(batches[i])
    timed = order[warmup:warmup + steps]
    t, c = time.perf_counter(), time.process_time()
    for i in timed:
        step(batches[i])
    wall, cpu = time.perf_counter() - t, time.process_time() - c
    frac = sum(len(batches[i]) for i in timed) / len(samples)  # share of the epoch's examples
    return {"design": kind, "config": config, "params": model.num_parameters(),
            "examples": len(samples), "targets": samples.count(np.arange(len(samples))),
            "batch": trainer.batch_size, "steps": len(timed), "cpu_per_epoch": cpu / frac,
            "wall_per_epoch": wall / frac}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--dataset", default="amazon-beauty")
    p.add_argument("--sids", required=True, help="a scripts/train_rqvae.py run dir on this dataset "
                   "(RQ-VAE IDs: causal, tiger)")
    p.add_argument("--long_sids", help="a run with configs/<dataset>/opq.gin (default, parallel)")
    p.add_argument("--steps", type=int, default=30)
    p.add_argument("--warmup", type=int, default=3)
    p.add_argument("--designs", nargs="+", default=["default", "parallel", "causal", "tiger"])
    a = p.parse_args()
    configs = {"default": f"configs/{a.dataset}/onerec.gin",
               "parallel": f"configs/{a.dataset}/onerec-parallel.gin",
               "causal": f"configs/{a.dataset}/onerec-causal.gin",
               "tiger": f"configs/{a.dataset}/onerec-tiger.gin"}
    long_ids = {"default", "parallel"}
    if long_ids & set(a.designs) and not a.long_sids:
        p.error("--long_sids (an OPQ run) is needed for the designs " + ", ".join(sorted(long_ids)))
    rows = [measure(d, configs[d], a.long_sids if d in long_ids else a.sids, a.steps, a.warmup)
            for d in a.designs]
    print(f"torch threads: {torch.get_num_threads()}")
    print("| design | parameters | examples / epoch | targets / epoch | batch | timed steps "
          "| CPU s / epoch | wall s / epoch |")
    print("|---|---|---|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['design']} | {r['params']:,} | {r['examples']:,} | {r['targets']:,} | {r['batch']} "
              f"| {r['steps']} | {r['cpu_per_epoch']:,.0f} | {r['wall_per_epoch']:,.0f} |")


if __name__ == "__main__":
    main()
