"""Amazon sources in the S3Rec format: `amazon` (any category, paths by gin) and `amazon-beauty`.

Sequences file: one line per user, `user item item ...`, already in time order, no timestamps, so
an event's timestamp is its position in the user's sequence and `has_time` is False.
Items file (CSV): item_id,asin,title,attributes, with attributes `|`-joined. S3Rec builds the
attribute list as [brand (if it has >= 5 items)] + the category path below the root "Beauty"; so
the first attribute is the brand unless it is a top-level category. We tell them apart from the
file itself: a top-level category also occurs as the *second* attribute of some item (after a
brand), a brand never does (a brand is only ever first). On Beauty this finds 6 top-level
categories (Skin Care, Hair Care, Makeup, ...) and a brand first for 7,494 items; the brand
"Unknown" (38 items) is Amazon's placeholder and is dropped, leaving 7,456 items with one of 435
brands. Repeated category names are kept once. HTML entities are decoded ("L&#39;Oreal" -> "L'Oreal").
Text (docs/protocol.md §2): "{title}; brand: {brand}; categories: {c1, c2}".
"""
from __future__ import annotations

import html
from pathlib import Path

import gin
import numpy as np
import pandas as pd

from retrieval.data import readers
from retrieval.data.registry import data_root, register
from retrieval.data.remap import (build_interactions, extend_catalogue, map_items,
                                  position_in_group)
from retrieval.data.types import Interactions, ItemCatalogue
from retrieval.core.errors import RecError
from retrieval.core.io import file_fingerprint, fingerprint

_WS = np.array([ord(c) for c in " \t\r\n\f\v"], dtype=np.uint8)


