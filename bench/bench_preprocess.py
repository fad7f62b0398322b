"""Preprocessing benchmark (docs/protocol.md §7): load_split on a synthetic ML-25M-format CSV of 25M rows.

    python bench/bench_preprocess.py [--rows 25000095] [--data_dir DIR]

The CSV is generated once (retrieval.data.synthetic_csv) into DIR, default
$SEMID_CACHE_DIR/bench/ml25m-synthetic-<rows> (else /tmp/semid-bench/...), and reused. Each phase
runs `load_split('ml-25m')` in a fresh child process and reports its wall time and the child's
peak RSS (ru_maxrss from os.wait4):
  cold  — empty split cache: parse CSV, remap ids, sort, 5-core, leave-one-out, write cache;
  warm  — the same call again, answered from the cache.
Budget: cold <= 60 s and <= 4 GB peak RSS on the 2-core box.
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

BUDGET_S, BUDGET_GB = 60.0, 4.0


def _child(data_dir: str) -> None:
    import gin

    from retrieval.data import load_split
    gin.bind_parameter("MovieLens25MSource.path", data_dir)
    t = time.perf_counter()
    split = load_split("ml-25m")
    seconds = time.perf_counter() - t
    print(json.dumps({"load_split_s": seconds, "stats": split.stats()}))


def _run_child(data_dir: Path, cache_dir: Path) -> dict:
    env = dict(os.environ, SEMID_CACHE_DIR=str(cache_dir))
    t = time.perf_counter()
    proc = subprocess.Popen([sys.executable, __file__, "--child", str(data_dir)], env=env,
                            stdout=subprocess.PIPE, text=True)
    out = proc.stdout.read()
    _, status, usage = os.wait4(proc.pid, 0)       # rusage of this child alone
    wall = time.perf_counter() - t
    proc.returncode = os.waitstatus_to_exitcode(status)
    if proc.returncode != 0:
        sys.exit(f"benchmark child failed with exit code {proc.returncode}")
    res = json.loads(out.strip().splitlines()[-1])
    res.update(process_s=wall, peak_rss_gb=usage.ru_maxrss * 1024 / 1e9)   # ru_maxrss is KiB
    return res


def default_dir(rows: int) -> Path:
    base = os.environ.get("SEMID_CACHE_DIR")
    root = Path(base) / "bench" if base else Path(tempfile.gettempdir()) / "semid-bench"
    return root / f"ml25m-synthetic-{rows}"


def ensure_csv(data_dir: Path, rows: int) -> None:
    stamp = data_dir / "generated.json"
    if stamp.is_file() and json.loads(stamp.read_text()).get("ratings") == rows \
            and (data_dir / "ratings.csv").is_file():
        print(f"reusing {data_dir}")
        return
    from retrieval.data.synthetic_csv import write_movielens_csv
    from retrieval.core.io import write_json
    print(f"generating {rows:,} ratings into {data_dir} (once) ...", flush=True)
    t = time.perf_counter()
    counts = write_movielens_csv(data_dir, num_ratings=rows)
    write_json(stamp, counts)
    print(f"generated in {time.perf_counter() - t:.1f} s: {counts}")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--rows", type=int, default=25_000_095)
    p.add_argument("--data_dir", default=None)
    p.add_argument("--child", default=None, help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.child:
        return _child(args.child)

    data_dir = Path(args.data_dir) if args.data_dir else default_dir(args.rows)
    ensure_csv(data_dir, args.rows)
    size_gb = (data_dir / "ratings.csv").stat().st_size / 1e9
    load0 = os.getloadavg()
    with tempfile.TemporaryDirectory(prefix="semid-bench-cache-") as cache:
        cold = _run_child(data_dir, Path(cache))
        warm = _run_child(data_dir, Path(cache))
    s = cold["stats"]
    print(f"\nratings.csv: {args.rows:,} rows, {size_gb:.2f} GB; after 5-core + split: "
          f"{s['users']:,} users, {s['items']:,} items, {s['interactions']:,} interactions")
    load = os.getloadavg()
    print(f"cpus: {os.cpu_count()}, load average before/after: {load0[0]:.1f} / {load[0]:.1f} "
          "(other processes share these cores when > 0)\n")
    print("| phase | load_split (s) | process wall (s) | peak RSS (GB) | budget |")
    print("|---|---|---|---|---|")
    for name, r in (("cold (parse + split + write cache)", cold), ("warm (cache hit)", warm)):
        budget = f"<= {BUDGET_S:.0f} s, <= {BUDGET_GB:.0f} GB" if name.startswith("cold") else "-"
        print(f"| {name} | {r['load_split_s']:.1f} | {r['process_s']:.1f} | "
              f"{r['peak_rss_gb']:.2f} | {budget} |")
    ok = cold["process_s"] <= BUDGET_S and cold["peak_rss_gb"] <= BUDGET_GB
    print(f"\nbudget {'met' if ok else 'NOT met'}")


if __name__ == "__main__":
    main()
