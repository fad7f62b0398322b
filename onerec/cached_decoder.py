"""One T5 decoding step at a time over many beams, with a key/value cache (for beam search).

It runs the weights of a `transformers` T5ForConditionalGeneration with the same arithmetic as its
decoder, but lays the caches out for beams:

- self-attention keys/values: (U*nb, heads, t, d_kv) per layer, reordered with one index_select
  when beams are re-ranked (t <= L+1 is tiny);
- cross-attention keys/values: computed once per *user* (U, heads, T, d_kv) and shared by all the
  user's beams, whose queries are treated as nb query positions of that user. The beams never
  copy the encoder states (the `transformers` cache copies them per beam and on every reorder).

Rows are user-major: row u*nb + b is beam b of user u. `tests/onerec/test_beam_search.py` checks the
log-probabilities against `transformers` teacher forcing and `generate`.
"""
from __future__ import annotations

import torch
from transformers import T5ForConditionalGeneration

from onerec.vocab import BOS


class CachedT5Decoder:
    """Stateful decoder for one batch of U users; `step` then `reorder`, up to `max_steps` steps."""

    def __init__(self, t5: T5ForConditionalGeneration, input_ids: torch.Tensor,
                 attention_mask: torch.Tensor, max_steps: int):
        cfg = t5.config
        self.t5 = t5
        self.heads, self.d_kv = cfg.num_heads, cfg.d_kv
        self.max_steps = max_steps
        enc = t5.encoder(input_ids=input_ids, attention_mask=attention_mask).last_hidden_state  # (U, T, d)
        U, T, _ = enc.shape
        self.num_users = U
        # additive mask over encoder positions, (U, 1, 1, T)
        neg = torch.finfo(enc.dtype).min
        self.enc_bias = torch.where(attention_mask.bool(), 0.0, neg).to(enc.dtype)[:, None, None, :]
        self.cross_k, self.cross_v = [], []
        for block in t5.decoder.block:
            att = block.layer[1].EncDecAttention
            self.cross_k.append(att.k(enc).view(U, T, self.heads, self.d_kv).transpose(1, 2))
            self.cross_v.append(att.v(enc).view(U, T, self.heads, self.d_kv).transpose(1, 2))
        # relative position bias of the decoder self-attention, shared by all layers: (1, H, S, S)
        sa0 = t5.decoder.block[0].layer[0].SelfAttention
        self.self_bias = sa0.compute_bias(max_steps, max_steps, device=enc.device).to(enc.dtype)
        # q, k, v of the self-attention as one matmul (same weights, one kernel instead of three)
        self.qkv = [torch.cat([b.layer[0].SelfAttention.q.weight, b.layer[0].SelfAttention.k.weight,
                               b.layer[0].SelfAttention.v.weight]) for b in t5.decoder.block]
        self.self_k: list[torch.Tensor | None] = [None] * len(t5.decoder.block)   # (R, H, t, dk)
        self.self_v: list[torch.Tensor | None] = [None] * len(t5.decoder.block)
        self.t = 0

    def start_tokens(self) -> torch.Tensor:
        """(U,) the decoder start token for every user (one beam each)."""
        return torch.full((self.num_users,), BOS, dtype=torch.long, device=self.enc_bias.device)

    def reorder(self, index: torch.Tensor) -> None:
        """New row r takes old row index[r] (rows stay user-major; the beam count may change)."""
        self.self_k = [k.index_select(0, index) for k in self.self_k]
        self.self_v = [v.index_select(0, index) for v in self.self_v]

    def step(self, tokens: torch.Tensor, lo: int = 0, hi: int | None = None) -> torch.Tensor:
        """tokens (R,) at step t (R = U*nb) -> log-probabilities (R, hi-lo) of next tokens lo..hi-1,
        normalised over the whole vocabulary."""
        t5, t, H, dk = self.t5, self.t, self.heads, self.d_kv
        R, U = tokens.shape[0], self.num_users
        nb = R // U
        h = t5.decoder.embed_tokens(tokens)                                     # (R, d)
        bias = self.self_bias[:, :, t:t + 1, :t + 1]                            # (1, H, 1, t+1)
        for i, block in enumerate(t5.decoder.block):
            sa, ca, ff = block.layer[0], block.layer[1], block.layer[2]
            q, k, v = (sa.layer_norm(h) @ self.qkv[i].T).view(R, 3, H, 1, dk).unbind(1)   # (R, H, 1, dk)
            if t:
                k, v = torch.cat([self.self_k[i], k], 2), torch.cat([self.self_v[i], v], 2)
            self.self_k[i], self.self_v[i] = k, v                               # (R, H, t+1, dk)
            w = torch.softmax(q @ k.transpose(2, 3) + bias, dim=-1)             # T5: no 1/sqrt(d)
            h = h + sa.SelfAttention.o((w @ v).view(R, H * dk))
            att = ca.EncDecAttention
            q = att.q(ca.layer_norm(h)).view(U, nb, H, dk).transpose(1, 2)      # (U, H, nb, dk)
            w = torch.softmax(q @ self.cross_k[i].transpose(2, 3) + self.enc_bias, dim=-1)  # (U,H,nb,T)
            h = h + att.o((w @ self.cross_v[i]).transpose(1, 2).reshape(R, H * dk))
            h = ff(h)
        h = t5.decoder.final_layer_norm(h)                                       # (R, d)
        if t5.config.scale_decoder_outputs:
            h = h * (t5.config.d_model ** -0.5)
        self.t += 1
        logits = t5.lm_head(h).float()                                           # (R, V)
        return logits[:, lo:hi] - torch.logsumexp(logits, dim=-1, keepdim=True)
