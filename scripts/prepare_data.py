"""Load a dataset, filter it to its k-core, split it leave-one-out, cache it and print its stats.

    python scripts/prepare_data.py --gin_file configs/ml-latest-small/data.gin --run_dir runs/prep
    python scripts/prepare_data.py --gin_file configs/ml-25m/data.gin --run_dir runs/prep --download

Prints a table of users, items, interactions, density, mean/median sequence length and split
sizes, before filtering (raw) and after. Writes run_dir/results.json ({"dataset": {...}}) and
run_dir/config.gin. `--download` fetches the MovieLens zip first when the files are missing (only
then; nothing is downloaded otherwise).
"""
from __future__ import annotations

from retrieval.core import cli
from retrieval.data.prepare import prepare_dataset


def main(args, run_dir) -> None:
    prepare_dataset(run_dir, download=args.download)


def _args(p) -> None:
    p.add_argument("--download", action="store_true",
                   help="download the MovieLens zip (GroupLens) first if its files are missing")


if __name__ == "__main__":
    cli.run(main, "Prepare a dataset split and print its statistics.", extra_args=_args)
