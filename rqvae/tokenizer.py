"""One interface for every semantic-ID tokenizer, and the gin switch that picks one by name.

A tokenizer has `name`, `levels`, `codebook_size`, and
    fit(embeddings (N, d) float) -> codes (N, L) int64 in [0, K)
after which `.reconstruction` (N, d) is its reconstruction of the embeddings, `.history` its
training log (list of dicts) and `.weights()` a dict of tensors to save (safetensors).
"""
from __future__ import annotations

from typing import Protocol

import gin
import numpy as np

from retrieval.core import gin_values
from retrieval.core.errors import RecError
from rqvae.product_quantizer import OPQTokenizer
from rqvae.residual_kmeans import BalancedRQKMeans, RQKMeans
from rqvae.rqvae_model import RQVAETokenizer


class Tokenizer(Protocol):
    name: str
    levels: int
    codebook_size: int
    reconstruction: np.ndarray | None
    history: list

    def fit(self, x: np.ndarray) -> np.ndarray: ...

    def encode(self, x: np.ndarray) -> np.ndarray:
        """Codes of unseen embeddings with the fitted tokenizer (cold-start items)."""
        ...

    def weights(self) -> dict: ...


TOKENIZERS = {"rqvae": RQVAETokenizer, "rqkmeans": RQKMeans, "balanced_rqkmeans": BalancedRQKMeans,
              "opq": OPQTokenizer}


@gin.configurable
def make_tokenizer(name: str = "rqvae", levels: int = 3, codebook_size: int = 256,
                   seed: int = 0) -> Tokenizer:
    """The tokenizer `name` with L = `levels` x K = `codebook_size` codes; its own options are
    bound on its class in gin (e.g. RQVAETokenizer.steps)."""
    if name not in TOKENIZERS:
        raise RecError(f"make_tokenizer.name = {name!r} is unknown; choose one of: {', '.join(TOKENIZERS)}")
    levels = gin_values.integer("make_tokenizer.levels", levels)
    codebook_size = gin_values.integer("make_tokenizer.codebook_size", codebook_size, minimum=2)
    seed = gin_values.integer("make_tokenizer.seed", seed, minimum=0)
    return TOKENIZERS[name](levels=levels, codebook_size=codebook_size, seed=seed)


def reconstruction_metrics(x: np.ndarray, recon: np.ndarray) -> dict:
    """mse: mean squared error per dimension; relative: squared error / variance around the mean
    (0 = perfect, 1 = no better than the mean embedding), comparable across tokenizers."""
    x = np.asarray(x, dtype=np.float64)
    err = ((x - recon) ** 2).sum()
    var = ((x - x.mean(0)) ** 2).sum()
    return {"reconstruction_mse": float(err / x.size),
            "reconstruction_relative": float(err / var) if var > 0 else 0.0}
