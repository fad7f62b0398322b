"""One data-preparation run (scripts/prepare_data.py): optionally download the MovieLens files, load
the gin-bound dataset, filter it to its k-core, split it leave-one-out (cached), print its
statistics before and after filtering and write them to run_dir/results.json.

    prepare_dataset(run_dir, download=False)
"""
from __future__ import annotations

import inspect
from pathlib import Path

import gin

from retrieval.core import cli
from retrieval.core.errors import RecError
from retrieval.core.io import write_json
from retrieval.data.registry import get_source, load_split
from retrieval.data.stats import raw_stats, stats_table


def _bound(param: str):
    """The value gin binds to load_split.<param>, else the function's default."""
    try:
        return gin.query_parameter(f"load_split.{param}")
    except ValueError:
        return inspect.signature(load_split).parameters[param].default


def prepare_dataset(run_dir: Path, download: bool = False) -> dict:
    """Prepare the split load_split's gin bindings name; returns the results.json record.
    `download` fetches the MovieLens zip first when its files are missing (only then)."""
    name = _bound("name")
    source = get_source(name)                       # unknown name -> one-line error
    if download:
        from retrieval.data.download import download_movielens
        folder = getattr(source, "root", None)
        if folder is None:
            raise RecError(f"--download is for the MovieLens datasets; put the {name!r} "
                           "files in place by hand")
        written = download_movielens(name, folder)
        print(f"downloaded {len(written)} files into {folder}" if written
              else f"{name}: files already present in {folder}")
    raw = raw_stats(source)
    split = load_split()
    k = source.default_k_core if _bound("k_core") is None else int(_bound("k_core"))
    print(f"dataset {name} (fingerprint {split.fingerprint}, k-core {k}, "
          f"timestamps {'real' if split.has_time else 'positions'})")
    print(stats_table(raw, split, k))
    record = {"dataset": {
        "name": name, "fingerprint": split.fingerprint, "k_core": k, "has_time": split.has_time,
        "counts": split.stats(), "raw_counts": raw}, "git_commit": cli.git_commit()}
    write_json(Path(run_dir) / "results.json", record)
    return record
