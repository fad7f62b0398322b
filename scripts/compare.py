"""Run (or reuse) both paths on one dataset and one split for several seeds, then write a report.

    python scripts/compare.py --gin_file configs/synthetic/compare.gin --run_dir runs/compare-synthetic

Writes into --run_dir: report.md, results.json, plots/*.png, and runs/<model>/seed<k>/ for each run
(semantic IDs -> OneRec, the scorer variants, the baselines). Re-running reuses finished runs.
"""
from __future__ import annotations

from pathlib import Path

from retrieval.compare.run import run_comparison  # registers Comparison and the dataset sources
from retrieval.core import cli


def main(args, run_dir: Path) -> None:
    run_comparison(run_dir)


if __name__ == "__main__":
    cli.run(main, "Compare the generative and scorer paths on one dataset and split.",
            keep_on_error=True)
