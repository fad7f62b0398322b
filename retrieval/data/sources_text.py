"""The generic `text` source: `user item [timestamp]` per line, whitespace-separated, integer ids.

This is the input format of the SASRec/TiSASRec family. Without a timestamp column, events keep
their file order (timestamp = position in the user's history, `has_time` False). Items have no
text; the catalogue lists the item ids in increasing order (template "plain").
"""
from __future__ import annotations

from pathlib import Path

import gin
import numpy as np
import pandas as pd

from retrieval.data import readers
from retrieval.data.registry import register
from retrieval.data.remap import build_interactions, map_items, position_in_group
from retrieval.data.types import Interactions, ItemCatalogue
from retrieval.core.errors import RecError
from retrieval.core.io import file_fingerprint, fingerprint


def _num_columns(path: Path) -> int:
    with open(path, "rb") as f:
        for line in f:
            if line.strip():
                return len(line.split())
    return 0


@register("text")
@gin.configurable
class TextSource:
    """Set `path` to the file (e.g. `TextSource.path = 'data/Steam.txt'`)."""

    name = "text"
    default_k_core = 5

    def __init__(self, path: str | None = None):
        self.path = path

    def file(self) -> Path:
        if not self.path:
            raise RecError("dataset 'text' needs a file: bind TextSource.path to a file of "
                           "`user item [timestamp]` lines (gin file or --gin_param)")
        p = Path(self.path).expanduser()
        if not p.is_file():
            raise RecError(f"dataset 'text': {p} not found; set TextSource.path to an existing "
                           "file of `user item [timestamp]` lines")
        return p

    def input_fingerprint(self) -> str:
        return fingerprint("text-v1", file_fingerprint(self.file()))

    def load(self) -> Interactions:
        path = self.file()
        readers.check_not_empty(path)
        ncol = _num_columns(path)
        if ncol not in (2, 3):
            raise RecError(f"{path}: expected 2 or 3 whitespace-separated columns "
                           f"(user item [timestamp]), found {ncol} on the first line")
        names = ["user", "item", "timestamp"][:ncol]
        try:
            df = pd.read_csv(path, sep=r"\s+", header=None, names=names, dtype=np.int64,
                             engine="c")
        except (ValueError, TypeError, pd.errors.ParserError) as e:
            bad = _first_bad_line(path, ncol)
            where = (f"line {bad[0]} ({bad[1][:60]!r})" if bad else
                     f"cannot parse ({' '.join(str(e).split())})")
            raise RecError(f"{path}: {where}; every line must hold {ncol} integers: "
                           f"{' '.join(names)}") from None
        if len(df) == 0:
            raise RecError(f"{path}: no data rows; expected `user item [timestamp]` lines")
        user_raw, item_raw = df["user"].to_numpy(), df["item"].to_numpy()
        has_time = ncol == 3
        ts = df["timestamp"].to_numpy() if has_time else position_in_group(user_raw)
        ids = np.unique(item_raw)
        item, _ = map_items(item_raw, ids)
        raw = np.concatenate([[""], ids.astype(str)]).astype(object)
        cat = ItemCatalogue(raw_ids=raw, titles=np.full(len(raw), "", dtype=object), template="plain")
        return build_interactions({"user": user_raw, "item": item, "timestamp": ts}, cat,
                                  has_time=has_time)


def _first_bad_line(path: Path, ncol: int) -> tuple[int, str] | None:
    """(line number, text) of the first non-blank line that is not `ncol` integers; only read
    after the fast parser failed, to say where."""
    with open(path, encoding="utf-8", errors="replace") as f:
        for number, line in enumerate(f, 1):
            fields = line.split()
            if fields and (len(fields) != ncol or not all(_is_int(x) for x in fields)):
                return number, line.rstrip("\n")
    return None


def _is_int(text: str) -> bool:
    try:
        int(text)
        return True
    except ValueError:
        return False
