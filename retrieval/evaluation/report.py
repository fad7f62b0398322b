"""What every evaluation run writes and prints: results.json sections and a readable table.

results.json (one per run directory):
    {"valid": {...}, "test": {...},          # the first (or only) model, as every script reports
     "model": name of that model,
     "models": {name: {"valid": {...}, "test": {...}}, ...},
     "protocol": Evaluator.protocol(),
     "dataset": {"name", "fingerprint", "counts": SplitData.stats()},
     "config_hash", "env"}
A stage section is EvalResult.to_json(): {"stage", "exclude_history", "num_users",
"full": {"hr@10": ..., "auc": ..., "gauc": ...}, "sampled-100": {...}}: AUC and GAUC sit under
the protocol they were computed in (full-ranking AUC under "full").
"""
from __future__ import annotations

from pathlib import Path

import gin
import numpy as np

from retrieval.data.types import SplitData
from retrieval.evaluation.evaluator import FULL, SAMPLED, EvalResult
from retrieval.errors import RecError
from retrieval.io import fingerprint, load_tensors, read_json, save_tensors, write_json

TABLE_METRICS = ("hr@10", "ndcg@10", "hr@20", "ndcg@20", "hr@50", "ndcg@50", "mrr", "auc", "gauc")


def dataset_json(split: SplitData) -> dict:
    return {"name": split.name, "fingerprint": split.fingerprint, "counts": split.stats()}


def results_json(models: dict[str, dict[str, EvalResult]], protocol: dict, split: SplitData,
                 extra: dict | None = None) -> dict:
    """The results.json record of `models` = {name: {"valid": EvalResult, "test": EvalResult}}."""
    per_model = {m: {st: r.to_json() for st, r in stages.items()} for m, stages in models.items()}
    first = next(iter(per_model))
    return {**per_model[first], "model": first, "models": per_model, "protocol": protocol,
            "dataset": dataset_json(split), "config_hash": fingerprint(gin.config_str()),
            **(extra or {})}


def save_ranks(path: Path, models: dict[str, dict[str, EvalResult]]) -> None:
    """Per-user ranks for later paired tests: keys "<model>/<stage>/<protocol>" and
    "<model>/<stage>/users", and what per-user AUC needs beside a rank:
    "<model>/<stage>/candidates/<protocol>" and, where the model did not rank every candidate (a
    generator), "<model>/<stage>/ranked/<protocol>"."""
    tensors = {}
    for m, stages in models.items():
        for st, r in stages.items():
            tensors[f"{m}/{st}/users"] = r.users
            for proto, ranks in r.ranks.items():
                tensors[f"{m}/{st}/{proto}"] = ranks
            for proto, counts in r.candidates.items():
                tensors[f"{m}/{st}/candidates/{proto}"] = counts
                ranked = r.ranked.get(proto)
                if ranked is not None and not np.array_equal(ranked, counts):
                    tensors[f"{m}/{st}/ranked/{proto}"] = ranked
    save_tensors(path, tensors)


def load_result(run_dir: Path, model: str, stage: str) -> EvalResult:
    """The EvalResult of `model` on `stage` from a run directory (results.json + ranks.safetensors),
    with per-user ranks for paired tests."""
    run_dir = Path(run_dir)
    record = read_json(run_dir / "results.json")
    if model not in record.get("models", {}) or stage not in record["models"][model]:
        raise RecError(f"{run_dir / 'results.json'}: no results for model {model!r}, stage {stage!r}; "
                       f"it has models: {', '.join(record.get('models', {}))}")
    tensors = load_tensors(run_dir / "ranks.safetensors")
    sec = record["models"][model][stage]
    prefix = f"{model}/{stage}/"
    mine = {k[len(prefix):]: v.numpy() for k, v in tensors.items() if k.startswith(prefix)}
    ranks = {k: v for k, v in mine.items() if "/" not in k and k != "users"}
    cands = {k.split("/", 1)[1]: v for k, v in mine.items() if k.startswith("candidates/")}
    ranked = {p: mine.get(f"ranked/{p}", c) for p, c in cands.items()}     # absent: all ranked
    metrics = {p: sec[p] for p in ranks}
    return EvalResult(stage, metrics, ranks, mine["users"], sec["exclude_history"], candidates=cands,
                      ranked=ranked)


def format_table(models: dict[str, dict[str, EvalResult]], metrics=TABLE_METRICS) -> str:
    """One row per (model, stage, protocol); full ranking and sampled-100 are separate rows."""
    header = ["model", "stage", "protocol", *metrics]
    rows = []
    for m, stages in models.items():
        for st, r in stages.items():
            for proto in (FULL, SAMPLED):
                if proto in r.metrics:
                    vals = r.metrics[proto]
                    rows.append([m, st, proto, *(f"{vals[k]:.4f}" if k in vals else "-" for k in metrics)])
    widths = [max(len(str(x)) for x in col) for col in zip(header, *rows)]
    fmt = lambda cells: "  ".join(str(c).ljust(w) if i < 3 else str(c).rjust(w)   # noqa: E731
                                  for i, (c, w) in enumerate(zip(cells, widths)))
    lines = [fmt(header), fmt(["-" * w for w in widths])] + [fmt(r) for r in rows]
    return "\n".join(lines)


def write_results(run_dir: Path, record: dict) -> Path:
    return write_json(Path(run_dir) / "results.json", record)
