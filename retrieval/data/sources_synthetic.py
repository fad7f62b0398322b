"""The `synthetic` dataset source (the embedded default)."""
from __future__ import annotations

import gin
import numpy as np

from retrieval.core import gin_values
from retrieval.data import synthetic
from retrieval.data.registry import register
from retrieval.data.types import Interactions, ItemCatalogue
from retrieval.core.io import fingerprint


@register("synthetic")
@gin.configurable
class SyntheticSource:
    """Generated data; sizes are parameters (see retrieval.data.synthetic.generate)."""

    name = "synthetic"
    default_k_core = 5

    def __init__(self, num_users: int = 2000, num_items: int = 1000, mean_length: float = 20.0,
                 num_topics: int = 20, zipf_exponent: float = 1.0, p_sequential: float = 0.5,
                 seed: int = 0):
        num_users, num_items, num_topics = (gin_values.integer(f"SyntheticSource.{k}", v) for k, v in (
            ("num_users", num_users), ("num_items", num_items), ("num_topics", num_topics)))
        mean_length = gin_values.positive_number("SyntheticSource.mean_length", mean_length)
        self.params = dict(num_users=num_users, num_items=num_items, mean_length=mean_length,
                           num_topics=num_topics, zipf_exponent=zipf_exponent,
                           p_sequential=p_sequential, seed=seed)

    def input_fingerprint(self) -> str:
        return fingerprint("synthetic-v2", self.params)

    def load(self) -> Interactions:
        d = synthetic.generate(**self.params)
        n = self.params["num_items"]
        cat = ItemCatalogue(
            raw_ids=np.array([""] + [str(i) for i in range(1, n + 1)], dtype=object),
            titles=np.concatenate([[""], d["title"]]).astype(object),
            fields={"genres": np.concatenate([[""], d["genres"]]).astype(object)},
            template="movielens")
        U = self.params["num_users"]
        return Interactions(user=d["user"], item=d["item"], timestamp=d["timestamp"],
                            user_raw_ids=np.array([str(u + 1) for u in range(U)], dtype=object),
                            catalogue=cat, has_time=True)
