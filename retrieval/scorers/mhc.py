"""Manifold-Constrained Hyper-Connections (mHC, DeepSeek-AI 2025) as a residual wrapper (docs/protocol.md §5).

The residual stream is widened to n copies: x has shape (B, L, n, d). Around every sublayer F
(attention or feed-forward) the streams are mixed as

    x_{l+1} = H_res · x_l + H_postᵀ · F(H_pre · x_l)

with H_pre = sigmoid(·) (1×n, reads the sublayer input), H_post = 2·sigmoid(·) (1×n, writes the
sublayer output back) and H_res = Sinkhorn-Knopp(exp(·)) (n×n, doubly stochastic: the residual
mixing neither amplifies nor damps the signal, which is what keeps deep stacks stable). Each
H = static parameter + α · (input-dependent projection of the RMS-normalised, flattened streams),
with α a learned gate initialised small so training starts near the static mapping.

The static parts are initialised so that, with identical streams after `expand`, one mHC step equals
the plain residual x + F(x) after `collapse` (mean over streams): H_pre = 1/n each, H_post = 1 each,
and H_res rows/columns summing to 1.

`PlainResidual` is the ordinary x + F(x) with the same calling convention, so a block is written
once and `use_mhc=False` is exactly the plain residual network.
"""
from __future__ import annotations

import math
from typing import Callable

import torch
from torch import nn

Sublayer = Callable[[torch.Tensor], torch.Tensor]


def _sinkhorn_iterate(logits: torch.Tensor, iters: int, tol: float | None = None,
                      max_iters: int = 0) -> torch.Tensor:
    """`iters` alternate row/column normalisations of exp(logits); then, if `tol` is given, more
    (checked every 10, at most `max_iters` in all) until every row sums to 1 within `tol` (columns
    are exact after each column step)."""
    # Subtracting the max is exact (Sinkhorn is invariant to a global scale) and keeps exp finite;
    # the clamp keeps every entry > 0 so no row or column sum can vanish (no eps needed).
    m = torch.exp((logits - logits.amax(dim=(-2, -1), keepdim=True)).clamp(min=-50.0))
    done = 0
    while True:
        for _ in range(iters if done == 0 else 10):
            m = m / m.sum(dim=-1, keepdim=True)                          # rows sum to 1
            m = m / m.sum(dim=-2, keepdim=True)                          # columns sum to 1
        done += iters if done == 0 else 10
        if tol is None or done >= max_iters or float((m.sum(-1) - 1).abs().max()) <= tol:
            return m


class _SinkhornKnopp(torch.autograd.Function):
    """Sinkhorn-Knopp with the implicit-function gradient of the projection.

    Backpropagating through 20 unrolled iterations costs ~80 small kernels per call per direction
    and dominated the mHC variants' training time. The projection P = diag(u) exp(L) diag(v) has a
    closed-form gradient instead: for an upstream gradient G,
        dL = P ⊙ (G − α 1ᵀ − 1 βᵀ),  with  α + P β = (P ⊙ G) 1  and  Pᵀ α + β = (P ⊙ G)ᵀ 1,
    i.e. G minus the row/column shifts that do not change P. Eliminating α leaves the n×n system
    (I − PᵀP) β = b − Pᵀ a, singular only along 1 (a shift of α against β); adding 11ᵀ/n pins it.
    The test suite checks this against autograd through many unrolled iterations.
    """

    @staticmethod
    def forward(ctx, logits, iters, tol, max_iters):
        p = _sinkhorn_iterate(logits, iters, tol, max_iters)
        ctx.save_for_backward(p)
        return p

    @staticmethod
    def backward(ctx, grad):
        p, = ctx.saved_tensors
        n = p.shape[-1]
        pg = p * grad
        a, b = pg.sum(-1), pg.sum(-2)                                     # (..., n) row / column sums
        eye = torch.eye(n, dtype=p.dtype, device=p.device)
        ptp = (p[..., :, :, None] * p[..., :, None, :]).sum(-3)           # Pᵀ P, (..., n, n)
        system = eye - ptp + 1.0 / n
        rhs = b - (p * a[..., :, None]).sum(-2)                           # b − Pᵀ a
        beta = torch.linalg.solve(system, rhs)                            # (..., n)
        alpha = a - (p * beta[..., None, :]).sum(-1)                      # a − P β
        return p * (grad - alpha.unsqueeze(-1) - beta.unsqueeze(-2)), None, None, None


