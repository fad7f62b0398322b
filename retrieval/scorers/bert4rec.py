"""BERT4Rec (Sun et al., 2019) as a scorer: a bidirectional Transformer trained to fill in masked
items (the Cloze task), by the shared ScorerTrainer with the full cross-entropy.

    items (B, L), some replaced by [mask] ─ item embedding + position embedding ─ LayerNorm ─ dropout
      ─ num_blocks × { bidirectional self-attention, feed-forward 4d GELU } (post-LN, as BERT)
      ─ Linear ─ GELU ─ LayerNorm ─ hidden (B, L, d)
    score(item) = sim(hidden, item_embedding(item))       (the input item table is the output table)

Training (ClozeSequences): each user's last `maxlen` training items; in each row max(1, round(ρ·n))
of its n items are chosen uniformly and replaced by the mask token, and the loss is read at those
positions only, with the original items as targets. Inference (`score_all`): the mask token is
appended after the history and its state scores every item, so the model predicts the item that
follows the history. The blocks, attention and feed-forward layers are SASRec's (retrieval.scorers.
sasrec); only the attention mask differs: every item sees every non-padding item, before and after.

The mask token has the id N+1 inside this model only; its embedding is a separate vector, so the
item table keeps N+1 rows and the mask token is never a candidate in scores or losses.
"""
from __future__ import annotations

import gin
import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from retrieval.core import gin_values
from retrieval.data.batch import HistoryBatch, right_aligned, trim_history
from retrieval.data.types import SplitData
from retrieval.core.errors import RecError
from retrieval.scorers.mhc import PlainResidual
from retrieval.scorers.sasrec import AttentionContext, Block
from retrieval.scorers.sequences import TrainBatch, TrainingSequences
from retrieval.scorers.similarity import make_similarity


class ClozeSequences(TrainingSequences):
    """The masked-item training examples of a split (users with >= 2 training items).

    A batch row holds the user's last `maxlen` training items (right-aligned, left-padded) with some
    replaced by `mask_id`; `targets` holds the original item at the masked positions and 0 elsewhere,
    so the trainer's "every position with a target is a prediction" reads only the masked ones.
    Per row of n items, k = max(1, round(mask_prob·n)) positions are masked; with probability
    `last_item_prob` a row instead masks only its last item (the inference task, as in the original
    code's extra "mask the last item" examples).

    The masks come from a generator seeded, once per epoch in `batches`, from the trainer's epoch
    generator, and batches are built in order: a run resumed from an epoch checkpoint draws the same
    masks, and every DDP rank draws the same ones for the same global batch.
    """

    def __init__(self, split: SplitData, maxlen: int, mask_id: int, mask_prob: float,
                 last_item_prob: float = 0.0):
        super().__init__(split, maxlen)
        self.mask_id, self.mask_prob, self.last_item_prob = mask_id, mask_prob, last_item_prob
        self._rng = np.random.default_rng(0)

    def _masked_count(self, n: np.ndarray) -> np.ndarray:
        return np.maximum(1, np.rint(self.mask_prob * n)).astype(np.int64)

    @property
    def num_positions(self) -> int:
        """Expected masked positions (predictions) in one epoch."""
        n = np.minimum(self.ends - self.starts, self.maxlen)
        k = self._masked_count(n)
        return int(round(float(((1.0 - self.last_item_prob) * k + self.last_item_prob).sum())))

    def batches(self, rng: np.random.Generator, batch_size: int, bucket_batches: int) -> list[np.ndarray]:
        self._rng = np.random.default_rng(rng.integers(2**63))
        return super().batches(rng, batch_size, bucket_batches)

    def batch(self, idx: np.ndarray) -> TrainBatch:
        s, e = self.starts[idx], self.ends[idx]
        n = np.minimum(e - s, self.maxlen)                                # (B,) items per row
        width = int(n.max())
        items = right_aligned(self.items, s, e, width)            # (B, W)
        times = right_aligned(self.times, s, e, width)
        valid = items > 0
        # k random positions per row: the k smallest of uniform keys over the row's items
        keys = np.where(valid, self._rng.random(items.shape), 2.0)        # (B, W), padding last
        k = self._masked_count(n)
        kth = np.take_along_axis(np.sort(keys, axis=1), (k - 1)[:, None], axis=1)   # (B, 1)
        masked = valid & (keys <= kth)
        last_only = self._rng.random(len(idx)) < self.last_item_prob
        masked[last_only] = False
        masked[last_only, -1] = True                                      # right-aligned: last item
        targets = np.where(masked, items, 0)
        return TrainBatch(self.users[idx], np.where(masked, self.mask_id, items), times, targets)


