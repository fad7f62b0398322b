"""One comparison (scripts/compare.py): plan the runs the gin-bound `Comparison` names, run or reuse
them, then write the side-by-side report into run_dir and print where it is.

    run_comparison(run_dir)    # report.md, results.json, plots/*.png, runs/<model>/seed<k>/
"""
from __future__ import annotations

from pathlib import Path

from retrieval.compare import comparison, report as comparison_report  # (registers Comparison)
from retrieval.core import cli
from retrieval.data import load_split  # (registers the dataset sources)
from retrieval.evaluation import Evaluator


def run_comparison(run_dir: Path) -> dict:
    """Run (or reuse) every planned run, write the report; returns its results.json record."""
    comp = comparison.Comparison()
    specs = comp.plan()
    comparison.execute(specs, run_dir, jobs=comp.jobs)
    split = load_split()
    record = comparison_report.write_report(
        run_dir, specs, split, Evaluator(progress=False).protocol(), cli.git_commit(),
        comparison_report.hardware(), cli.command_line(), comp.references, comp.references_note)
    t = record["test"]["full"]
    best = max(t, key=lambda m: t[m]["ndcg@10"][0]) if t else None
    print(f"report: {run_dir / 'report.md'}" + (f" (best test NDCG@10: {best} "
                                                f"{t[best]['ndcg@10'][0]:.4f})" if best else ""))
    return record
