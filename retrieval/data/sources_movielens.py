"""MovieLens sources: `ml-25m` and `ml-latest-small` (CSV), `ml-1m` (`::`), `ml-100k` (tab / `|`).

All produce the same Interactions: users 0..U-1 in raw-id order, items 1..N in movie-file order
(rated movies the movie file lacks are appended without text), rows sorted by (user, timestamp)
with ties in file order. Every rating is an interaction unless `rating_threshold` is set (keep
ratings >= threshold). Item text uses the "movielens" template: title, genres, top tags.
"""
from __future__ import annotations

import csv
import io
from pathlib import Path

import gin
import numpy as np
import pandas as pd

from retrieval.data import readers
from retrieval.data.registry import data_root, register
from retrieval.data.remap import build_interactions, extend_catalogue, map_items
from retrieval.data.types import Interactions, ItemCatalogue
from retrieval.core.errors import RecError
from retrieval.core.io import file_fingerprint, fingerprint

ML100K_GENRES = ["unknown", "Action", "Adventure", "Animation", "Children's", "Comedy", "Crime",
                 "Documentary", "Drama", "Fantasy", "Film-Noir", "Horror", "Musical", "Mystery",
                 "Romance", "Sci-Fi", "Thriller", "War", "Western"]


def _obj(values) -> np.ndarray:
    return np.asarray(values, dtype=object)


def movie_catalogue(movie_ids: np.ndarray, titles, genres, tags: dict | None = None) -> ItemCatalogue:
    """Catalogue rows 1..N in the given order (row 0 = padding)."""
    fields = {"genres": _obj([""] + list(genres))}
    if tags is not None:
        fields["tags"] = _obj([""] + [tags.get(int(m), "") for m in movie_ids])
    return ItemCatalogue(raw_ids=_obj([""] + [str(int(m)) for m in movie_ids]),
                         titles=_obj([""] + list(titles)), fields=fields, template="movielens")


def top_tags(path: Path, k: int) -> dict[int, str]:
    """{movieId: "t1|t2|..."}: the k most frequent tags per movie (lower-cased; ties by name)."""
    readers.check_header(path, ["movieId", "tag"])
    try:
        df = pd.read_csv(path, usecols=["movieId", "tag"], dtype={"movieId": "int64", "tag": str},
                         keep_default_na=False)
    except (ValueError, pd.errors.ParserError) as e:
        raise RecError(f"{path}: cannot parse ({' '.join(str(e).split())}); expected "
                       "userId,movieId,tag,timestamp") from None
    tag = df["tag"].str.strip().str.lower().str.replace("|", "/", regex=False)
    df = pd.DataFrame({"movieId": df["movieId"], "tag": tag})
    df = df[df["tag"] != ""]
    cnt = df.groupby(["movieId", "tag"]).size().reset_index(name="n")
    cnt = cnt.sort_values(["movieId", "n", "tag"], ascending=[True, False, True], kind="stable")
    top = cnt.groupby("movieId", sort=True).head(k)
    return top.groupby("movieId")["tag"].agg("|".join).to_dict()


def _finish(r: dict, threshold, cat_ids, cat: ItemCatalogue) -> Interactions:
    """Ratings columns (userId, movieId, timestamp[, rating]) -> Interactions; consumes `r`."""
    rating = r.pop("rating", None)
    if threshold is not None:
        keep = rating >= float(threshold)
        for c in list(r):
            r[c] = r[c][keep]
    item, extra = map_items(r.pop("movieId"), cat_ids)
    cols = {"user": r.pop("userId"), "item": item, "timestamp": r.pop("timestamp")}
    del item
    return build_interactions(cols, extend_catalogue(cat, extra), has_time=True)


class _MovieLensSource:
    """Shared plumbing: the folder (gin `path` or data_root()/folder), file checks, fingerprint."""

    name = ""
    folder = ""
    default_k_core = 5

    def __init__(self, path: str | None, rating_threshold: float | None):
        self.path = path
        self.rating_threshold = rating_threshold

    @property
    def root(self) -> Path:
        return Path(self.path).expanduser() if self.path else data_root() / self.folder

    def files(self) -> list[str]:
        raise NotImplementedError

    def options(self) -> dict:
        return {"rating_threshold": self.rating_threshold}

    def require(self) -> None:
        readers.require_files(self.root, self.files(), self.name, type(self).__name__)

    def input_fingerprint(self) -> str:
        self.require()
        hashes = {f: file_fingerprint(self.root / f) for f in self.files()}
        return fingerprint("movielens-v1", self.name, hashes, self.options())