@gin.configurable
class BERT4Rec(nn.Module):
    """BERT4Rec. Implements retrieval.evaluation.interfaces.Scorer and the encoder interface ScorerTrainer uses.

    num_items: N. maxlen: longest input, the appended mask token included. hidden, num_blocks,
    num_heads, dropout: the Transformer. mask_prob: ρ, the fraction of a training row's items that
    are masked. last_item_prob: fraction of training rows that mask only their last item.
    init_std: N(0, init_std) initialisation of every embedding and linear map (BERT's 0.02).
    """

    variant = "bert4rec"
    use_time = False

    def __init__(self, num_items: int, maxlen: int = 50, hidden: int = 64, num_blocks: int = 2,
                 num_heads: int = 2, dropout: float = 0.2, mask_prob: float = 0.2,
                 last_item_prob: float = 0.0, init_std: float = 0.02, ln_eps: float = 1e-12):
        super().__init__()
        num_items, maxlen, hidden, num_blocks, num_heads = (
            gin_values.integer(f"BERT4Rec.{k}", v) for k, v in (
                ("num_items", num_items), ("maxlen", maxlen), ("hidden", hidden),
                ("num_blocks", num_blocks), ("num_heads", num_heads)))
        if maxlen < 2:
            raise RecError(f"BERT4Rec.maxlen = {maxlen} must be >= 2: the input holds the history "
                           "and the mask token after it")
        if hidden % num_heads:
            raise RecError(f"BERT4Rec.hidden = {hidden} is not divisible by num_heads = {num_heads}; "
                           "choose num_heads dividing hidden")
        for key, value, low_open in (("dropout", dropout, False), ("mask_prob", mask_prob, True),
                                     ("last_item_prob", last_item_prob, False)):
            ok = (not isinstance(value, bool) and isinstance(value, (int, float))
                  and (0.0 < value if low_open else 0.0 <= value) and value < 1.0)
            if not ok:
                raise RecError(f"BERT4Rec.{key} = {value!r} must be a number in "
                               f"{'(0, 1)' if low_open else '[0, 1)'}; fix it in the gin config")
        gin_values.positive_number("BERT4Rec.init_std", init_std)
        self.num_items, self.maxlen, self.hidden = num_items, maxlen, hidden
        self.mask_id = num_items + 1
        self.mask_prob, self.last_item_prob = float(mask_prob), float(last_item_prob)
        self.config = dict(maxlen=maxlen, hidden=hidden, num_blocks=num_blocks, num_heads=num_heads,
                           dropout=dropout, mask_prob=mask_prob, last_item_prob=last_item_prob)
        self.similarity = make_similarity(dim=hidden)
        if self.similarity.name != "dot":
            self.config["similarity"] = self.similarity.name

        self.item_emb = nn.Embedding(num_items + 1, hidden, padding_idx=0)
        self.mask_emb = nn.Parameter(torch.empty(hidden))
        self.pos_emb = nn.Embedding(maxlen + 1, hidden, padding_idx=0)
        self.emb_norm = nn.LayerNorm(hidden, eps=ln_eps)
        self.emb_dropout = nn.Dropout(dropout)
        self.blocks = nn.ModuleList(
            Block(hidden, num_heads, dropout, use_time=False, pre_ln=False, make_residual=PlainResidual,
                  ln_eps=ln_eps, ffn_mult=4, activation="gelu") for _ in range(num_blocks))
        self.head = nn.Linear(hidden, hidden)                             # BERT's output transform
        self.head_norm = nn.LayerNorm(hidden, eps=ln_eps)
        skip = {id(m) for m in self.similarity.modules()}
        for m in self.modules():
            if id(m) not in skip and isinstance(m, (nn.Embedding, nn.Linear)):
                nn.init.normal_(m.weight, std=init_std)
                if isinstance(m, nn.Linear) and m.bias is not None:
                    nn.init.zeros_(m.bias)
        nn.init.normal_(self.mask_emb, std=init_std)
        with torch.no_grad():
            self.item_emb.weight[0].zero_()
            self.pos_emb.weight[0].zero_()

    def num_parameters(self) -> int:
        return sum(p.numel() for p in self.parameters())

    def training_sequences(self, split: SplitData) -> ClozeSequences:
        """The examples ScorerTrainer trains this model on: masked items, not next items."""
        return ClozeSequences(split, self.maxlen, self.mask_id, self.mask_prob, self.last_item_prob)

    def encode(self, items: torch.Tensor, times: torch.Tensor | None = None) -> torch.Tensor:
        """Hidden states (B, L', d) for right-aligned inputs (B, L) that may hold the mask id N+1.

        L' = min(L, maxlen) minus leading all-padding columns. `times` is ignored.
        """
        items = trim_history(items, self.maxlen)
        B, L = items.shape
        valid = items > 0                                                 # (B, L)
        keep = valid[..., None].to(self.item_emb.weight.dtype)            # (B, L, 1)
        positions = (torch.arange(L, device=items.device) + 1 + self.maxlen - L) * valid
        is_mask = (items == self.mask_id)[..., None]                      # (B, L, 1)
        x = torch.where(is_mask, self.mask_emb.to(self.item_emb.weight.dtype),
                        self.item_emb(items.clamp(max=self.num_items)))   # (B, L, d)
        x = self.emb_dropout(self.emb_norm(x + self.pos_emb(positions))) * keep
        eye = torch.eye(L, dtype=torch.bool, device=items.device)
        ctx = AttentionContext(mask=(valid[:, None, :] | eye)[:, None])   # (B, 1, L, L) bidirectional
        for block in self.blocks:
            x = block(x, ctx, keep)
        return self.head_norm(F.gelu(self.head(x))) * keep

    def score_all(self, batch: HistoryBatch) -> torch.Tensor:
        """Scores (B, N+1) of every item for the position after each history (column 0 is padding)."""
        items = batch.items
        mask = torch.full((len(items), 1), self.mask_id, dtype=items.dtype, device=items.device)
        h = self.encode(torch.cat([items, mask], dim=1))[:, -1]           # (B, d)
        return self.similarity.all_items(h, self.item_emb.weight)

    def forward(self, batch: HistoryBatch) -> torch.Tensor:
        return self.score_all(batch)