def sinkhorn_knopp(logits: torch.Tensor, iters: int = 20, tol: float | None = 1e-4,
                   max_iters: int = 100) -> torch.Tensor:
    """Project exp(logits) (..., n, n) onto the doubly stochastic matrices (rows and columns sum to
    1): `iters` alternate row/column normalisations, continued up to `max_iters` only while some
    row is off by more than `tol` (20 suffice for the bounded logits mHC uses, except in rare
    near-degenerate cases). Computed in float32 even under autocast: divisions in bf16 drift."""
    return _SinkhornKnopp.apply(logits.float(), iters, tol, max_iters)


class PlainResidual(nn.Module):
    """x + F(x): the standard residual, same interface as `HyperConnection`."""

    def forward(self, x: torch.Tensor, sublayer: Sublayer) -> torch.Tensor:
        return x + sublayer(x)


class HyperConnection(nn.Module):
    """One mHC residual around one sublayer; x: (B, L, n, d) -> (B, L, n, d)."""

    def __init__(self, dim: int, streams: int = 4, sinkhorn_iters: int = 20,
                 res_init_diag: float = 1.0, gate_init: float = 0.01, res_logit_bound: float = 2.0):
        super().__init__()
        n = streams
        self.n, self.dim, self.sinkhorn_iters = n, dim, sinkhorn_iters
        self.res_logit_bound = res_logit_bound
        # Static parts (see module docstring for why these values).
        self.pre_bias = nn.Parameter(torch.full((n,), -math.log(n - 1.0) if n > 1 else 10.0))
        self.post_bias = nn.Parameter(torch.zeros(n))
        self.res_bias = nn.Parameter(res_init_diag * torch.eye(n))   # leans to identity: streams stay distinct
        # Input-dependent parts: one projection of the normalised streams to all 2n + n² logits.
        self.norm = nn.RMSNorm(n * dim, elementwise_affine=False)
        self.proj = nn.Linear(n * dim, 2 * n + n * n, bias=False)
        nn.init.normal_(self.proj.weight, std=0.02)
        self.pre_gate = nn.Parameter(torch.tensor(gate_init))
        self.post_gate = nn.Parameter(torch.tensor(gate_init))
        self.res_gate = nn.Parameter(torch.tensor(gate_init))

    def mappings(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """H_pre (B, L, n), H_post (B, L, n), H_res (B, L, n, n) for streams x (B, L, n, d)."""
        n = self.n
        dyn = self.proj(self.norm(x.flatten(-2)))                         # (B, L, 2n + n²)
        h_pre = torch.sigmoid(self.pre_gate * dyn[..., :n] + self.pre_bias)
        h_post = 2.0 * torch.sigmoid(self.post_gate * dyn[..., n:2 * n] + self.post_bias)
        res_logits = self.res_gate * dyn[..., 2 * n:].unflatten(-1, (n, n)) + self.res_bias
        # Soft clamp to [-b, b]: Sinkhorn converges slowly on near-degenerate patterns of large
        # logits; with b = 2 the diagonal can still reach 0.95 of the mass.
        b = self.res_logit_bound
        res_logits = b * torch.tanh(res_logits / b)
        h_res = sinkhorn_knopp(res_logits, self.sinkhorn_iters).to(x.dtype)
        return h_pre, h_post, h_res

    def forward(self, x: torch.Tensor, sublayer: Sublayer) -> torch.Tensor:
        h_pre, h_post, h_res = self.mappings(x)
        # Per-token n×n and 1×n products written as broadcasts: as batched matmuls they would be
        # B·L tiny GEMMs, several times slower on CPU.
        inp = (h_pre.to(x.dtype)[..., None] * x).sum(-2)                 # (B, L, d)
        out = sublayer(inp)                                               # (B, L, d)
        mixed = (h_res[..., None] * x[..., None, :, :]).sum(-2)           # (B, L, n, d)
        return mixed + h_post.to(out.dtype)[..., None] * out[..., None, :]


def expand_streams(x: torch.Tensor, streams: int) -> torch.Tensor:
    """(B, L, d) -> (B, L, n, d): every stream starts as a copy of the embedding."""
    return x.unsqueeze(-2).expand(*x.shape[:-1], streams, x.shape[-1]).contiguous()


def collapse_streams(x: torch.Tensor) -> torch.Tensor:
    """(B, L, n, d) -> (B, L, d): the mean keeps the scale of a single residual stream."""
    return x.mean(dim=-2)
