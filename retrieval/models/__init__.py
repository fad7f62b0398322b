"""Scorer models: SASRec / TiSASRec with plain or mHC residuals, GRU4Rec, BERT4Rec; user-ID
models (BPR-MF, NeuMF) live in retrieval.models.collaborative."""
from retrieval.models.sasrec import VARIANTS, SequentialScorer
from retrieval.models.scorers import SCORERS, make_scorer

__all__ = ["SCORERS", "VARIANTS", "SequentialScorer", "make_scorer"]
