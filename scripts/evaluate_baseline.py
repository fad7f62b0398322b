"""Evaluate the non-learned baselines (most-popular, item co-occurrence) on a dataset's split.

    python scripts/evaluate_baseline.py --gin_file configs/amazon-beauty/baseline.gin --run_dir runs/beauty-baselines

Writes run_dir/results.json (see retrieval.evaluation.report), run_dir/ranks.safetensors (per-user
ranks for paired tests) and run_dir/config.gin, and prints a table.
"""
from __future__ import annotations

import gin

from retrieval import cli
from retrieval.baselines import BASELINES, make_baseline
from retrieval.data import load_split
from retrieval.errors import RecError
from retrieval.evaluation import Evaluator
from retrieval.evaluation.report import format_table, results_json, save_ranks, write_results


@gin.configurable
def evaluate_baseline(run_dir, model=("popularity", "cooccurrence")):
    """Fit each baseline in `model` (a name or a list of names) on the training sequences and
    evaluate it on the validation and test stages; the first model fills the top-level sections."""
    names = [model] if isinstance(model, str) else list(model)
    if not names:
        raise RecError("evaluate_baseline.model is empty; name one or more of: " + ", ".join(BASELINES))
    for n in names:
        if n not in BASELINES:
            raise RecError(f"evaluate_baseline.model: unknown baseline {n!r}; "
                           f"choose from: {', '.join(BASELINES)}")
    split = load_split()
    evaluator = Evaluator()
    results = {}
    for n in names:
        scorer = make_baseline(n).fit(split)
        results[n] = {st: evaluator.evaluate(scorer, split, st) for st in ("valid", "test")}
    print(f"dataset {split.name} ({split.fingerprint}): {split.num_users:,} users, "
          f"{split.num_items:,} items; exclude_history={evaluator.exclude_history}")
    print(format_table(results))
    write_results(run_dir, results_json(results, evaluator.protocol(), split,
                                        {"env": cli.env_info()}))
    save_ranks(run_dir / "ranks.safetensors", results)


def main(args, run_dir) -> None:
    evaluate_baseline(run_dir)


if __name__ == "__main__":
    cli.run(main, "Evaluate the most-popular and item co-occurrence baselines.")
