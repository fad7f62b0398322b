"""The OneRec/TIGER generator: a T5 encoder-decoder over semantic-ID tokens (fresh weights, no
download), trained with teacher forcing and decoded by exact constrained beam search.

It implements the evaluator's Generator interface: `generate(HistoryBatch, num_items)` turns the
item-id histories into tokens itself (through the semantic-ID artifact) and returns real item ids.
"""
from __future__ import annotations

import gin
import torch
import torch.nn.functional as F
from transformers import T5Config, T5ForConditionalGeneration

from onerec.beam_search import BeamResult, constrained_beam_search
from onerec.cached_decoder import CachedT5Decoder
from onerec.prefix_trie import PrefixTrie
from onerec.sequences import HistoryTokenizer, TokenBatch, TrainingSamples
from onerec.vocab import BOS, EOS, PAD, SidVocab
from retrieval.data.batch import HistoryBatch
from retrieval.core.errors import RecError
from rqvae.artifact import SemanticIds

# T5 ties these to `shared.weight`; a checkpoint stores the shared tensor once (safetensors refuses
# aliased tensors) and loading re-creates the aliases.
_TIED = ("t5.encoder.embed_tokens.weight", "t5.decoder.embed_tokens.weight", "t5.lm_head.weight")


@gin.configurable
class OneRecModel(torch.nn.Module):
    """Encoder-decoder generator of semantic IDs.

    Sizes default to the TIGER setting on Amazon Beauty: d_model 128, 4+4 layers, 6 heads x 64,
    FFN 1024, dropout 0.1. beam_width: beams in `generate` (>= the largest K asked for).
    exclude_history: never return an item of the input history (docs/protocol.md §3, same rule as the evaluator).
    """

    def __init__(self, sids: SemanticIds, d_model: int = 128, num_layers: int = 4,
                 num_decoder_layers: int = 4, num_heads: int = 6, d_kv: int = 64, d_ff: int = 1024,
                 dropout: float = 0.1, feed_forward_proj: str = "relu",
                 relative_attention_num_buckets: int = 32, num_user_tokens: int = 2000,
                 beam_width: int = 50, exclude_history: bool = True):
        super().__init__()
        self.vocab = SidVocab.from_semantic_ids(sids, num_user_tokens)
        self.trie = PrefixTrie(self.vocab, sids.codes)
        self.tokenizer = HistoryTokenizer(self.vocab, self.vocab.item_tokens(sids))
        self.beam_width = int(beam_width)
        self.exclude_history = bool(exclude_history)
        self.num_items = sids.num_items
        self.config = T5Config(
            vocab_size=self.vocab.size, d_model=d_model, d_kv=d_kv, d_ff=d_ff, num_layers=num_layers,
            num_decoder_layers=num_decoder_layers, num_heads=num_heads, dropout_rate=dropout,
            feed_forward_proj=feed_forward_proj,
            relative_attention_num_buckets=relative_attention_num_buckets,
            pad_token_id=PAD, eos_token_id=EOS, decoder_start_token_id=BOS)
        self.t5 = T5ForConditionalGeneration(self.config)
        self._register_state_dict_hook(_drop_tied)
        self.register_load_state_dict_pre_hook(_restore_tied)

    def describe(self) -> dict:
        """What a checkpoint must agree on: model sizes, vocabulary layout, decoding rules."""
        keys = ("vocab_size", "d_model", "d_kv", "d_ff", "num_layers", "num_decoder_layers",
                "num_heads", "dropout_rate", "feed_forward_proj", "relative_attention_num_buckets")
        return {"t5": {k: getattr(self.config, k) for k in keys},
                "vocab": {"levels": self.vocab.levels, "codebook_size": self.vocab.codebook_size,
                          "num_disambiguation": self.vocab.num_disambiguation,
                          "num_user_tokens": self.vocab.num_user_tokens},
                "max_items": self.tokenizer.max_items, "use_user_token": self.tokenizer.use_user_token,
                "num_parameters": self.num_parameters()}

    def training_samples(self, split) -> TrainingSamples:
        """Every prefix of every training sequence (sliding windows), tokenized by this model."""
        return TrainingSamples(split, tokenizer=self.tokenizer)

    def num_parameters(self) -> int:
        return sum(p.numel() for p in self.parameters())

    def forward(self, batch: TokenBatch) -> torch.Tensor:
        """Teacher-forced mean cross-entropy of the target IDs' L+1 tokens (full vocabulary)."""
        labels = batch.labels                                                   # (B, L+1)
        dec_in = torch.cat([torch.full_like(labels[:, :1], BOS), labels[:, :-1]], 1)
        logits = self.t5(input_ids=batch.input_ids, attention_mask=batch.attention_mask,
                         decoder_input_ids=dec_in, use_cache=False).logits      # (B, L+1, V)
        return F.cross_entropy(logits.flatten(0, 1).float(), labels.flatten())

    def encode_histories(self, batch: HistoryBatch) -> tuple[torch.Tensor, torch.Tensor]:
        return self.tokenizer.encode(batch.users, batch.items)

    @torch.no_grad()
    def beam_search(self, batch: HistoryBatch, beam_width: int | None = None) -> BeamResult:
        """Top-`beam_width` distinct items per history with their sequence log-probabilities."""
        was_training = self.training
        self.eval()
        try:
            input_ids, mask = self.encode_histories(batch)
            decoder = CachedT5Decoder(self.t5, input_ids, mask, self.vocab.id_length)
            exclude = None
            if self.exclude_history:
                U = batch.items.shape[0]
                exclude = torch.zeros(U, self.num_items + 1, dtype=torch.bool, device=input_ids.device)
                exclude.scatter_(1, batch.items, True)
                exclude[:, 0] = False
            return constrained_beam_search(decoder, self.trie, beam_width or self.beam_width, exclude)
        finally:
            self.train(was_training)

    def generate(self, batch: HistoryBatch, num_items: int) -> torch.Tensor:
        """Generator interface: ranked item ids (B, num_items), best first, 0 in unused slots."""
        if num_items > self.beam_width:
            raise RecError(f"OneRecModel.beam_width={self.beam_width} is smaller than the {num_items} "
                           f"items asked for (the largest cut-off K); set OneRecModel.beam_width >= "
                           f"{num_items}")
        return self.beam_search(batch).items[:, :num_items]


def _drop_tied(module, state_dict, prefix, local_metadata):
    for k in _TIED:
        state_dict.pop(prefix + k, None)
    return state_dict


def _restore_tied(module, state_dict, prefix, local_metadata, strict, missing_keys,
                  unexpected_keys, error_msgs):
    shared = state_dict.get(prefix + "t5.shared.weight")
    if shared is not None:
        for k in _TIED:
            state_dict.setdefault(prefix + k, shared)

