"""Similarity functions between a sequence state and item embeddings, for the scorer head (docs/protocol.md §5).

Every similarity is an nn.Module with forms that agree exactly:
  forward(x, y)       pairwise: x (..., d), y (..., d), broadcastable leading dims -> (...)
  all_items(x, items) full catalogue: x (B, d), items (N, d) -> (B, N), one matmul, for score_all
  factors(x, items)   (q (B, e), k (N, e)) with all_items = q @ k.T: every similarity here is a dot
                      product after maps of each side, which is what lets the full-softmax loss
                      (retrieval.scorers.losses.full_softmax_cross_entropy, dot only) train any of them

Select one by name with `make_similarity(name, dim)` (gin: `make_similarity.name = 'cosine'`);
per-function settings are bound on the class, e.g. `CosineSimilarity.temperature = 0.05`.
"""
from __future__ import annotations

import math

import gin
import torch
import torch.nn.functional as F
from torch import nn

from retrieval.core.errors import RecError


class Similarity(nn.Module):
    """Base: pairwise `forward` and full-catalogue `all_items`."""

    def forward(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def all_items(self, x: torch.Tensor, items: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def factors(self, x: torch.Tensor, items: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        raise NotImplementedError


@gin.configurable
class DotSimilarity(Similarity):
    """<x, y>: the SASRec default."""

    def forward(self, x, y):
        return (x * y).sum(-1)

    def all_items(self, x, items):
        return x @ items.T

    def factors(self, x, items):
        return x, items


@gin.configurable
class CosineSimilarity(Similarity):
    """cos(x, y) / temperature. Cosine lies in [-1, 1], so a temperature < 1 is needed for a
    sigmoid/softmax loss to reach confident scores; `learn_temperature` makes 1/temperature a
    parameter (stored as a log so it stays positive)."""

    def __init__(self, temperature: float = 0.1, learn_temperature: bool = False, eps: float = 1e-8):
        super().__init__()
        if temperature <= 0:
            raise RecError(f"CosineSimilarity.temperature must be > 0, got {temperature}")
        log_inv = torch.tensor(-math.log(temperature), dtype=torch.float32)
        if learn_temperature:
            self.log_inv_temperature = nn.Parameter(log_inv)
        else:
            self.register_buffer("log_inv_temperature", log_inv)
        self.eps = eps

    def forward(self, x, y):
        return (F.normalize(x, dim=-1, eps=self.eps) * F.normalize(y, dim=-1, eps=self.eps)).sum(-1) \
            * self.log_inv_temperature.exp()

    def all_items(self, x, items):
        return F.normalize(x, dim=-1, eps=self.eps) @ F.normalize(items, dim=-1, eps=self.eps).T \
            * self.log_inv_temperature.exp()

    def factors(self, x, items):
        return (F.normalize(x, dim=-1, eps=self.eps) * self.log_inv_temperature.exp(),
                F.normalize(items, dim=-1, eps=self.eps))


@gin.configurable
class ScaledDotSimilarity(Similarity):
    """<x, y> / sqrt(d): keeps logits at unit scale as d grows (as in attention)."""

    def forward(self, x, y):
        return (x * y).sum(-1) / math.sqrt(x.shape[-1])

    def all_items(self, x, items):
        return x @ items.T / math.sqrt(x.shape[-1])

    def factors(self, x, items):
        return x / math.sqrt(x.shape[-1]), items


@gin.configurable
class BilinearSimilarity(Similarity):
    """x^T W y with a learned (d, d) W, initialised to the identity so training starts from dot."""

    def __init__(self, dim: int):
        super().__init__()
        self.weight = nn.Parameter(torch.eye(dim))

    def forward(self, x, y):
        return ((x @ self.weight) * y).sum(-1)

    def all_items(self, x, items):
        return (x @ self.weight) @ items.T

    def factors(self, x, items):
        return x @ self.weight, items


@gin.configurable
class FusionSimilarity(Similarity):
    """alpha * dot + beta * cos + gamma * scaled_dot with learned scalars alpha, beta, gamma.

    Note dot and scaled dot are collinear, so alpha and gamma act together as one learned scale of
    the dot product; beta mixes in the length-insensitive cosine term.
    """

    def __init__(self, alpha: float = 1.0, beta: float = 1.0, gamma: float = 1.0, eps: float = 1e-8):
        super().__init__()
        self.alpha = nn.Parameter(torch.tensor(float(alpha)))
        self.beta = nn.Parameter(torch.tensor(float(beta)))
        self.gamma = nn.Parameter(torch.tensor(float(gamma)))
        self.eps = eps

    def _combine(self, dot, cos, d):
        return self.alpha * dot + self.beta * cos + self.gamma * dot / math.sqrt(d)

    def forward(self, x, y):
        cos = (F.normalize(x, dim=-1, eps=self.eps) * F.normalize(y, dim=-1, eps=self.eps)).sum(-1)
        return self._combine((x * y).sum(-1), cos, x.shape[-1])

    def all_items(self, x, items):
        cos = F.normalize(x, dim=-1, eps=self.eps) @ F.normalize(items, dim=-1, eps=self.eps).T
        return self._combine(x @ items.T, cos, x.shape[-1])

    def factors(self, x, items):
        # [(alpha + gamma/sqrt(d)) x, beta x/|x|] · [y, y/|y|]: the three terms as one dot product.
        scale = self.alpha + self.gamma / math.sqrt(x.shape[-1])
        return (torch.cat([x * scale, F.normalize(x, dim=-1, eps=self.eps) * self.beta], dim=-1),
                torch.cat([items, F.normalize(items, dim=-1, eps=self.eps)], dim=-1))


@gin.configurable
class MultiHeadSimilarity(Similarity):
    """Split d into `num_heads` heads, take the dot product per head, combine the heads by their mean
    ("mean") or by learned weights ("learned", initialised to the mean). With `project=True`, x and y
    first pass through learned (d, d) maps (initialised to the identity), as in the design notes.

    A weighted sum of per-head dots is one dot of the head-scaled x with y, which is how the
    full-catalogue form stays a single matmul.
    """

    def __init__(self, dim: int, num_heads: int = 4, combine: str = "mean", project: bool = False):
        super().__init__()
        if num_heads < 1 or dim % num_heads:
            raise RecError(f"MultiHeadSimilarity.num_heads={num_heads} must divide the hidden size {dim}")
        if combine not in ("mean", "learned"):
            raise RecError(f"MultiHeadSimilarity.combine={combine!r} is unknown; use 'mean' or 'learned'")
        self.num_heads, self.head_dim = num_heads, dim // num_heads
        weights = torch.full((num_heads,), 1.0 / num_heads)
        if combine == "learned":
            self.head_weights = nn.Parameter(weights)
        else:
            self.register_buffer("head_weights", weights)
        self.q_proj = self.k_proj = None
        if project:
            self.q_proj, self.k_proj = nn.Linear(dim, dim, bias=False), nn.Linear(dim, dim, bias=False)
            nn.init.eye_(self.q_proj.weight)
            nn.init.eye_(self.k_proj.weight)

    def _project(self, x, y):
        if self.q_proj is not None:
            x, y = self.q_proj(x), self.k_proj(y)
        return x, y

    def head_scores(self, x, y):
        """Per-head dot products: (..., num_heads)."""
        x, y = self._project(x, y)
        x = x.unflatten(-1, (self.num_heads, self.head_dim))           # (..., h, d/h)
        y = y.unflatten(-1, (self.num_heads, self.head_dim))
        return (x * y).sum(-1)

    def forward(self, x, y):
        return self.head_scores(x, y) @ self.head_weights

    def all_items(self, x, items):
        x, items = self._project(x, items)
        scale = self.head_weights.repeat_interleave(self.head_dim)       # (d,)
        return (x * scale) @ items.T

    def factors(self, x, items):
        x, items = self._project(x, items)
        return x * self.head_weights.repeat_interleave(self.head_dim), items


SIMILARITIES = {
    "dot": lambda dim: DotSimilarity(),
    "cosine": lambda dim: CosineSimilarity(),
    "scaled_dot": lambda dim: ScaledDotSimilarity(),
    "bilinear": lambda dim: BilinearSimilarity(dim),
    "fusion": lambda dim: FusionSimilarity(),
    "multi_head": lambda dim: MultiHeadSimilarity(dim),
}


@gin.configurable
def make_similarity(name: str = "dot", dim: int = 64) -> Similarity:
    """The similarity module called `name` for hidden size `dim` (the model passes its own dim)."""
    if name not in SIMILARITIES:
        raise RecError(f"make_similarity.name={name!r} is unknown; choose one of "
                       f"{', '.join(SIMILARITIES)}")
    module = SIMILARITIES[name](dim)
    module.name = name                   # recorded in the model's config and results.json
    return module
