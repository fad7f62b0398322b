"""The default generator: an item-level causal Transformer with a small semantic-ID head (the
"lazy decoder-only" shape of OneRec-V2; SASRec-style all-position training).

    history item i  ─ sum of its L+1 code embeddings (no per-item table) + position ─ LayerNorm
      ─ num_layers × causal pre-LN blocks ─ LayerNorm ─ state h_t (one per item)
    head, level l = 0..L:  z_l = GELU(LN(A_l h_t + Σ_{j<l} E_{l,j}[c_j]))
                           log p(c_l | h_t, c_<l) = log_softmax(W_l z_l · C_lᵀ + b_l)

where C_l are the input code embeddings of level l (tied) and c_L is the disambiguation code. The
state at position t predicts the semantic ID of item t+1, so one forward pass trains every position
of a sequence: an epoch costs O(interactions), not O(Σ prefix lengths × tokens per item) as the
sliding-window T5 (onerec.model.OneRecModel, kind 'tiger') does.

Decoding is the same exact constrained beam search as the T5's (onerec.beam_search): the trunk runs
once per user, then L+1 head steps walk the prefix trie, so every returned ID is a real item, beams
are distinct items and history items are excluded at the last step. A new item needs only its
semantic ID (known codes) to be read as history or generated: nothing here is indexed by item id
except the buffer of ID tokens, which is rebuilt from the artifact.
"""
from __future__ import annotations

import gin
import torch
import torch.nn.functional as F
from torch import nn

from onerec.beam_search import BeamResult, constrained_beam_search
from onerec.item_trunk import ItemTrunk, check_sizes, init_weights, smoothed_nll
from onerec.item_windows import WindowBatch
from onerec.prefix_trie import PrefixTrie
from onerec.vocab import PAD, SidVocab
from retrieval.data.batch import HistoryBatch
from rqvae.artifact import SemanticIds


class SidHead(nn.Module):
    """Level-by-level distribution of the next item's codes given a trunk state (module docstring)."""

    def __init__(self, vocab: SidVocab, trie: PrefixTrie, dim: int, hidden: int, dropout: float,
                 trie_softmax: bool = True, temperature: float = 0.0):
        super().__init__()
        self.temperature = temperature          # > 0: cosine logits / temperature, else dot
        self.vocab, self.hidden, self.trie, self.trie_softmax = vocab, hidden, trie, trie_softmax
        n = vocab.id_length
        self.state = nn.Linear(dim, n * hidden)                       # A_l for every level at once
        self.prefix = nn.Embedding(vocab.size, n * hidden, padding_idx=PAD)   # E_{l,j}[token of level j]
        self.norm = nn.LayerNorm(hidden)
        self.out = nn.Parameter(torch.empty(n, hidden, dim))            # W_l
        self.bias = nn.Parameter(torch.zeros(vocab.size))               # b_l, per token
        self.drop = nn.Dropout(dropout)
        nn.init.normal_(self.out, std=0.02)
        # level j's token contributes to the levels l > j only
        self.register_buffer("later", torch.ones(n, n).triu(1).bool(), persistent=False)

    def start(self, h: torch.Tensor) -> torch.Tensor:
        """(R, d) states -> (R, L+1, hidden) pre-activations with no code chosen yet."""
        return self.state(h).unflatten(-1, (self.vocab.id_length, self.hidden))

    def add_code(self, acc: torch.Tensor, tokens: torch.Tensor, level: int) -> torch.Tensor:
        """acc (R, L+1, hidden) + the contribution of level-`level` tokens (R,) to the later levels."""
        e = self.prefix(tokens).unflatten(-1, (self.vocab.id_length, self.hidden))   # (R, L+1, H)
        return acc + e * self.later[level][None, :, None]

    def level_logits(self, acc_l: torch.Tensor, level: int, code_emb: torch.Tensor,
                     node: torch.Tensor) -> torch.Tensor:
        """acc_l (R, hidden), trie nodes (R,) of the chosen prefixes -> (R, width_l) logits of level
        `level`'s codes; with trie_softmax, codes that lead to no item get -inf."""
        lo = int(self.vocab.offsets[level])
        hi = lo + int(self.vocab.widths[level])
        z = self.drop(F.gelu(self.norm(acc_l))) @ self.out[level]      # (R, d)
        c = code_emb[lo:hi]
        if self.temperature > 0:
            z, c = F.normalize(z, dim=-1) / self.temperature, F.normalize(c, dim=-1)
        logits = (z @ c.T + self.bias[lo:hi]).float()
        if self.trie_softmax:
            valid = self.trie.step_children(level)[node.clamp(min=0)] >= 0   # (R, width_l)
            logits = logits.masked_fill(~valid, -torch.inf)
        return logits

    def teacher_forced(self, h: torch.Tensor, tokens: torch.Tensor, code_emb: torch.Tensor,
                       nodes: torch.Tensor) -> list:
        """h (P, d), target tokens (P, L+1) and their trie nodes (P, L+1) -> per level logits
        [(P, width_l)]."""
        n = self.vocab.id_length
        e = self.prefix(tokens).unflatten(-1, (n, self.hidden))         # (P, j, l, H)
        acc = self.start(h) + (e * self.later[None, :, :, None]).sum(1)  # (P, L+1, H)
        return [self.level_logits(acc[:, l], l, code_emb, nodes[:, l]) for l in range(n)]


