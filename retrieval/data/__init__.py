"""Datasets: sources (one per format), the split, the cache. Import registers every source."""
from retrieval.data import sources_synthetic  # noqa: F401  (registers "synthetic")
from retrieval.data import sources_amazon, sources_movielens, sources_text  # noqa: F401  (register the file sources)
from retrieval.data.registry import DATASETS, data_root, load_split
from retrieval.data.types import Interactions, ItemCatalogue, SplitData

__all__ = ["DATASETS", "Interactions", "ItemCatalogue", "SplitData", "data_root", "load_split"]
