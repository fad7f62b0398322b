"""Stage 2: generators of semantic IDs — the item-level parallel generator over long OPQ IDs
(default), the item-level causal generator with a level-by-level head and constrained beam search
over the prefix trie, and the TIGER-style T5 encoder-decoder."""
