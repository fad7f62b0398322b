"""Scorer models: SASRec / TiSASRec with plain or mHC residuals."""
from retrieval.models.sasrec import VARIANTS, SequentialScorer

__all__ = ["VARIANTS", "SequentialScorer"]
