"""The cold-start study: the comparison on a split whose new items never appear in training, the
generator re-evaluated at several ε without retraining, and the table on new-item targets vs the rest.

    python scripts/cold_start.py --gin_file configs/amazon-beauty/cold-start.gin --run_dir runs/beauty-cold-start

Writes into --run_dir: cold_start.md, cold_start.json, the comparison's report.md / results.json /
plots, and runs/<model>/seed<k>/ (the ε runs as runs/<generator>-eps<ε>/). Re-running reuses
finished runs.
"""
from __future__ import annotations

from pathlib import Path

from retrieval.compare.cold_start import run_cold_start  # registers ColdStartStudy, Comparison, sources
from retrieval.core import cli


def main(args, run_dir: Path) -> None:
    run_cold_start(run_dir)


if __name__ == "__main__":
    cli.run(main, "Cold-start items: the generator at several ε, Semantic-KNN and the scorers.",
            keep_on_error=True)