@gin.configurable
class CausalSidGenerator(ItemTrunk):
    """Item-level causal generator of semantic IDs (module docstring).

    d_model / num_layers / num_heads / ffn_mult / dropout: the trunk. max_len: most recent items
    read (and the training window length). head_hidden: width of the semantic-ID head.
    label_smoothing: on every level's cross-entropy. trie_softmax: normalise every level over the
    codes that lead to some item (the prefix trie's children), in training and decoding, so the
    model is a distribution over real items; False = over the whole codebook. head_temperature:
    > 0 scores codes by cosine / temperature (as the scorers' cosine head), 0 = dot product.
    item_id_input: also add a per-item embedding to the input (a diagnostic: items are then no
    longer only their codes, and a new item is not representable without retraining).
    beam_width: beams in `generate` (>= the largest K asked for). exclude_history: never return an
    item of the input history.
    """

    def __init__(self, sids: SemanticIds, d_model: int = 128, num_layers: int = 2, num_heads: int = 2,
                 ffn_mult: int = 4, dropout: float = 0.2, max_len: int = 50, head_hidden: int = 256,
                 label_smoothing: float = 0.0, trie_softmax: bool = True, beam_width: int = 50,
                 exclude_history: bool = True, item_id_input: bool = False,
                 head_temperature: float = 0.0):
        super().__init__()
        check_sizes("CausalSidGenerator", d_model, num_heads, dropout, label_smoothing,
                    head_temperature, num_layers=num_layers, ffn_mult=ffn_mult, max_len=max_len,
                    head_hidden=head_hidden, beam_width=beam_width)
        self.vocab = SidVocab.from_semantic_ids(sids, 0)
        self.trie = PrefixTrie(self.vocab, sids.codes)
        self.register_buffer("item_tokens", torch.from_numpy(self.vocab.item_tokens(sids)),
                             persistent=False)                                    # (N+1, L+1)
        self.register_buffer("item_nodes", _prefix_nodes(self.trie, sids.codes), persistent=False)
        self.num_items = sids.num_items
        self.beam_width = int(beam_width)
        self.exclude_history, self.label_smoothing = bool(exclude_history), float(label_smoothing)
        self.sizes = {"d_model": int(d_model), "num_layers": int(num_layers), "num_heads": int(num_heads),
                      "ffn_mult": int(ffn_mult), "dropout": float(dropout), "head_hidden": int(head_hidden)}
        self.build_trunk(self.vocab, self.num_items, d_model, num_layers, num_heads, ffn_mult, dropout,
                         max_len, item_id_input)
        self.head = SidHead(self.vocab, self.trie, d_model, head_hidden, dropout, trie_softmax,
                            float(head_temperature))
        self.apply(init_weights)

    # -- what the trainer and the pipeline ask of every generator -----------------------------
    def describe(self) -> dict:
        """What a checkpoint must agree on: sizes, vocabulary layout, decoding rules."""
        return {"kind": "causal", **self.sizes, "max_len": self.max_len,
                "label_smoothing": self.label_smoothing, "trie_softmax": self.head.trie_softmax,
                "head_temperature": self.head.temperature, "item_id_input": self.item_emb is not None,
                "vocab": {"levels": self.vocab.levels, "codebook_size": self.vocab.codebook_size,
                          "num_disambiguation": self.vocab.num_disambiguation},
                "num_parameters": self.num_parameters()}

    # -- training ---------------------------------------------------------------------------
    def forward(self, batch: WindowBatch) -> torch.Tensor:
        """Mean over supervised positions of the next item's ID negative log-likelihood
        (sum over its L+1 levels)."""
        h = self.encode(batch.items)                                       # (B, T, d)
        targets = batch.targets[:, -h.shape[1]:]
        keep = targets > 0
        tokens = self.item_tokens[targets[keep]]                           # (P, L+1)
        nodes = self.item_nodes[targets[keep]]
        logits = self.head.teacher_forced(h[keep], tokens, self.code_emb.weight, nodes)
        return sum(smoothed_nll(lg, tokens[:, l] - int(self.vocab.offsets[l]), self.label_smoothing)
                   for l, lg in enumerate(logits))

    # -- decoding ---------------------------------------------------------------------------
    @torch.no_grad()
    def beam_search(self, batch: HistoryBatch, beam_width: int | None = None) -> BeamResult:
        """Top-`beam_width` distinct items per history with their sequence log-probabilities."""
        was_training = self.training
        self.eval()
        try:
            h = self.encode(batch.items)[:, -1]                            # (U, d) latest state
            exclude = None
            if self.exclude_history:
                exclude = torch.zeros(h.shape[0], self.num_items + 1, dtype=torch.bool, device=h.device)
                exclude.scatter_(1, batch.items, True)
                exclude[:, 0] = False
            return constrained_beam_search(_HeadDecoder(self, h), self.trie,
                                           beam_width or self.beam_width, exclude)
        finally:
            self.train(was_training)


