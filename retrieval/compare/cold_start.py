"""The cold-start study (docs/protocol.md §2.7): test Recall (= HR, one target) and NDCG @5/10/20
on the test users whose target is a new item and on the rest, mean ± std over seeds, from each
finished run's results.json + ranks.safetensors (full ranking; a generator's miss is a miss).

    python scripts/cold_start.py --gin_file configs/amazon-beauty/cold-start.gin --run_dir runs/beauty-cold-start

`run_cold_start` runs (or reuses) the gin-bound `Comparison` on the cold split, then evaluates the
generator again at each ε of `ColdStartStudy.epsilons` without retraining: each ε run is a copy of
the finished generator run, resumed with `ParallelSidGenerator.new_item_share = ε`, so the trainer
finds it finished and only redoes the final evaluation. Writes the comparison's report.md /
results.json (with the ε rows) and cold_start.md / cold_start.json.
"""
from __future__ import annotations

import shutil
from dataclasses import dataclass
from pathlib import Path

import gin

from retrieval.compare import comparison, report as comparison_report
from retrieval.compare.comparison import RunSpec
from retrieval.core import cli
from retrieval.core.errors import RecError
from retrieval.core.io import read_json, write_json, write_text
from retrieval.data import load_split
from retrieval.data.types import SplitData
from retrieval.evaluation import Evaluator
from retrieval.evaluation.evaluator import FULL
from retrieval.evaluation.metrics import metrics_from_ranks
from retrieval.evaluation.report import load_result

KS = (5, 10, 20)
COLUMNS = [f"{m}@{k}" for m in ("hr", "ndcg") for k in KS]
GROUPS = (("new", "target is a new item"), ("other", "the rest"))
# Models that score items from a trained embedding table: a new item's row never saw a positive.
TABLE_KINDS = ("scorer", "cf")


@gin.configurable
@dataclass(frozen=True)
class ColdStartStudy:
    """generator: the Comparison.generative model re-evaluated at each ε (a parallel generator);
    epsilons: the ε values (share of new items allowed in every top-j); the run itself is ε = its
    config's `ParallelSidGenerator.new_item_share` (1.0 = free)."""

    generator: str = "onerec"
    epsilons: tuple = (0.0, 0.1, 0.2)


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


def cold_start_rows(runs: dict[str, list[tuple]], split: SplitData) -> dict[str, dict]:
    """{label: {"new"/"other": {metric: [mean, std, n_seeds]}, "users": ...}} over each label's
    runs = [(run_dir, model key), ...] (one per seed)."""
    out = {}
    for label, pairs in runs.items():
        subs = [subgroup_metrics(rd, model, split) for rd, model in pairs]
        row = {"users": subs[0]["users"]}
        for group, _ in GROUPS:
            row[group] = {c: [*comparison_report.mean_std([s[group][c] for s in subs]), len(subs)] for c in COLUMNS}
        out[label] = row
    return out


def cold_start_table(rows: dict[str, dict], notes: dict[str, str] | None = None) -> str:
    """A markdown table: one line per (model, user group), mean ± std over seeds."""
    notes = notes or {}
    header = "| model | test users | n | " + " | ".join(
        c.replace("hr", "Recall").replace("ndcg", "NDCG") for c in COLUMNS) + " |"
    lines = [header, "|" + "---|" * (3 + len(COLUMNS))]
    for label, row in rows.items():
        name = label + (f" ({notes[label]})" if label in notes else "")
        for group, title in GROUPS:
            vals = " | ".join(f"{m:.4f} ± {s:.4f}" for m, s, _ in (row[group][c] for c in COLUMNS))
            lines.append(f"| {name} | {title} | {row['users'][group]:,} | {vals} |")
    return "\n".join(lines)


def epsilon_label(generator: str, eps: float) -> str:
    return f"{generator}-eps{eps:g}"


def epsilon_specs(specs: list[RunSpec], study: ColdStartStudy) -> list[RunSpec]:
    """One generator run per (seed, ε): the generator's spec with the ε binding added."""
    gens = [s for s in specs if s.kind == "generative" and s.model == study.generator]
    if not gens:
        raise RecError(f"ColdStartStudy.generator = {study.generator!r} is not one of "
                       f"Comparison.generative: {sorted({s.model for s in specs if s.kind == 'generative'})}")
    for eps in study.epsilons:
        if isinstance(eps, bool) or not isinstance(eps, (int, float)) or not 0.0 <= eps <= 1.0:
            raise RecError(f"ColdStartStudy.epsilons: {eps!r} is not a share in [0, 1]")
    return [RunSpec(epsilon_label(s.model, eps), s.kind, s.script, s.gin_files, s.seed,
                    s.params + (f"ParallelSidGenerator.new_item_share={float(eps)!r}",))
            for eps in study.epsilons for s in gens]


def copy_finished_run(src: Path, dst: Path) -> None:
    """dst = src without its results (atomically), so --resume on dst redoes only the final evaluation."""
    if dst.exists():
        return
    tmp = dst.with_name(dst.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    shutil.copytree(src, tmp, ignore=shutil.ignore_patterns("results.json", "ranks.safetensors", "*.log"))
    tmp.rename(dst)


def run_cold_start(run_dir: Path) -> dict:
    """The study end to end; returns the cold_start.json record."""
    run_dir = Path(run_dir)
    split = load_split()
    if split.new_items is None:
        raise RecError("the cold-start study needs a cold split: bind load_split.new_items (> 0) in the "
                       "config and in Comparison.extra_params, so the runs and the table see the same split")
    comp, study = comparison.Comparison(), ColdStartStudy()
    specs = comp.plan()
    eps_specs = epsilon_specs(specs, study)
    comparison.execute(specs, run_dir, jobs=comp.jobs)
    base = {s.seed: s.run_dir(run_dir) for s in specs if s.model == study.generator}
    for s in eps_specs:
        copy_finished_run(base[s.seed], s.run_dir(run_dir))
    comparison.execute(specs + eps_specs, run_dir, jobs=comp.jobs)
    comparison_report.write_report(run_dir, specs + eps_specs, split, Evaluator(progress=False).protocol(),
                                   cli.git_commit(), comparison_report.hardware(), cli.command_line())
    runs, notes = {}, {}
    for s in specs + eps_specs:
        if s.kind == "semantic_ids":
            continue
        rd = s.run_dir(run_dir)
        for label, key in comparison_report.labelled_models(s, read_json(rd / "results.json")):
            runs.setdefault(label, []).append((rd, key))
            if s.kind in TABLE_KINDS:
                notes[label] = "no trained embedding for a new item: its row never had a positive"
            elif s.model == study.generator:
                notes[label] = "ε = its config's new_item_share, default 1 = free"
    rows = cold_start_rows(runs, split)
    record = {"dataset": {"name": split.name, "fingerprint": split.fingerprint,
                          "new_items": int(split.new_items.sum())},
              "epsilons": list(study.epsilons), "rows": rows, "notes": notes}
    write_json(run_dir / "cold_start.json", record)
    write_text(run_dir / "cold_start.md", _markdown(record))
    print(f"cold-start table: {run_dir / 'cold_start.md'}")
    return record


def _markdown(record: dict) -> str:
    d = record["dataset"]
    return (f"# Cold-start items — {d['name']}\n\n"
            f"{d['new_items']:,} items held out of training as new (split `{d['fingerprint']}`); "
            f"test, full ranking, mean ± std over seeds; Recall = HR (one target).\n\n"
            + cold_start_table(record["rows"], record["notes"]) + "\n")
