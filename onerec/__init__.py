"""Stage 2: the OneRec/TIGER-style encoder-decoder that generates semantic IDs."""
