"""Negative samplers (uniform, popularity, FAISS hard negatives, mixtures, curricula) and the FAISS
item index. Importing the package registers every sampler with build_negative_sampler."""
from retrieval.negatives import samplers  # noqa: F401  (registers popularity/hard/mixture/... samplers)
from retrieval.negatives.base import (NegativeSampler, UniformNegativeSampler, build_negative_sampler,
                                      register_sampler)

__all__ = ["NegativeSampler", "UniformNegativeSampler", "build_negative_sampler", "register_sampler"]
