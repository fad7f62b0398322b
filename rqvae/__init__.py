"""Stage 1: item content embeddings and semantic-ID tokenizers (RQ-VAE, RQ-KMeans, balanced)."""
