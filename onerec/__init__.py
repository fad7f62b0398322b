"""Stage 2: generators of semantic IDs — the item-level causal generator (default) and the
TIGER-style T5 encoder-decoder — with exact constrained beam search over the prefix trie."""
