"""User-ID collaborative-filtering baselines: BPR-MF (Rendle et al., 2009) and NeuMF, the NCF model of
He et al. (2017). Both implement retrieval.evaluation.interfaces.Scorer and are trained by retrieval.baselines.cf_trainer.

Neither reads the history's order: a user is a row of an embedding table. Users are the split's rows
0..U-1 (HistoryBatch.users), so the table is indexed by them directly; items are 1..N (0 = padding).
The models are fitted on the training interactions only, and the same fitted model serves the
validation and the test stage (the validation item, part of the test input, is never trained on;
it is excluded from the test candidates like every history item).

    BPR-MF   s(u, i) = p_u · q_i + b_i
    NeuMF    s(u, i) = w · [p_u ⊙ q_i ; MLP([p'_u ; q'_i])]      (GMF and MLP towers, own embeddings)

Training needs the scores of (user, item) pairs, `pair_scores(users (P,), items (P, k))`; evaluation
scores every item, `score_all(batch)`. NeuMF's first MLP layer, a linear map of the concatenation
[p'_u ; q'_i], is written as A p'_u + B q'_i, so scoring all items computes B q'_i once per item and
only the per-pair layers after it per (user, item); users are processed in chunks of `score_chunk`
to bound the (chunk, N+1, width) activations.
"""
from __future__ import annotations

import gin
import torch
from torch import nn

from retrieval.core import gin_values
from retrieval.data.batch import HistoryBatch
from retrieval.core.errors import RecError


def _check_users(users: torch.Tensor, num_users: int, name: str) -> None:
    if len(users) and int(users.max()) >= num_users:
        raise RecError(f"{name}: user row {int(users.max())} is outside the {num_users} users it was "
                       "built for; evaluate it on the split it was trained on")


@gin.configurable
class BPRMF(nn.Module):
    """Matrix factorisation: s(u, i) = p_u · q_i + b_i. dim: embedding width. init_std: N(0, std)
    initialisation of the embeddings (biases start at 0)."""

    variant = "bpr-mf"

    def __init__(self, num_users: int, num_items: int, dim: int = 64, init_std: float = 0.1):
        super().__init__()
        num_users, num_items, dim = (gin_values.integer(f"BPRMF.{k}", v) for k, v in (
            ("num_users", num_users), ("num_items", num_items), ("dim", dim)))
        init_std = gin_values.positive_number("BPRMF.init_std", init_std)
        self.num_users, self.num_items = num_users, num_items
        self.config = dict(dim=dim, init_std=init_std)
        self.user_emb = nn.Embedding(num_users, dim)
        self.item_emb = nn.Embedding(num_items + 1, dim, padding_idx=0)
        self.item_bias = nn.Embedding(num_items + 1, 1, padding_idx=0)
        nn.init.normal_(self.user_emb.weight, std=init_std)
        nn.init.normal_(self.item_emb.weight, std=init_std)
        nn.init.zeros_(self.item_bias.weight)
        with torch.no_grad():
            self.item_emb.weight[0].zero_()

    def num_parameters(self) -> int:
        return sum(p.numel() for p in self.parameters())

    def pair_scores(self, users: torch.Tensor, items: torch.Tensor) -> torch.Tensor:
        """Scores (P, k) of users (P,) with items (P, k)."""
        u = self.user_emb(users)[:, None, :]                             # (P, 1, d)
        return (u * self.item_emb(items)).sum(-1) + self.item_bias(items)[..., 0]

    def embedding_norms(self, users: torch.Tensor, items: torch.Tensor) -> torch.Tensor:
        """(P,) squared norms of the embedding rows a batch uses (user + its k items), for L2."""
        return self.user_emb(users).pow(2).sum(-1) + self.item_emb(items).pow(2).sum((-2, -1))

    def score_all(self, batch: HistoryBatch) -> torch.Tensor:
        """Scores (B, N+1) of every item for the batch's users (column 0 is padding)."""
        _check_users(batch.users, self.num_users, "BPRMF")
        u = self.user_emb(batch.users.to(self.user_emb.weight.device))   # (B, d)
        return u @ self.item_emb.weight.T + self.item_bias.weight[:, 0]

    def forward(self, batch: HistoryBatch) -> torch.Tensor:
        return self.score_all(batch)


