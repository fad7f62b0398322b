"""Write the synthetic generator's output as an ML-25M-format folder (ratings.csv + movies.csv).

For benchmarks of the `ml-25m` loader at full size without the real file: the defaults give
25,000,095 ratings over 162,541 users and 62,423 movies, like ML-25M. Everything is vectorised and
the CSV is written by pyarrow in C++, so 25M rows take well under a minute of generation + writing
on 2 cores (plus the generator's own time). Like the real file, rows are sorted by (userId,
movieId), not by time, and movie ids are sparse (up to ~3.35x the movie count), so the loader's
time sort and id lookup do real work.

    python -c "from retrieval.data.synthetic_csv import write_movielens_csv as w; w('/tmp/ml')"
"""
from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.csv as pacsv

from retrieval.data import synthetic
from retrieval.core.io import atomic_write

HALF_STARS = [f"{x / 2:.1f}" for x in range(1, 11)]          # "0.5" .. "5.0", as in ML-25M


def write_movielens_csv(folder: str | os.PathLike, num_ratings: int = 25_000_095,
                        num_users: int = 162_541, num_items: int = 62_423, seed: int = 0) -> dict:
    """Generate and write `folder`/ratings.csv and movies.csv; return the counts written.

    Users get a geometric number of ratings with mean ~num_ratings / num_users (a few % extra is
    generated, then the table is cut to exactly `num_ratings` rows, so the last users are cut off).
    """
    folder = Path(folder)
    rng = np.random.default_rng(seed + 1)
    mean = 1.03 * num_ratings / num_users
    for _ in range(5):       # lengths are random: ask for a little more until there is enough
        d = synthetic.generate(num_users=num_users, num_items=num_items, mean_length=mean,
                               max_length=int(20 * mean) + 10, seed=seed, unique_per_user=False)
        if len(d["user"]) >= num_ratings:
            break
        mean *= 1.05 * num_ratings / len(d["user"])
    n = min(num_ratings, len(d["user"]))
    user = (d["user"][:n] + 1).astype(np.int32)
    item = d["item"][:n]
    ts = d["timestamp"][:n]
    del d["user"], d["item"], d["timestamp"]

    # Sparse, increasing movie ids: synthetic item k (1..N) -> movie_ids[k-1].
    movie_ids = np.sort(rng.choice(int(3.35 * num_items) + 1, size=num_items, replace=False)) + 1
    order = np.lexsort((item, user))                             # ML files: by user, then movie
    user, item, ts = user[order], item[order], ts[order]
    del order
    movie = movie_ids[item - 1].astype(np.int32)
    del item
    rating = pa.DictionaryArray.from_arrays(
        pa.array(rng.integers(0, 10, size=n, dtype=np.int8)), pa.array(HALF_STARS))
    table = pa.table({"userId": user, "movieId": movie, "rating": rating, "timestamp": ts})

    def _ratings(tmp):
        with open(tmp, "wb") as f:
            f.write(b"userId,movieId,rating,timestamp\n")
            pacsv.write_csv(table, f, write_options=pacsv.WriteOptions(
                include_header=False, quoting_style="none", batch_size=1 << 20))
    atomic_write(folder / "ratings.csv", _ratings)

    movies = pd.DataFrame({"movieId": movie_ids, "title": d["title"], "genres": d["genres"]})
    atomic_write(folder / "movies.csv", lambda tmp: movies.to_csv(tmp, index=False))
    return {"ratings": int(n), "users": int(len(np.unique(user))), "movies": int(num_items)}
