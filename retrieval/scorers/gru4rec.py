"""GRU4Rec (Hidasi et al., 2016) as a scorer: a recurrent encoder of the history, trained by the
shared ScorerTrainer (next item at every position, full cross-entropy in the frozen configs).

    items (B, L) ─ item embedding ─ dropout ─ num_layers × GRU ─ dropout ─ hidden (B, L, d)
    score(item) = sim(hidden, item_embedding(item))

The input and output item embeddings are one table (GRU4Rec's `constrained_embedding` option), so
the GRU's width is the embedding width and the trainer's losses, samplers and similarity heads apply
unchanged. The original's session-parallel mini-batches and TOP1/BPR-max losses are not used: every
user's sequence is one example and the loss is the trainer's (ScorerLoss), as in the GRU4Rec rows
of the TIGER / S3Rec baseline tables.

Histories arrive right-aligned and left-padded (HistoryBatch). A GRU would read the padding as
steps, so each row is shifted to the left, run as a packed sequence of its own length, and shifted
back; the output at padding is zero and the last column is the state after the most recent item.
"""
from __future__ import annotations

import gin
import torch
from torch import nn
from torch.nn.utils.rnn import pack_padded_sequence, pad_packed_sequence

from retrieval.core import gin_values
from retrieval.data.batch import HistoryBatch, trim_history
from retrieval.core.errors import RecError
from retrieval.scorers.sequences import NextItemExamples
from retrieval.scorers.similarity import make_similarity


def shift_rows(x: torch.Tensor, shift: torch.Tensor) -> torch.Tensor:
    """Row b of x (B, L, ...) rotated left by shift[b] (B,): out[b, j] = x[b, (j + shift[b]) mod L]."""
    B, L = x.shape[:2]
    idx = (torch.arange(L, device=x.device)[None, :] + shift[:, None]) % L          # (B, L)
    if x.dim() > 2:
        idx = idx.view(B, L, *([1] * (x.dim() - 2))).expand_as(x)
    return x.gather(1, idx)


@gin.configurable
class GRU4Rec(NextItemExamples, nn.Module):
    """GRU4Rec. Implements retrieval.evaluation.interfaces.Scorer and the encoder interface ScorerTrainer uses.

    num_items: N (ids 1..N, 0 = padding). maxlen: longest history read (the last `maxlen` items).
    hidden: embedding and GRU width. num_layers: stacked GRU layers. dropout: on the embeddings and
    on the GRU output (and between GRU layers when there are several).
    """

    variant = "gru4rec"
    use_time = False

    def __init__(self, num_items: int, maxlen: int = 50, hidden: int = 64, num_layers: int = 1,
                 dropout: float = 0.2):
        super().__init__()
        num_items, maxlen, hidden, num_layers = (
            gin_values.integer(f"GRU4Rec.{k}", v) for k, v in (
                ("num_items", num_items), ("maxlen", maxlen), ("hidden", hidden),
                ("num_layers", num_layers)))
        if isinstance(dropout, bool) or not isinstance(dropout, (int, float)) or not 0.0 <= dropout < 1.0:
            raise RecError(f"GRU4Rec.dropout = {dropout!r} must be a number in [0, 1); fix it in the "
                           "gin config")
        self.num_items, self.maxlen, self.hidden = num_items, maxlen, hidden
        self.config = dict(maxlen=maxlen, hidden=hidden, num_layers=num_layers, dropout=dropout)
        self.similarity = make_similarity(dim=hidden)
        if self.similarity.name != "dot":
            self.config["similarity"] = self.similarity.name
        self.item_emb = nn.Embedding(num_items + 1, hidden, padding_idx=0)
        self.gru = nn.GRU(hidden, hidden, num_layers=num_layers, batch_first=True,
                          dropout=dropout if num_layers > 1 else 0.0)
        self.drop = nn.Dropout(dropout)
        nn.init.xavier_normal_(self.item_emb.weight)
        with torch.no_grad():
            self.item_emb.weight[0].zero_()

    def num_parameters(self) -> int:
        return sum(p.numel() for p in self.parameters())

    def encode(self, items: torch.Tensor, times: torch.Tensor | None = None) -> torch.Tensor:
        """Hidden states (B, L', d) for right-aligned histories (B, L); `times` is ignored.

        L' = min(L, maxlen) minus leading all-padding columns; column -1 follows the most recent item.
        """
        items = trim_history(items, self.maxlen)
        B, L = items.shape
        lengths = (items > 0).sum(1)                                      # (B,)
        left = shift_rows(items, L - lengths)                             # (B, L) left-aligned
        x = self.drop(self.item_emb(left))                                # (B, L, d)
        packed = pack_padded_sequence(x, lengths.clamp(min=1).cpu(), batch_first=True,
                                      enforce_sorted=False)
        out, _ = self.gru(packed)
        out, _ = pad_packed_sequence(out, batch_first=True, total_length=L)   # (B, L, d), 0 past end
        out = shift_rows(out, lengths % L)                                # back to right-aligned
        return self.drop(out) * (items > 0)[..., None].to(out.dtype)

    def score_all(self, batch: HistoryBatch) -> torch.Tensor:
        """Scores (B, N+1) of every item after each history (column 0 is padding)."""
        h = self.encode(batch.items)[:, -1]                               # (B, d)
        return self.similarity.all_items(h, self.item_emb.weight)

    def forward(self, batch: HistoryBatch) -> torch.Tensor:
        return self.score_all(batch)
