"""SASRec and TiSASRec, with plain or mHC residuals, as one configurable scorer (docs/protocol.md §5).

    items (B, L) ─ item embedding·√d (+ position embedding unless use_time) ─ dropout
      ─ [expand to n streams if use_mhc]
      ─ num_blocks × { causal self-attention sublayer, point-wise feed-forward sublayer }
      ─ [collapse streams] ─ LayerNorm ─ hidden (B, L, d)
    score(item) = sim(hidden, item_embedding(item))    (the input embedding is shared for output)

`sim` is the similarity head, retrieval.scorers.similarity.make_similarity (gin: `make_similarity.name`):
the dot product by default (SASRec), or cosine / scaled dot / bilinear / fusion / multi-head.

Switches: `use_time` (TiSASRec attention with interval and absolute-position key/value terms instead
of an additive position embedding), `use_mhc` (hyper-connection residuals, retrieval.scorers.mhc),
`pre_ln` (x + F(LN(x)) when True; LN(x + F(x)) when False, the original Transformer order).

Positions are right-aligned: the most recent item always has position `maxlen`, as in the reference
implementation, so a history shorter than `maxlen` and its left-padded copy get the same output.
Leading columns that are padding in every row are dropped before the blocks: padded keys are masked
out of attention and padded queries are never read, so this changes no output and saves most of the
work on short-sequence data such as Beauty.
"""
from __future__ import annotations

from typing import NamedTuple

import gin
import torch
import torch.nn.functional as F
from torch import nn

from retrieval.data.batch import HistoryBatch
from retrieval.core.errors import RecError
from retrieval.scorers.sequences import NextItemExamples
from retrieval.scorers.mhc import HyperConnection, PlainResidual, collapse_streams, expand_streams
from retrieval.scorers.time_interval import TimeIntervalAttention, time_relation_matrix
from retrieval.scorers.similarity import make_similarity


class AttentionContext(NamedTuple):
    """What every attention sublayer of one forward pass shares.

    mask: (B, 1, L, L) bool, True = query may attend key (causal, non-padding key or itself).
    The rest is only set for TiSASRec: pos_k, pos_v (B, L, d); time_k, time_v (S+1, d);
    relation (B, L, L) int64.
    """

    mask: torch.Tensor
    pos_k: torch.Tensor | None = None
    pos_v: torch.Tensor | None = None
    time_k: torch.Tensor | None = None
    time_v: torch.Tensor | None = None
    relation: torch.Tensor | None = None


class CausalSelfAttention(nn.Module):
    """Multi-head self-attention (fused kernel) with an output projection, as nn.MultiheadAttention."""

    def __init__(self, dim: int, heads: int, dropout: float):
        super().__init__()
        self.heads = heads
        self.qkv = nn.Linear(dim, 3 * dim)
        self.out = nn.Linear(dim, dim)
        self.dropout = dropout

    def forward(self, x: torch.Tensor, ctx: AttentionContext) -> torch.Tensor:
        q, k, v = self.qkv(x).unflatten(-1, (3, self.heads, -1)).permute(2, 0, 3, 1, 4)  # 3×(B, h, L, dh)
        o = F.scaled_dot_product_attention(q, k, v, attn_mask=ctx.mask,
                                           dropout_p=self.dropout if self.training else 0.0)
        return self.out(o.transpose(1, 2).flatten(-2))                   # (B, L, d)


ACTIVATIONS = {"relu": F.relu, "gelu": F.gelu}


class PointWiseFeedForward(nn.Module):
    """d -> mult*d -> d (SASRec: mult 1, ReLU; BERT-style S3Rec code: mult 4, GELU)."""

    def __init__(self, dim: int, dropout: float, mult: int = 1, activation: str = "relu"):
        super().__init__()
        self.fc1, self.fc2 = nn.Linear(dim, mult * dim), nn.Linear(mult * dim, dim)
        self.drop = nn.Dropout(dropout)
        self.act = ACTIVATIONS[activation]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.drop(self.fc2(self.drop(self.act(self.fc1(x)))))


class Block(nn.Module):
    """One attention + feed-forward block; `residual_*` is PlainResidual or HyperConnection."""

    def __init__(self, dim, heads, dropout, use_time, pre_ln, make_residual, ln_eps, ffn_mult=1,
                 activation="relu"):
        super().__init__()
        self.attn = (TimeIntervalAttention if use_time else CausalSelfAttention)(dim, heads, dropout)
        self.ffn = PointWiseFeedForward(dim, dropout, ffn_mult, activation)
        self.attn_norm = nn.LayerNorm(dim, eps=ln_eps)
        self.ffn_norm = nn.LayerNorm(dim, eps=ln_eps)
        self.attn_residual, self.ffn_residual = make_residual(), make_residual()
        self.pre_ln = pre_ln

    def forward(self, x: torch.Tensor, ctx: AttentionContext, keep: torch.Tensor) -> torch.Tensor:
        if self.pre_ln:
            x = self.attn_residual(x, lambda h: self.attn(self.attn_norm(h), ctx))
            x = self.ffn_residual(x, lambda h: self.ffn(self.ffn_norm(h)))
        else:
            x = self.attn_norm(self.attn_residual(x, lambda h: self.attn(h, ctx)))
            x = self.ffn_norm(self.ffn_residual(x, self.ffn))
        return x * keep                                                   # padding stays zero


