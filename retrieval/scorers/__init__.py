"""Scorer models: SASRec / TiSASRec with plain or mHC residuals, GRU4Rec, BERT4Rec; user-ID
models (BPR-MF, NeuMF) live in retrieval.baselines.collaborative."""
from retrieval.scorers.sasrec import VARIANTS, SequentialScorer
from retrieval.scorers.registry import SCORERS, make_scorer

__all__ = ["SCORERS", "VARIANTS", "SequentialScorer", "make_scorer"]
