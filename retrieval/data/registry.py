"""Dataset registry and the one entry point every script uses: `load_split()`.

A source is a gin-configurable class with `name`, `default_k_core`, `input_fingerprint()` (cheap:
file hashes + options) and `load() -> Interactions`. `load_split` filters, splits and caches the
result under a key made of the input fingerprint and the split options.
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Callable, Protocol

import gin

from retrieval.core import gin_values
from retrieval.data.types import Interactions, SplitData
from retrieval.core.errors import RecError

PROJECT_ROOT = Path(__file__).resolve().parents[2]


def data_root() -> Path:
    """Where the shared real datasets live: $SEMID_DATA_ROOT, else ../shared/data beside the repo."""
    env = os.environ.get("SEMID_DATA_ROOT")
    return Path(env) if env else PROJECT_ROOT.parent / "shared" / "data"


def cache_root() -> Path:
    """Where processed splits and embeddings are cached: $SEMID_CACHE_DIR, else ~/.cache/semid."""
    env = os.environ.get("SEMID_CACHE_DIR")
    return Path(env) if env else Path.home() / ".cache" / "semid"


class DatasetSource(Protocol):
    name: str
    default_k_core: int

    def input_fingerprint(self) -> str: ...

    def load(self) -> Interactions: ...


DATASETS: dict[str, Callable[[], DatasetSource]] = {}


def register(name: str):
    def deco(cls):
        DATASETS[name] = cls
        return cls
    return deco


def get_source(name: str) -> DatasetSource:
    if name not in DATASETS:
        raise RecError(f"unknown dataset {name!r}; choose one of: {', '.join(sorted(DATASETS))}")
    return DATASETS[name]()


@gin.configurable
def load_split(name: str = "synthetic", k_core: int | None = None, use_cache: bool = True,
               new_items: float = 0.0, new_items_seed: int = 0) -> SplitData:
    """Load dataset `name`, filter to its k-core (default per dataset), split leave-one-out.
    new_items > 0: the cold-start protocol (retrieval.data.cold_start) on that share of the items."""
    from retrieval.data import cache
    from retrieval.data.split import leave_one_out
    from retrieval.core.io import fingerprint

    source = get_source(name)
    k = source.default_k_core if k_core is None else gin_values.integer("load_split.k_core", k_core,
                                                                        minimum=0)
    key = fingerprint("split-v1", name, source.input_fingerprint(), k)
    split = cache.load_cached_split(key) if use_cache else None
    if split is None:
        split = leave_one_out(source.load(), name=name, k=k, fingerprint=key)
        if use_cache:
            cache.save_cached_split(split)
    if new_items:
        from retrieval.data.cold_start import hold_out_new_items
        split = hold_out_new_items(split, new_items, gin_values.integer("load_split.new_items_seed",
                                                                        new_items_seed, minimum=0))
    return split