class _HeadDecoder:
    """The beam search's StepDecoder over the semantic-ID head: rows are user-major beams, each
    carrying its head pre-activations (R, L+1, hidden) with the chosen codes added in."""

    def __init__(self, model: CausalSidGenerator, h: torch.Tensor):
        self.model, self.num_users, self.t = model, h.shape[0], 0
        self.acc = model.head.start(h)                                     # (U, L+1, H)
        self.node = torch.zeros(h.shape[0], dtype=torch.long, device=h.device)   # trie node per row

    def start_tokens(self) -> torch.Tensor:
        return torch.full((self.num_users,), PAD, dtype=torch.long, device=self.acc.device)

    def step(self, tokens: torch.Tensor, lo: int, hi: int) -> torch.Tensor:
        head, t = self.model.head, self.t
        if t > 0:
            self.acc = head.add_code(self.acc, tokens, t - 1)
            code = tokens - int(self.model.vocab.offsets[t - 1])
            self.node = self.model.trie.step_children(t - 1)[self.node.clamp(min=0), code].long()
        logits = head.level_logits(self.acc[:, t], t, self.model.code_emb.weight, self.node)  # (R, W)
        self.t += 1
        return torch.log_softmax(logits, dim=-1)

    def reorder(self, index: torch.Tensor) -> None:
        self.acc = self.acc.index_select(0, index)
        self.node = self.node.index_select(0, index)


def _prefix_nodes(trie: PrefixTrie, codes) -> torch.Tensor:
    """(N+1, L+1) trie node of every item's prefix of length t (t = 0..L; row 0 = padding item)."""
    codes = torch.as_tensor(codes, dtype=torch.long)
    nodes = torch.zeros(codes.shape, dtype=torch.long)
    for t in range(1, codes.shape[1]):
        nodes[1:, t] = trie.step_children(t - 1)[nodes[1:, t - 1], codes[1:, t - 1]].long()
    return nodes


def head_log_prob(model: CausalSidGenerator, h: torch.Tensor, tokens: torch.Tensor) -> torch.Tensor:
    """log p(ID) of full token tuples (P, L+1) given states (P, d): the teacher-forced sum of the
    per-level log-probabilities (the quantity the beam search ranks by)."""
    items = model.trie.walk(tokens)
    logits = model.head.teacher_forced(h, tokens, model.code_emb.weight, model.item_nodes[items])
    return sum(torch.log_softmax(lg, -1).gather(
        1, (tokens[:, l] - int(model.vocab.offsets[l]))[:, None])[:, 0] for l, lg in enumerate(logits))
