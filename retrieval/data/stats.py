"""Dataset statistics before filtering (from Interactions) and after (SplitData.stats()), and the
table `scripts/prepare_data.py` prints. Raw counts are cached by input fingerprint, so asking
for them again does not re-parse a 25M-row file."""
from __future__ import annotations

import json

import numpy as np

from retrieval.data.registry import DatasetSource, cache_root
from retrieval.data.types import Interactions, SplitData
from retrieval.core.io import write_json


def interaction_stats(inter: Interactions) -> dict:
    """Counts of the raw table: users and items that occur, events, density, sequence lengths."""
    lengths = np.bincount(inter.user, minlength=len(inter.user_raw_ids))
    lengths = lengths[lengths > 0]
    items = int(np.count_nonzero(np.bincount(inter.item)[1:])) if inter.num_events else 0
    users = int(len(lengths))
    return {
        "users": users,
        "items": items,
        "interactions": int(inter.num_events),
        "density": inter.num_events / max(1, users * items),
        "mean_seq_len": float(lengths.mean()) if users else 0.0,
        "median_seq_len": float(np.median(lengths)) if users else 0.0,
        "catalogue_items": int(inter.catalogue.num_items),
        "has_time": bool(inter.has_time),
    }


def raw_stats(source: DatasetSource) -> dict:
    """interaction_stats of `source.load()`, cached under the source's input fingerprint."""
    path = cache_root() / "raw_stats" / f"{source.name}-{source.input_fingerprint()}.json"
    if path.is_file():
        try:
            return json.loads(path.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            pass  # damaged entry: recompute
    stats = interaction_stats(source.load())
    write_json(path, stats)
    return stats


_ROWS = [("users", "users", "{:,}"), ("items", "items", "{:,}"),
         ("interactions", "interactions", "{:,}"), ("density", "density", "{:.4g}"),
         ("mean sequence length", "mean_seq_len", "{:.2f}"),
         ("median sequence length", "median_seq_len", "{:.1f}"),
         ("train interactions", "train_interactions", "{:,}"),
         ("valid users (targets)", "valid_users", "{:,}"),
         ("test users (targets)", "test_users", "{:,}")]


def stats_table(raw: dict, split: SplitData, k: int) -> str:
    """A Markdown table: raw counts beside counts after k-core filtering and the split."""
    after = split.stats()
    lines = [f"| statistic | raw (before filtering) | after {k}-core + leave-one-out |",
             "|---|---:|---:|"]
    for label, key, fmt in _ROWS:
        a = fmt.format(raw[key]) if key in raw else "-"
        lines.append(f"| {label} | {a} | {fmt.format(after[key])} |")
    return "\n".join(lines)
