"""Residual vector quantizer of the RQ-VAE (docs/protocol.md §4).

Level l picks the codeword e_l nearest to the residual r_l (r_1 = z, r_{l+1} = r_l - sg(e_l)).
Loss per level: ||sg(r_l) - e_l||^2 (moves the codebook) + beta ||r_l - sg(e_l)||^2 (commitment).
The quantized vector sum_l e_l reaches the decoder with a gradient path to z by either
  'straight_through': z + sg(z_q - z) (the gradient is copied unchanged), or
  'rotation':         the rotation trick (Fifty et al., 2024): z_q is written as a fixed rotation +
                      rescaling of z, so the gradient that reaches z is rotated like z was.
Codebooks are k-means-initialised from data and dead codes are re-seeded from current residuals.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from retrieval.core.errors import RecError

GRADIENTS = ("straight_through", "rotation")


def rotate_to(src: torch.Tensor, tgt: torch.Tensor, eps: float = 1e-8) -> torch.Tensor:
    """Value tgt, gradient through src: (|tgt|/|src|) R src with R the rotation taking src to tgt.

    R = I - 2 w w^T + 2 q u^T with u = src/|src|, q = tgt/|tgt|, w = (u + q)/|u + q|, all
    treated as constants; R u = q, so the forward value is exactly tgt (up to rounding).
    src, tgt: (B, d).
    """
    src_norm = src.norm(dim=-1, keepdim=True).clamp_min(eps)
    tgt_norm = tgt.norm(dim=-1, keepdim=True).clamp_min(eps)
    u = (src / src_norm).detach()
    q = (tgt / tgt_norm).detach()
    w = nn.functional.normalize(u + q, dim=-1, eps=eps).detach()
    rotated = (src - 2 * (src * w).sum(-1, keepdim=True) * w
               + 2 * (src * u).sum(-1, keepdim=True) * q)
    return rotated * (tgt_norm / src_norm).detach()


@dataclass
class QuantizerOutput:
    """codes: (B, L) int64; quantized: (B, dim) sum of codewords with a gradient path to z;
    residuals: (B, L, dim) input of each level (detached); loss: scalar codebook + commitment."""

    codes: torch.Tensor
    quantized: torch.Tensor
    residuals: torch.Tensor
    loss: torch.Tensor


class ResidualQuantizer(nn.Module):
    def __init__(self, levels: int, codebook_size: int, dim: int, beta: float = 0.25,
                 gradient: str = "rotation"):
        super().__init__()
        if gradient not in GRADIENTS:
            raise RecError(f"RQVAETokenizer.gradient = {gradient!r} is unknown; choose one of: "
                           f"{', '.join(GRADIENTS)}")
        self.levels, self.codebook_size, self.dim = levels, codebook_size, dim
        self.beta, self.gradient = float(beta), gradient
        self.codebooks = nn.Parameter(torch.zeros(levels, codebook_size, dim))  # (L, K, dim)

    @torch.no_grad()
    def init_kmeans(self, z: torch.Tensor, seed: int) -> None:
        """Residual k-means on a batch of latents (B >= K) sets every level's codebook."""
        from rqvae.residual_kmeans import kmeans, nearest

        r = z.detach().cpu().numpy().astype(np.float32)
        for l in range(self.levels):
            c = kmeans(r, self.codebook_size, seed + l)
            r = r - c[nearest(r, c)]
            self.codebooks[l].copy_(torch.from_numpy(c))

    def nearest_codes(self, r: torch.Tensor, level: int) -> torch.Tensor:
        cb = self.codebooks[level].detach()                               # (K, dim)
        d = (r * r).sum(-1, keepdim=True) - 2 * r @ cb.T + (cb * cb).sum(-1)[None, :]  # (B, K)
        return d.argmin(-1)

    def forward(self, z: torch.Tensor) -> QuantizerOutput:
        r = z
        codes, residuals = [], []
        loss = z.new_zeros(())
        total = torch.zeros_like(z)
        for l in range(self.levels):
            idx = self.nearest_codes(r.detach(), l)                       # (B,)
            e = self.codebooks[l][idx]                                    # (B, dim), grad to codebook
            loss = loss + ((r.detach() - e) ** 2).sum(-1).mean() \
                + self.beta * ((r - e.detach()) ** 2).sum(-1).mean()
            residuals.append(r.detach())
            codes.append(idx)
            total = total + e.detach()
            r = r - e.detach()
        if self.gradient == "rotation":
            quantized = rotate_to(z, total)
        else:
            quantized = z + (total - z).detach()
        return QuantizerOutput(torch.stack(codes, 1), quantized, torch.stack(residuals, 1), loss)

    @torch.no_grad()
    def reset_dead_codes(self, counts: torch.Tensor, residuals: torch.Tensor,
                         generator: torch.Generator) -> int:
        """Re-seed codes unused since the last reset (counts (L, K) == 0) with distinct random
        residuals of the current batch at their level (residuals (B, L, dim)); returns how many."""
        n_reset = 0
        for l in range(self.levels):
            dead = torch.nonzero(counts[l] == 0).flatten()
            if len(dead) == 0:
                continue
            b = residuals.shape[0]
            pick = torch.randperm(b, generator=generator)[: len(dead)]
            if len(pick) < len(dead):  # batch smaller than the dead set: sample with replacement
                pick = torch.randint(0, b, (len(dead),), generator=generator)
            self.codebooks[l, dead] = residuals[pick, l]
            n_reset += len(dead)
        return n_reset
