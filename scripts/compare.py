"""Run (or reuse) both paths on one dataset and one split for several seeds, then write a report.

    python scripts/compare.py --gin_file configs/synthetic/compare.gin --run_dir runs/compare-synthetic

Writes into --run_dir: report.md, results.json, plots/*.png, and runs/<model>/seed<k>/ for each run
(semantic IDs -> OneRec, the scorer variants, the baselines). Re-running reuses finished runs.
"""
from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from retrieval import cli, comparison, comparison_report  # noqa: E402  (registers Comparison)
from retrieval.data import load_split  # noqa: E402  (registers the dataset sources)
from retrieval.evaluation import Evaluator  # noqa: E402


def main(args, run_dir: Path) -> None:
    comp = comparison.Comparison()
    specs = comp.plan()
    comparison.execute(specs, run_dir, jobs=comp.jobs)
    split = load_split()
    record = comparison_report.write_report(
        run_dir, specs, split, Evaluator(progress=False).protocol(), cli.git_commit(),
        comparison_report.hardware())
    t = record["test"]["full"]
    best = max(t, key=lambda m: t[m]["ndcg@10"][0]) if t else None
    print(f"report: {run_dir / 'report.md'}" + (f" (best test NDCG@10: {best} "
                                                f"{t[best]['ndcg@10'][0]:.4f})" if best else ""))


if __name__ == "__main__":
    cli.run(main, "Compare the generative and scorer paths on one dataset and split.",
            keep_on_error=True)