VARIANTS = ("sasrec", "sasrec-mhc", "tisasrec", "tisasrec-mhc")


@gin.configurable
class SequentialScorer(NextItemExamples, nn.Module):
    """SASRec / TiSASRec (± mHC). Implements retrieval.evaluation.interfaces.Scorer.

    num_items: N (item ids 1..N, 0 = padding), from the data. maxlen: longest history used (the
    last `maxlen` items). time_span: largest interval bucket (TiSASRec). mhc_streams: n.
    The defaults are the SASRec reference (feed-forward d -> d with ReLU, Xavier-normal init,
    embeddings scaled by √d). `ffn_mult`, `activation`, `init_std` (> 0: N(0, init_std) instead of
    Xavier) and `embedding_norm` (LayerNorm on the summed embeddings instead of the √d scale) give
    the BERT-style variant of the S3Rec code base: 4, 'gelu', 0.02, True (with pre_ln=False).
    """

    def __init__(self, num_items: int, maxlen: int = 200, hidden: int = 50, num_blocks: int = 2,
                 num_heads: int = 1, dropout: float = 0.2, use_time: bool = False,
                 use_mhc: bool = False, pre_ln: bool = True, time_span: int = 256,
                 mhc_streams: int = 4, mhc_sinkhorn_iters: int = 20, ln_eps: float = 1e-8,
                 ffn_mult: int = 1, activation: str = "relu", init_std: float = 0.0,
                 embedding_norm: bool = False):
        super().__init__()
        if activation not in ACTIVATIONS:
            raise RecError(f"SequentialScorer.activation = {activation!r} is unknown; use one of "
                           f"{', '.join(ACTIVATIONS)}")
        if isinstance(ffn_mult, bool) or not isinstance(ffn_mult, int) or ffn_mult <= 0:
            raise RecError(f"SequentialScorer.ffn_mult = {ffn_mult!r} must be a positive integer")
        if not init_std >= 0.0:
            raise RecError(f"SequentialScorer.init_std = {init_std} must be >= 0 (0 = Xavier-normal)")
        for key, value in (("maxlen", maxlen), ("hidden", hidden), ("num_heads", num_heads),
                           ("num_blocks", num_blocks), ("time_span", time_span),
                           ("mhc_streams", mhc_streams), ("num_items", num_items)):
            if isinstance(value, bool) or not isinstance(value, int):
                raise RecError(f"SequentialScorer.{key} = {value!r} must be a positive integer; fix it "
                               "in the gin config")
            if value <= 0:
                raise RecError(f"SequentialScorer.{key} = {value} must be > 0; fix it in the gin config")
        if hidden % num_heads:
            raise RecError(f"SequentialScorer.hidden = {hidden} is not divisible by num_heads = "
                           f"{num_heads}; choose num_heads dividing hidden")
        if not 0.0 <= dropout < 1.0:
            raise RecError(f"SequentialScorer.dropout = {dropout} must be in [0, 1)")
        self.num_items, self.maxlen, self.hidden = num_items, maxlen, hidden
        self.use_time, self.use_mhc, self.mhc_streams = use_time, use_mhc, mhc_streams
        self.time_span = time_span
        self.config = dict(maxlen=maxlen, hidden=hidden, num_blocks=num_blocks, num_heads=num_heads,
                           dropout=dropout, use_time=use_time, use_mhc=use_mhc, pre_ln=pre_ln,
                           time_span=time_span, mhc_streams=mhc_streams)
        # The similarity head (gin: make_similarity.name); 'dot' has no parameters and is the
        # original score. Named in the config only when it is not dot, so checkpoint signatures
        # of dot models stay what they were.
        style = dict(ffn_mult=ffn_mult, activation=activation, init_std=init_std,
                     embedding_norm=embedding_norm)
        defaults = dict(ffn_mult=1, activation="relu", init_std=0.0, embedding_norm=False)
        self.config.update({k: v for k, v in style.items() if v != defaults[k]})
        self.init_std = init_std
        self.similarity = make_similarity(dim=hidden)
        if self.similarity.name != "dot":
            self.config["similarity"] = self.similarity.name

        self.item_emb = nn.Embedding(num_items + 1, hidden, padding_idx=0)
        if use_time:
            self.pos_k = nn.Embedding(maxlen + 1, hidden, padding_idx=0)
            self.pos_v = nn.Embedding(maxlen + 1, hidden, padding_idx=0)
            self.time_k = nn.Embedding(time_span + 1, hidden)
            self.time_v = nn.Embedding(time_span + 1, hidden)
        else:
            self.pos_emb = nn.Embedding(maxlen + 1, hidden, padding_idx=0)
        self.emb_dropout = nn.Dropout(dropout)
        self.emb_norm = nn.LayerNorm(hidden, eps=ln_eps) if embedding_norm else None

        def make_residual():
            if use_mhc:
                return HyperConnection(hidden, mhc_streams, mhc_sinkhorn_iters)
            return PlainResidual()

        self.blocks = nn.ModuleList(Block(hidden, num_heads, dropout, use_time, pre_ln, make_residual,
                                          ln_eps, ffn_mult, activation) for _ in range(num_blocks))
        self.last_norm = nn.LayerNorm(hidden, eps=ln_eps)
        self._init_weights()

    def _init_weights(self) -> None:
        # Xavier-normal for embeddings and linear maps, as the reference implementation (it matters
        # for SASRec's accuracy); mHC and the similarity head keep their own initialisation.
        skip = {id(m) for hc in self.modules() if isinstance(hc, HyperConnection) for m in hc.modules()}
        skip |= {id(m) for m in self.similarity.modules()}     # starts as dot (identity maps)
        for m in self.modules():
            if id(m) not in skip and isinstance(m, (nn.Embedding, nn.Linear)):
                if self.init_std > 0:
                    nn.init.normal_(m.weight, std=self.init_std)
                    if isinstance(m, nn.Linear) and m.bias is not None:
                        nn.init.zeros_(m.bias)
                else:
                    nn.init.xavier_normal_(m.weight)
        with torch.no_grad():
            for m in self.modules():
                if isinstance(m, nn.Embedding) and m.padding_idx is not None:
                    m.weight[m.padding_idx].zero_()

    @property
    def variant(self) -> str:
        return ("tisasrec" if self.use_time else "sasrec") + ("-mhc" if self.use_mhc else "")

    def num_parameters(self) -> int:
        return sum(p.numel() for p in self.parameters())


    def encode(self, items: torch.Tensor, times: torch.Tensor | None = None) -> torch.Tensor:
        """Hidden states (B, L', d) for right-aligned histories items/times (B, L).

        L' = min(L, maxlen) minus leading all-padding columns; column -1 is the most recent item.
        """
        if items.shape[1] > self.maxlen:                                  # keep the last maxlen
            items = items[:, -self.maxlen:]
            times = times[:, -self.maxlen:] if times is not None else None
        used = (items > 0).any(0)
        if not bool(used.all()) and bool(used.any()):
            first = int(used.int().argmax())
            items = items[:, first:]
            times = times[:, first:] if times is not None else None
        B, L = items.shape
        valid = items > 0                                                 # (B, L)
        keep = valid[..., None].to(self.item_emb.weight.dtype)            # (B, L, 1)
        positions = (torch.arange(L, device=items.device) + 1 + self.maxlen - L) * valid

        x = self.item_emb(items)                                          # (B, L, d)
        if self.emb_norm is None:
            x = x * self.hidden ** 0.5
        causal = torch.ones(L, L, dtype=torch.bool, device=items.device).tril()
        self_pair = torch.eye(L, dtype=torch.bool, device=items.device)
        mask = (causal & (valid[:, None, :] | self_pair))[:, None]        # (B, 1, L, L)
        if self.use_time:
            if times is None:
                times = torch.zeros_like(items)
            ctx = AttentionContext(
                mask=mask,
                pos_k=self.emb_dropout(self.pos_k(positions)),
                pos_v=self.emb_dropout(self.pos_v(positions)),
                # Dropout on the interval tables (one mask per interval value), since the
                # per-pair (B, L, L, d) tensors of the reference are never built.
                time_k=self.emb_dropout(self.time_k.weight),
                time_v=self.emb_dropout(self.time_v.weight),
                relation=time_relation_matrix(times, valid, self.time_span))
        else:
            x = x + self.pos_emb(positions)
            ctx = AttentionContext(mask=mask)
        if self.emb_norm is not None:
            x = self.emb_norm(x)
        x = self.emb_dropout(x) * keep

        if self.use_mhc:
            x = expand_streams(x, self.mhc_streams)                       # (B, L, n, d)
            keep = keep[..., None]                                        # (B, L, 1, 1)
        for block in self.blocks:
            x = block(x, ctx, keep)
        if self.use_mhc:
            x = collapse_streams(x)                                       # (B, L, d)
        return self.last_norm(x)

    def score_all(self, batch: HistoryBatch) -> torch.Tensor:
        """Scores (B, N+1) of every item after each history (column 0 is padding)."""
        h = self.encode(batch.items, batch.times if self.use_time else None)[:, -1]   # (B, d)
        return self.similarity.all_items(h, self.item_emb.weight)

    def forward(self, batch: HistoryBatch) -> torch.Tensor:
        return self.score_all(batch)
