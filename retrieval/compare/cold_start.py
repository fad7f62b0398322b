"""The cold-start table (docs/protocol.md §2.7): test Recall (= HR, one target) and NDCG @5/10/20 of
finished runs on the test users whose target is a new item and on the rest, from each run's
results.json + ranks.safetensors (full ranking; a generator's miss counts as a miss).

    table = cold_start_table({"onerec ε=0.1": (run_a, "onerec"), "semantic-knn": (run_b,
                              "semantic_knn"), "sasrec-ce": (run_c, "sasrec")}, split)

A generator is evaluated at several ε by copying its finished run and re-running
`scripts/train_onerec.py --resume --gin_param "ParallelSidGenerator.new_item_share = ε"` on the
copy: the trainer finds the run finished and only redoes the final evaluation.
"""
from __future__ import annotations

from pathlib import Path

from retrieval.core.errors import RecError
from retrieval.data.types import SplitData
from retrieval.evaluation.evaluator import FULL
from retrieval.evaluation.metrics import metrics_from_ranks
from retrieval.evaluation.report import load_result

KS = (5, 10, 20)
COLUMNS = [f"{m}@{k}" for m in ("hr", "ndcg") for k in KS]


def subgroup_metrics(run_dir: Path, model: str, split: SplitData) -> dict[str, dict]:
    """{"new": metrics, "other": metrics, "users": {"new": n, "other": n}} of one run's test ranks."""
    if split.new_items is None:
        raise RecError(f"{split.name}: the split has no new items; load it with load_split.new_items > 0")
    res = load_result(Path(run_dir), model, "test")
    new_target = split.new_items[split.test_item[res.users]]
    ranks = res.ranks[FULL]
    out = {"users": {"new": int(new_target.sum()), "other": int((~new_target).sum())}}
    for name, rows in (("new", new_target), ("other", ~new_target)):
        m = metrics_from_ranks(ranks[rows], ks=KS, full_mrr=False)
        out[name] = {c: m[c] for c in COLUMNS}
    return out


def cold_start_table(runs: dict[str, tuple], split: SplitData) -> str:
    """A markdown table: one row per (model, user group); runs = {label: (run_dir, model key)}."""
    header = "| model | test users | n | " + " | ".join(c.replace("hr", "Recall") for c in COLUMNS) + " |"
    lines = [header, "|" + "---|" * (3 + len(COLUMNS))]
    for label, (run_dir, model) in runs.items():
        sub = subgroup_metrics(run_dir, model, split)
        for group, title in (("new", "target is a new item"), ("other", "the rest")):
            vals = " | ".join(f"{sub[group][c]:.4f}" for c in COLUMNS)
            lines.append(f"| {label} | {title} | {sub['users'][group]:,} | {vals} |")
    return "\n".join(lines)