class _MovieLensCSV(_MovieLensSource):
    """ratings.csv (userId,movieId,rating,timestamp) + movies.csv (movieId,title,genres)
    (+ tags.csv when present and num_tags > 0)."""

    def __init__(self, path, rating_threshold, num_tags):
        super().__init__(path, rating_threshold)
        self.num_tags = int(num_tags)

    def use_tags(self) -> bool:
        return self.num_tags > 0 and (self.root / "tags.csv").is_file()

    def files(self) -> list[str]:
        return ["ratings.csv", "movies.csv"] + (["tags.csv"] if self.use_tags() else [])

    def options(self) -> dict:
        return {**super().options(), "num_tags": self.num_tags if self.use_tags() else 0}

    def load(self) -> Interactions:
        self.require()
        movies_path = self.root / "movies.csv"
        readers.check_header(movies_path, ["movieId", "title", "genres"])
        try:
            movies = pd.read_csv(movies_path, dtype={"movieId": "int64", "title": str, "genres": str},
                                 keep_default_na=False, usecols=["movieId", "title", "genres"])
        except (ValueError, pd.errors.ParserError) as e:
            raise RecError(f"{movies_path}: cannot parse ({' '.join(str(e).split())}); expected "
                           "movieId,title,genres with integer movieId") from None
        tags = top_tags(self.root / "tags.csv", self.num_tags) if self.use_tags() else None
        ids = movies["movieId"].to_numpy()
        cat = movie_catalogue(ids, movies["title"], movies["genres"], tags)

        cols = {"userId": "int", "movieId": "int", "timestamp": "int"}
        if self.rating_threshold is not None:
            cols["rating"] = "float"
        r = readers.read_numeric(self.root / "ratings.csv", cols, where=str(self.root / "ratings.csv"))
        return _finish(r, self.rating_threshold, ids, cat)


@register("ml-25m")
@gin.configurable
class MovieLens25MSource(_MovieLensCSV):
    """GroupLens ML-25M: 25,000,095 ratings, 162,541 users, 62,423 movies."""

    name = "ml-25m"
    folder = "movielens-25m"

    def __init__(self, path: str | None = None, rating_threshold: float | None = None,
                 num_tags: int = 5):
        super().__init__(path, rating_threshold, num_tags)


@register("ml-latest-small")
@gin.configurable
class MovieLensLatestSmallSource(_MovieLensCSV):
    """GroupLens ml-latest-small (2018-09): 100,836 ratings, 610 users, 9,724 rated movies."""

    name = "ml-latest-small"
    folder = "movielens-latest-small"

    def __init__(self, path: str | None = None, rating_threshold: float | None = None,
                 num_tags: int = 5):
        super().__init__(path, rating_threshold, num_tags)


def _read_double_colon(path: Path, names: list[str], encoding: str) -> bytes:
    """The file's bytes with the `::` separator turned into a tab (single-char for the readers)."""
    data = readers.read_bytes(path)
    readers.check_not_empty(path, data)
    if b"::" not in data[:4096]:
        raise RecError(f"{path}: expected `::`-separated lines {'::'.join(names)}, found "
                       f"{data[:60].decode(encoding, errors='replace').splitlines()[0]!r}; "
                       "is this the right file?")
    return data.replace(b"::", b"\t")


