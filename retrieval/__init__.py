"""Shared ground for both paths: datasets, splits, batches, evaluation, training utilities."""
from retrieval.core.errors import RecError

__all__ = ["RecError"]
