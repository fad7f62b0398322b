"""Stage-1 benchmark: embed Amazon Beauty's 12,101 item texts and train the default RQ-VAE
(budget: within 10 minutes on the 2-core CPU box), plus the k-means tokenizers, and an
ML-25M-sized catalogue (62,423 items) through every step except the text encoder.

    python bench/bench_rqvae.py                       # everything (fresh embeddings, no cache)
    python bench/bench_rqvae.py --use_cache           # reuse cached Beauty embeddings
    python bench/bench_rqvae.py --parts large         # only the 62k-item scale check

Prints one table row per step: wall seconds, process peak RSS, and the quality numbers.
"""
from __future__ import annotations

import argparse
import os
import resource
import time
from pathlib import Path

# On a shared CPU box OpenMP threads that spin while waiting slow everything down several-fold.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
os.environ.setdefault("HF_HUB_OFFLINE", "1")

import numpy as np  # noqa: E402
import torch  # noqa: E402

from retrieval.data import load_split  # noqa: E402
from rqvae.disambiguation import collision_stats, disambiguate, level_stats  # noqa: E402
from rqvae.embeddings import item_embeddings  # noqa: E402
from rqvae.tokenizer import make_tokenizer, reconstruction_metrics  # noqa: E402

ROWS: list[dict] = []


def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def record(step: str, seconds: float, **extra) -> None:
    row = {"step": step, "seconds": round(seconds, 1), "peak_rss_mb": round(peak_rss_mb()), **extra}
    ROWS.append(row)
    print(row, flush=True)


def quality(x: np.ndarray, tok, codes: np.ndarray) -> dict:
    lv = level_stats(codes, tok.codebook_size)
    full = disambiguate(codes)
    return {"usage": [round(s["usage"], 3) for s in lv],
            "perplexity": [round(s["perplexity"], 1) for s in lv],
            **{k: v for k, v in collision_stats(codes).items() if k != "distinct_ids"},
            "unique": bool(len(np.unique(full, axis=0)) == len(full)),
            "recon_rel": round(reconstruction_metrics(x, tok.reconstruction)["reconstruction_relative"], 3)}


def bench_beauty(args) -> None:
    t0 = time.perf_counter()
    split = load_split("amazon-beauty")
    record("load amazon-beauty split", time.perf_counter() - t0, items=split.num_items)
    t0 = time.perf_counter()
    emb = item_embeddings(split, use_cache=args.use_cache)
    t_emb = time.perf_counter() - t0
    record("embed 12,101 texts (MiniLM-L6)" + (" [cache]" if args.use_cache else ""), t_emb,
           dim=emb.vectors.shape[1])
    for name in args.tokenizers:
        tok = make_tokenizer(name, seed=0)
        if name == "rqvae" and args.steps:
            tok.steps = args.steps
        t0 = time.perf_counter()
        codes = tok.fit(emb.vectors)
        t_fit = time.perf_counter() - t0
        extra = {"steps": tok.steps} if name == "rqvae" else {}
        record(f"fit {name} 3x256", t_fit, **extra, **quality(emb.vectors, tok, codes))
        if name == "rqvae":
            record("embed + train default RQ-VAE (budget 600 s)", t_emb + t_fit)


def bench_large(args) -> None:
    """62,423 items (ML-25M's catalogue size), 384-d: memory must stay linear in N."""
    n, d, intrinsic = 62_423, 384, 32
    rng = np.random.default_rng(0)
    # Text-like geometry: 500 topics in a 32-d latent space, mapped into 384-d, plus weak noise.
    topics = rng.standard_normal((500, intrinsic)).astype(np.float32)
    z = topics[rng.integers(0, 500, n)] + 0.7 * rng.standard_normal((n, intrinsic)).astype(np.float32)
    x = z @ rng.standard_normal((intrinsic, d)).astype(np.float32) / np.sqrt(intrinsic)
    x += 0.05 * rng.standard_normal((n, d)).astype(np.float32)
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    for name in args.large_tokenizers:
        tok = make_tokenizer(name, seed=0)
        if name == "rqvae":
            tok.steps = args.large_steps
        t0 = time.perf_counter()
        codes = tok.fit(x)
        record(f"62k items: fit {name} 3x256", time.perf_counter() - t0, **quality(x, tok, codes))
    t0 = time.perf_counter()
    disambiguate(codes)
    record("62k items: disambiguate", time.perf_counter() - t0)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--parts", nargs="+", default=["beauty", "large"], choices=["beauty", "large"])
    p.add_argument("--tokenizers", nargs="+", default=["rqvae", "rqkmeans", "balanced_rqkmeans"])
    p.add_argument("--large_tokenizers", nargs="+", default=["rqkmeans", "balanced_rqkmeans", "rqvae"])
    p.add_argument("--steps", type=int, default=None, help="RQ-VAE steps (default: the gin default)")
    p.add_argument("--large_steps", type=int, default=2000)
    p.add_argument("--use_cache", action="store_true", help="reuse cached Beauty embeddings")
    args = p.parse_args()
    import gin
    # The frozen stage-1 defaults (PCA width of RQ-KMeans, RQ-VAE steps, ...), as the script uses.
    gin.parse_config_file(str(Path(__file__).resolve().parents[1] / "configs/base/semantic_ids.gin"))
    print(f"torch threads {torch.get_num_threads()}, cpus {os.cpu_count()}, "
          f"OMP_WAIT_POLICY={os.environ.get('OMP_WAIT_POLICY')}", flush=True)
    if "beauty" in args.parts:
        bench_beauty(args)
    if "large" in args.parts:
        bench_large(args)
    print("\n| step | seconds | peak RSS MB | details |\n|---|---|---|---|")
    for r in ROWS:
        details = ", ".join(f"{k}={v}" for k, v in r.items() if k not in ("step", "seconds", "peak_rss_mb"))
        print(f"| {r['step']} | {r['seconds']} | {r['peak_rss_mb']} | {details} |")


if __name__ == "__main__":
    main()