@gin.configurable
class NeuMF(nn.Module):
    """NeuMF: a GMF tower (p_u ⊙ q_i, width mf_dim) and an MLP tower on [p'_u ; q'_i] with layer
    widths mlp_dims (mlp_dims[0] = the concatenation, so each MLP embedding has mlp_dims[0] / 2
    entries; ReLU between layers), fused by one linear output. The paper's default shape is
    mf_dim = 8 ... 64 and mlp_dims = (64, 32, 16, 8). score_chunk: users per chunk in score_all.
    """

    variant = "ncf"

    def __init__(self, num_users: int, num_items: int, mf_dim: int = 32,
                 mlp_dims: tuple = (64, 32, 16, 8), init_std: float = 0.01, score_chunk: int = 64):
        super().__init__()
        num_users, num_items, mf_dim, score_chunk = (gin_values.integer(f"NeuMF.{k}", v) for k, v in (
            ("num_users", num_users), ("num_items", num_items), ("mf_dim", mf_dim),
            ("score_chunk", score_chunk)))
        if not isinstance(mlp_dims, (list, tuple)) or len(mlp_dims) < 2:
            raise RecError(f"NeuMF.mlp_dims = {mlp_dims!r} must list at least two layer widths, e.g. "
                           "(64, 32, 16, 8); the first is the [user; item] input width")
        mlp_dims = tuple(gin_values.integer("NeuMF.mlp_dims[]", d) for d in mlp_dims)
        if mlp_dims[0] % 2:
            raise RecError(f"NeuMF.mlp_dims[0] = {mlp_dims[0]} must be even: it is the user and the "
                           "item MLP embeddings side by side")
        init_std = gin_values.positive_number("NeuMF.init_std", init_std)
        self.num_users, self.num_items, self.score_chunk = num_users, num_items, score_chunk
        self.config = dict(mf_dim=mf_dim, mlp_dims=list(mlp_dims), init_std=init_std)
        half = mlp_dims[0] // 2
        self.gmf_user = nn.Embedding(num_users, mf_dim)
        self.gmf_item = nn.Embedding(num_items + 1, mf_dim, padding_idx=0)
        self.mlp_user = nn.Embedding(num_users, half)
        self.mlp_item = nn.Embedding(num_items + 1, half, padding_idx=0)
        self.first_user = nn.Linear(half, mlp_dims[1])                    # [p'; q'] -> width 1,
        self.first_item = nn.Linear(half, mlp_dims[1], bias=False)        # split by input half
        self.layers = nn.ModuleList(nn.Linear(a, b) for a, b in zip(mlp_dims[1:-1], mlp_dims[2:]))
        self.out = nn.Linear(mf_dim + mlp_dims[-1], 1)
        for emb in (self.gmf_user, self.gmf_item, self.mlp_user, self.mlp_item):
            nn.init.normal_(emb.weight, std=init_std)
        for lin in (self.first_user, self.first_item, *self.layers, self.out):
            nn.init.xavier_uniform_(lin.weight)
            if lin.bias is not None:
                nn.init.zeros_(lin.bias)
        with torch.no_grad():
            self.gmf_item.weight[0].zero_()
            self.mlp_item.weight[0].zero_()

    @property
    def item_emb(self) -> nn.Embedding:
        """The GMF item table (what a sampler that needs item vectors would read)."""
        return self.gmf_item

    def num_parameters(self) -> int:
        return sum(p.numel() for p in self.parameters())

    def _mlp_tail(self, h: torch.Tensor) -> torch.Tensor:
        """Layers after the first, on the first layer's pre-activation h (..., width 1)."""
        h = torch.relu(h)
        for layer in self.layers:
            h = torch.relu(layer(h))
        return h

    def pair_scores(self, users: torch.Tensor, items: torch.Tensor) -> torch.Tensor:
        """Scores (P, k) of users (P,) with items (P, k)."""
        gmf = self.gmf_user(users)[:, None, :] * self.gmf_item(items)                  # (P, k, mf)
        h = self.first_user(self.mlp_user(users))[:, None, :] + self.first_item(self.mlp_item(items))
        return self.out(torch.cat([gmf, self._mlp_tail(h)], -1))[..., 0]               # (P, k)

    def embedding_norms(self, users: torch.Tensor, items: torch.Tensor) -> torch.Tensor:
        """(P,) squared norms of the embedding rows a batch uses (user + its k items), for L2."""
        return (self.gmf_user(users).pow(2).sum(-1) + self.mlp_user(users).pow(2).sum(-1)
                + self.gmf_item(items).pow(2).sum((-2, -1)) + self.mlp_item(items).pow(2).sum((-2, -1)))

    def score_all(self, batch: HistoryBatch) -> torch.Tensor:
        """Scores (B, N+1) of every item for the batch's users (column 0 is padding)."""
        _check_users(batch.users, self.num_users, "NeuMF")
        users = batch.users.to(self.gmf_user.weight.device)
        w = self.out.weight[0]                                            # (mf + last,)
        mf = self.gmf_user.weight.shape[1]
        gmf = (self.gmf_user(users) * w[:mf]) @ self.gmf_item.weight.T    # (B, N+1)
        item_part = self.first_item(self.mlp_item.weight)                 # (N+1, width 1)
        user_part = self.first_user(self.mlp_user(users))                 # (B, width 1)
        mlp = torch.empty_like(gmf)
        for s in range(0, len(users), self.score_chunk):
            h = user_part[s:s + self.score_chunk, None, :] + item_part[None]   # (c, N+1, width 1)
            mlp[s:s + self.score_chunk] = self._mlp_tail(h) @ w[mf:]           # (c, N+1)
        return gmf + mlp + self.out.bias

    def forward(self, batch: HistoryBatch) -> torch.Tensor:
        return self.score_all(batch)


CF_MODELS = {"bpr-mf": BPRMF, "ncf": NeuMF}


@gin.configurable
def make_cf_model(num_users: int, num_items: int, kind: str = "bpr-mf"):
    """The user-ID model `kind`, its other arguments bound in gin under its class name."""
    if kind not in CF_MODELS:
        raise RecError(f"make_cf_model.kind = {kind!r} is unknown; use one of {', '.join(CF_MODELS)}")
    return CF_MODELS[kind](num_users=num_users, num_items=num_items)
