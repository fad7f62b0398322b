"""Load a dataset, filter it to its k-core, split it leave-one-out, cache it and print its stats.

    python scripts/prepare_data.py --gin_file configs/ml-latest-small/data.gin --run_dir runs/prep
    python scripts/prepare_data.py --gin_file configs/ml-25m/data.gin --run_dir runs/prep --download

Prints a table of users, items, interactions, density, mean/median sequence length and split
sizes, before filtering (raw) and after. Writes run_dir/results.json ({"dataset": {...}}) and
run_dir/config.gin. `--download` fetches the MovieLens zip first when the files are missing (only
then; nothing is downloaded otherwise).
"""
from __future__ import annotations

import inspect

import gin

from retrieval import cli
from retrieval.data import load_split
from retrieval.data.registry import get_source
from retrieval.data.stats import raw_stats, stats_table
from retrieval.errors import RecError
from retrieval.io import write_json


def _bound(param: str):
    """The value gin binds to load_split.<param>, else the function's default."""
    try:
        return gin.query_parameter(f"load_split.{param}")
    except ValueError:
        return inspect.signature(load_split).parameters[param].default


def main(args, run_dir) -> None:
    name = _bound("name")
    source = get_source(name)                       # unknown name -> one-line error
    if args.download:
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
    write_json(run_dir / "results.json", {"dataset": {
        "name": name, "fingerprint": split.fingerprint, "k_core": k, "has_time": split.has_time,
        "counts": split.stats(), "raw_counts": raw}, "git_commit": cli.git_commit()})


def _args(p) -> None:
    p.add_argument("--download", action="store_true",
                   help="download the MovieLens zip (GroupLens) first if its files are missing")


if __name__ == "__main__":
    cli.run(main, "Prepare a dataset split and print its statistics.", extra_args=_args)