def read_sequences(path: Path) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Parse `user item item ...` lines into (user_raw, item_raw, position) event arrays.

    Vectorised over bytes: token starts are found with numpy and each token's line number is the
    count of newlines before it, so no Python loop runs per line or per token.
    """
    data = readers.read_bytes(path)
    readers.check_not_empty(path, data)
    buf = np.frombuffer(data, dtype=np.uint8)
    ws = np.isin(buf, _WS)
    starts = np.flatnonzero(~ws & np.r_[True, ws[:-1]])           # first byte of each token
    line_no = np.searchsorted(np.flatnonzero(buf == ord("\n")), starts)   # line of each token
    tokens = np.array(data.split())
    try:
        values = tokens.astype(np.int64)
    except (ValueError, OverflowError):
        bad = np.flatnonzero(~np.char.isdigit(tokens))
        i = int(bad[0]) if len(bad) else 0
        raise RecError(f"{path} line {line_no[i] + 1}: bad id "
                       f"{tokens[i].decode('utf-8', 'replace')!r}; expected `user item item ...` "
                       "with integer ids separated by spaces") from None
    first = np.r_[True, line_no[1:] != line_no[:-1]]               # token opens its line: the user
    line_user = values[first]
    user_of_token = line_user[np.cumsum(first) - 1]
    is_item = ~first
    user_raw, item_raw = user_of_token[is_item], values[is_item]
    if len(item_raw) == 0:
        raise RecError(f"{path}: no items found; expected `user item item ...` per line")
    # Position within the user's whole history (a user may span several lines, in file order).
    return user_raw, item_raw, position_in_group(user_raw)


def _split_brand(attrs: pd.Series) -> tuple[np.ndarray, np.ndarray]:
    """(brand, categories) per item from `|`-joined S3Rec attribute lists (see module doc)."""
    lists = attrs.str.split("|")
    first = lists.str[0].fillna("")
    second = lists.str[1].dropna()
    top_categories = set(second.unique())
    is_brand = ~first.isin(top_categories) & (first != "")
    brand = np.where(is_brand, first, "")
    rest = pd.Series(np.where(is_brand, lists.str[1:].str.join("|"), attrs)).fillna("")
    # Several category paths can repeat a name; keep its first occurrence (one pass per item).
    cats = np.array(["|".join(dict.fromkeys(c for c in r.split("|") if c)) for r in rest],
                    dtype=object)
    brand = np.where(brand == "Unknown", "", brand)
    return brand.astype(object), cats


def read_items(path: Path) -> tuple[np.ndarray, ItemCatalogue]:
    """Catalogue from item_id,asin,title,attributes; rows in item_id order as listed."""
    readers.check_header(path, ["item_id", "title"])
    try:
        df = pd.read_csv(path, dtype=str, keep_default_na=False)
    except (ValueError, pd.errors.ParserError) as e:
        raise RecError(f"{path}: cannot parse ({' '.join(str(e).split())}); expected "
                       "item_id,asin,title,attributes") from None
    ids = pd.to_numeric(df["item_id"], errors="coerce")
    if ids.isna().any():
        bad = df["item_id"][ids.isna()].iloc[0]
        raise RecError(f"{path}: non-numeric item_id {bad!r}; item ids must be integers")
    unescape = np.vectorize(html.unescape, otypes=[object])        # "L&#39;Oreal" -> "L'Oreal"
    titles = unescape(df["title"].to_numpy(dtype=object)) if len(df) else np.zeros(0, object)
    attrs = df["attributes"] if "attributes" in df else pd.Series([""] * len(df))
    attrs = pd.Series(unescape(attrs.to_numpy(dtype=object)) if len(df) else [], dtype=object)
    brand, cats = _split_brand(attrs.astype(str))
    pad = lambda a: np.concatenate([[""], a]).astype(object)        # noqa: E731  (row 0 = padding)
    fields = {"brand": pad(brand), "categories": pad(cats)}
    if "asin" in df:
        fields["asin"] = pad(df["asin"].to_numpy(dtype=object))
    ids = ids.to_numpy(dtype=np.int64)
    cat = ItemCatalogue(raw_ids=pad(ids.astype(str)), titles=pad(titles), fields=fields,
                        template="amazon")
    return ids, cat


def _empty_catalogue() -> ItemCatalogue:
    e = np.array([""], dtype=object)
    return ItemCatalogue(raw_ids=e, titles=e.copy(), fields={"brand": e.copy(),
                         "categories": e.copy()}, template="amazon")


class _S3RecSource:
    default_k_core = 5          # the S3Rec files are already 5-core: filtering again is a no-op

    def __init__(self, sequences_path, items_path):
        self.sequences_path = sequences_path
        self.items_path = items_path

    def paths(self) -> tuple[Path, Path | None]:
        raise NotImplementedError

    def require(self) -> tuple[Path, Path | None]:
        seq, items = self.paths()
        for p in [seq] + ([items] if items is not None else []):
            if not p.is_file():
                raise RecError(f"dataset {self.name!r}: {p.name} not found at {p}; put the S3Rec "
                               f"files there or set {type(self).__name__}.sequences_path / "
                               f"items_path (or SEMID_DATA_ROOT)")
        return seq, items

    def input_fingerprint(self) -> str:
        seq, items = self.require()
        return fingerprint("s3rec-v1", file_fingerprint(seq),
                           file_fingerprint(items) if items is not None else None)

    def load(self) -> Interactions:
        seq, items = self.require()
        user_raw, item_raw, pos = read_sequences(seq)
        if items is not None:
            ids, cat = read_items(items)
        else:
            ids, cat = np.zeros(0, dtype=np.int64), _empty_catalogue()
        item, extra = map_items(item_raw, ids)
        return build_interactions({"user": user_raw, "item": item, "timestamp": pos},
                                  extend_catalogue(cat, extra), has_time=False)


@register("amazon")
@gin.configurable
class AmazonSource(_S3RecSource):
    """Any Amazon category in S3Rec format; set `sequences_path` (and `items_path`, optional)."""

    name = "amazon"

    def __init__(self, sequences_path: str | None = None, items_path: str | None = None):
        super().__init__(sequences_path, items_path)

    def paths(self):
        if not self.sequences_path:
            raise RecError("dataset 'amazon' needs its files: bind AmazonSource.sequences_path "
                           "(`user item item ...` lines) and AmazonSource.items_path "
                           "(item_id,asin,title,attributes CSV) in a gin file or with --gin_param")
        items = Path(self.items_path).expanduser() if self.items_path else None
        return Path(self.sequences_path).expanduser(), items


@register("amazon-beauty")
@gin.configurable
class AmazonBeautySource(_S3RecSource):
    """Amazon Beauty 2014 (S3Rec / TIGER split): 22,363 users, 12,101 items, 198,502 events.

    Paths default to data_root()/amazon-beauty/{Beauty.txt, beauty_items.csv}.
    """

    name = "amazon-beauty"

    def __init__(self, sequences_path: str | None = None, items_path: str | None = None):
        super().__init__(sequences_path, items_path)

    def paths(self):
        root = data_root() / "amazon-beauty"
        seq = Path(self.sequences_path).expanduser() if self.sequences_path else root / "Beauty.txt"
        items = Path(self.items_path).expanduser() if self.items_path else root / "beauty_items.csv"
        return seq, items
