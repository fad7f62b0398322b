"""Baselines: counting models (most popular, item co-occurrence) and the user-ID models (BPR-MF,
NeuMF) with their training loop."""
