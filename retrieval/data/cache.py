"""On-disk cache of processed splits: one .npz of arrays (no pickle) + one JSON of strings."""
from __future__ import annotations

import json

import numpy as np

from retrieval.data.registry import cache_root
from retrieval.data.types import ItemCatalogue, SplitData
from retrieval.core.io import atomic_write, write_json

_ARRAYS = ["train_offsets", "train_items", "train_times", "valid_item", "valid_time",
           "test_item", "test_time"]


def _paths(key: str):
    d = cache_root() / "splits"
    return d / f"{key}.npz", d / f"{key}.json"


def save_cached_split(split: SplitData) -> None:
    npz, meta = _paths(split.fingerprint)
    arrays = {k: getattr(split, k) for k in _ARRAYS}

    def _w(tmp):
        with open(tmp, "wb") as f:
            np.savez(f, **arrays)
    atomic_write(npz, _w)
    cat = split.catalogue
    write_json(meta, {
        "name": split.name, "has_time": split.has_time, "fingerprint": split.fingerprint,
        "user_raw_ids": [str(x) for x in split.user_raw_ids],
        "catalogue": {"template": cat.template, "raw_ids": [str(x) for x in cat.raw_ids],
                      "titles": [str(x) for x in cat.titles],
                      "fields": {k: [str(x) for x in v] for k, v in cat.fields.items()}},
    })


def load_cached_split(key: str) -> SplitData | None:
    npz, meta = _paths(key)
    if not (npz.is_file() and meta.is_file()):
        return None
    try:
        with np.load(npz, allow_pickle=False) as z:
            arrays = {k: z[k] for k in _ARRAYS}
        m = json.loads(meta.read_text(encoding="utf-8"))
    except (OSError, ValueError, KeyError):
        return None  # damaged cache entry: rebuild it
    c = m["catalogue"]
    obj = lambda xs: np.array(xs, dtype=object)  # noqa: E731
    cat = ItemCatalogue(obj(c["raw_ids"]), obj(c["titles"]),
                        {k: obj(v) for k, v in c["fields"].items()}, c["template"])
    return SplitData(name=m["name"], user_raw_ids=obj(m["user_raw_ids"]), catalogue=cat,
                     has_time=m["has_time"], fingerprint=m["fingerprint"], **arrays)