@register("ml-1m")
@gin.configurable
class MovieLens1MSource(_MovieLensSource):
    """GroupLens ML-1M: ratings.dat (or ratings.dat.gz) + movies.dat, `::`-separated, latin-1.

    `ratings_file` picks another ratings file in the folder (e.g. the partial shared copy
    'ratings_users0001-2999.dat.gz'); by default ratings.dat, else ratings.dat.gz.
    """

    name = "ml-1m"
    folder = "movielens-1m"

    def __init__(self, path: str | None = None, rating_threshold: float | None = None,
                 ratings_file: str | None = None):
        super().__init__(path, rating_threshold)
        self.ratings_file = ratings_file

    def _ratings_name(self) -> str:
        if self.ratings_file:
            return self.ratings_file
        for name in ("ratings.dat", "ratings.dat.gz"):
            if (self.root / name).is_file():
                return name
        return "ratings.dat"  # absent: require() reports it (and mentions the .gz alternative)

    def files(self) -> list[str]:
        return [self._ratings_name(), "movies.dat"]

    def require(self) -> None:
        if not self.ratings_file and not any((self.root / n).is_file()
                                             for n in ("ratings.dat", "ratings.dat.gz")):
            partial = sorted(p.name for p in self.root.glob("ratings*.dat*")) if self.root.is_dir() else []
            note = (f" (found only {', '.join(partial)}: select it with "
                    f"MovieLens1MSource.ratings_file = '{partial[0]}')") if partial else ""
            raise RecError(f"dataset 'ml-1m': neither ratings.dat nor ratings.dat.gz found in "
                           f"{self.root}{note}; put ml-1m's ratings.dat there (set SEMID_DATA_ROOT "
                           f"or MovieLens1MSource.path to another folder) {readers.download_hint('ml-1m')}")
        super().require()

    def load(self) -> Interactions:
        self.require()
        movies_path = self.root / "movies.dat"
        data = _read_double_colon(movies_path, ["MovieID", "Title", "Genres"], "latin-1")
        try:
            movies = pd.read_csv(io.BytesIO(data), sep="\t", header=None, encoding="latin-1",
                                 names=["movieId", "title", "genres"], quoting=csv.QUOTE_NONE,
                                 dtype={"movieId": "int64", "title": str, "genres": str},
                                 keep_default_na=False)
        except (ValueError, pd.errors.ParserError) as e:
            raise RecError(f"{movies_path}: cannot parse ({' '.join(str(e).split())}); expected "
                           "MovieID::Title::Genres with an integer MovieID") from None
        ids = movies["movieId"].to_numpy()
        cat = movie_catalogue(ids, movies["title"], movies["genres"])

        ratings_path = self.root / self._ratings_name()
        names = ["userId", "movieId", "rating", "timestamp"]
        raw = _read_double_colon(ratings_path, ["UserID", "MovieID", "Rating", "Timestamp"], "latin-1")
        r = readers.read_numeric(raw, {"userId": "int", "movieId": "int", "rating": "float",
                                       "timestamp": "int"}, where=str(ratings_path), names=names,
                                 delimiter="\t")
        return _finish(r, self.rating_threshold, ids, cat)


@register("ml-100k")
@gin.configurable
class MovieLens100KSource(_MovieLensSource):
    """GroupLens ML-100K: u.data (user item rating timestamp, tab) + u.item (`|`, latin-1,
    id|title|release|video release|url|19 genre flags)."""

    name = "ml-100k"
    folder = "movielens-100k"

    def __init__(self, path: str | None = None, rating_threshold: float | None = None):
        super().__init__(path, rating_threshold)

    def files(self) -> list[str]:
        return ["u.data", "u.item"]

    def load(self) -> Interactions:
        self.require()
        item_path = self.root / "u.item"
        readers.check_not_empty(item_path)
        try:
            items = pd.read_csv(item_path, sep="|", header=None, encoding="latin-1",
                                quoting=csv.QUOTE_NONE, dtype=str, keep_default_na=False)
        except (ValueError, pd.errors.ParserError) as e:
            raise RecError(f"{item_path}: cannot parse ({' '.join(str(e).split())}); expected "
                           "24 '|'-separated fields per line") from None
        if items.shape[1] != 5 + len(ML100K_GENRES):
            raise RecError(f"{item_path}: expected {5 + len(ML100K_GENRES)} '|'-separated fields "
                           f"(id|title|release|video|url|19 genre flags), found {items.shape[1]}")
        ids = pd.to_numeric(items[0], errors="coerce")
        if ids.isna().any():
            bad = items[0][ids.isna()].iloc[0]
            raise RecError(f"{item_path}: non-numeric movie id {bad!r}; the first field must be an integer")
        flags = items.iloc[:, 5:].to_numpy() == "1"                   # (N, 19)
        names = np.array(ML100K_GENRES[1:], dtype=object)           # "unknown" is no genre
        genres = ["|".join(names[row]) for row in flags[:, 1:]]
        ids = ids.to_numpy(dtype=np.int64)
        cat = movie_catalogue(ids, items[1], genres)

        data_path = self.root / "u.data"
        readers.check_not_empty(data_path)
        r = readers.read_numeric(data_path, {"userId": "int", "movieId": "int", "rating": "float",
                                             "timestamp": "int"}, where=str(data_path),
                                 names=["userId", "movieId", "rating", "timestamp"], delimiter="\t")
        return _finish(r, self.rating_threshold, ids, cat)
