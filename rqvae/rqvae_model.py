"""The RQ-VAE (SPEC §4): MLP encoder -> residual quantizer -> MLP decoder, and its tokenizer, which
trains it on the item embeddings and returns each item's L codes.

loss = ||x - dec(z_q)||^2 + sum_l (||sg(r_l) - e_l||^2 + beta ||r_l - sg(e_l)||^2)
Training is deterministic for a fixed seed: seeded shuffles, seeded faiss k-means initialisation,
torch deterministic algorithms.

Under torchrun (retrieval.distributed) every rank draws the same global batch, runs every W-th row
of it inside DistributedDataParallel, and the dead-code statistics (code counts, the batch's
residuals) are gathered from all ranks, so every rank resets the same codes to the same vectors.
The RQ-VAE is small (items x embedding dim) and trains in float32 on CPU; bf16 would change the
nearest-code assignments.
"""
from __future__ import annotations

import time
from dataclasses import dataclass

import gin
import numpy as np
import torch
from torch import nn

from retrieval import distributed
from retrieval.errors import RecError
from retrieval.training import set_seed
from rqvae.quantizer import ResidualQuantizer
from rqvae.residual_kmeans import check_input


def mlp(dims: list[int]) -> nn.Sequential:
    layers: list[nn.Module] = []
    for i, (a, b) in enumerate(zip(dims[:-1], dims[1:])):
        layers.append(nn.Linear(a, b))
        if i < len(dims) - 2:
            layers.append(nn.SiLU())
    return nn.Sequential(*layers)


@dataclass
class RQVAEOutput:
    """recon: (B, d_in); codes: (B, L); loss = recon_loss + quant_loss; residuals: (B, L, latent)."""

    recon: torch.Tensor
    codes: torch.Tensor
    residuals: torch.Tensor
    loss: torch.Tensor
    recon_loss: torch.Tensor
    quant_loss: torch.Tensor


class RQVAE(nn.Module):
    def __init__(self, input_dim: int, hidden_dims=(512, 256, 128), latent_dim: int = 32,
                 levels: int = 3, codebook_size: int = 256, beta: float = 0.25,
                 gradient: str = "rotation"):
        super().__init__()
        dims = [input_dim, *hidden_dims, latent_dim]
        self.encoder = mlp(dims)
        self.decoder = mlp(dims[::-1])
        self.quantizer = ResidualQuantizer(levels, codebook_size, latent_dim, beta, gradient)

    def forward(self, x: torch.Tensor) -> RQVAEOutput:
        z = self.encoder(x)                                     # (B, latent)
        q = self.quantizer(z)
        recon = self.decoder(q.quantized)                       # (B, d_in)
        recon_loss = ((recon - x) ** 2).sum(-1).mean()
        return RQVAEOutput(recon, q.codes, q.residuals, recon_loss + q.loss, recon_loss, q.loss)


@gin.configurable
class RQVAETokenizer:
    """Trains an RQVAE on (N, d) item embeddings for `steps` AdamW steps, returns (N, L) codes.

    kmeans_init_size: items (first of the shuffled order) whose latents initialise the codebooks;
    dead codes (unused over `reset_every` steps) are re-seeded until `reset_until` of training.
    """

    name = "rqvae"

    def __init__(self, levels: int = 3, codebook_size: int = 256, seed: int = 0,
                 hidden_dims=(512, 256, 128), latent_dim: int = 32, beta: float = 0.25,
                 gradient: str = "rotation", steps: int = 2000, batch_size: int = 512,
                 lr: float = 1e-3, weight_decay: float = 1e-4, lr_schedule: str = "cosine",
                 kmeans_init_size: int = 1024, reset_every: int = 100, reset_until: float = 1.0,
                 log_every: int = 100):
        self.levels, self.codebook_size, self.seed = int(levels), int(codebook_size), int(seed)
        self.model_args = dict(hidden_dims=tuple(hidden_dims), latent_dim=int(latent_dim),
                               levels=self.levels, codebook_size=self.codebook_size,
                               beta=float(beta), gradient=gradient)
        self.steps, self.batch_size = int(steps), int(batch_size)
        self.lr, self.weight_decay = float(lr), float(weight_decay)
        if lr_schedule not in ("constant", "cosine"):
            raise RecError(f"RQVAETokenizer.lr_schedule = {lr_schedule!r} is unknown; choose "
                           "'constant' or 'cosine'")
        self.lr_schedule = lr_schedule
        self.kmeans_init_size = int(kmeans_init_size)
        self.reset_every, self.reset_until, self.log_every = int(reset_every), float(reset_until), int(log_every)
        self.model: RQVAE | None = None
        self.reconstruction: np.ndarray | None = None
        self.history: list[dict] = []

    def _batches(self, n: int, gen: torch.Generator):
        """Endless stream of index batches: a fresh seeded permutation per epoch."""
        bs = min(self.batch_size, n)
        while True:
            perm = torch.randperm(n, generator=gen)
            for s in range(0, n - bs + 1, bs):  # full batches only: stable loss scale
                yield perm[s:s + bs]

    def fit(self, x: np.ndarray) -> np.ndarray:
        """(N, d) embeddings -> (N, L) int64 codes; afterwards .model, .reconstruction, .history."""
        x_np = check_input(x, self.codebook_size, self.name)
        was_deterministic = torch.are_deterministic_algorithms_enabled()
        torch.use_deterministic_algorithms(True)
        try:
            return self._fit(torch.from_numpy(x_np))
        finally:
            torch.use_deterministic_algorithms(was_deterministic)

    def _fit(self, x: torch.Tensor) -> np.ndarray:
        set_seed(self.seed)
        n = x.shape[0]
        model = RQVAE(x.shape[1], **self.model_args)
        self.model = model
        gen = torch.Generator().manual_seed(self.seed)
        batches = self._batches(n, gen)

        init_idx = torch.randperm(n, generator=torch.Generator().manual_seed(self.seed + 1))
        init_idx = init_idx[: max(self.kmeans_init_size, self.codebook_size)]
        with torch.no_grad():
            model.quantizer.init_kmeans(model.encoder(x[init_idx]), self.seed)
        runner = distributed.wrap(model)        # after the init: DDP broadcasts rank 0's codebooks
        world = distributed.world_size()

        codebook = [model.quantizer.codebooks]
        others = [p for name, p in model.named_parameters() if not name.startswith("quantizer.")]
        opt = torch.optim.AdamW([{"params": others, "weight_decay": self.weight_decay},
                                 {"params": codebook, "weight_decay": 0.0}], lr=self.lr)
        # cosine decay to 10% of lr: the codebooks settle before the final assignment
        sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: 1.0 if self.lr_schedule == "constant"
                                                  else 0.1 + 0.45 * (1 + np.cos(np.pi * s / self.steps)))
        counts = torch.zeros(self.levels, self.codebook_size, dtype=torch.long)
        self.history = []
        t0, window = time.perf_counter(), []
        model.train()
        for step in range(1, self.steps + 1):
            idx = next(batches)                                   # the global batch (B,)
            mine = distributed.shard(np.arange(len(idx)))         # this rank's rows of it
            weight = distributed.loss_weight(len(mine), len(idx))
            rows = idx[mine] if len(mine) else idx[:1]            # an idle rank runs a weight-0 row
            out = runner(lambda m, xb: m(xb), x[rows])
            opt.zero_grad(set_to_none=True)
            (out.loss * weight if weight != 1.0 else out.loss).backward()
            opt.step()
            sched.step()
            if weight:
                for l in range(self.levels):
                    counts[l] += torch.bincount(out.codes[:, l], minlength=self.codebook_size)
            # n_r/N-weighted, so the sum over ranks is the global batch mean
            window.append([v * weight / world for v in
                           (out.loss.item(), out.recon_loss.item(), out.quant_loss.item())])
            n_reset, usage = 0, None
            if step % self.reset_every == 0:
                total = distributed.all_reduce_tensor_sum(counts)   # codes used by any rank
                if step <= self.reset_until * self.steps:
                    residuals = distributed.all_gather_rows(out.residuals[:len(mine)], mine, len(idx))
                    n_reset = model.quantizer.reset_dead_codes(total, residuals, gen)
                usage = (total > 0).float().mean(1).tolist()
                counts.zero_()
            if step % self.log_every == 0 or step == self.steps:
                m = distributed.all_reduce_sum(np.mean(window, axis=0))
                self.history.append({"step": step, "loss": float(m[0]), "recon_loss": float(m[1]),
                                     "quant_loss": float(m[2]), "dead_codes_reset": n_reset,
                                     "batch_usage": usage,
                                     "seconds": round(time.perf_counter() - t0, 2)})
                window = []
        return self.encode(x)

    @torch.no_grad()
    def encode(self, x: torch.Tensor, chunk: int = 8192) -> np.ndarray:
        """Codes (N, L) of the trained model; also sets .reconstruction (N, d) float32."""
        model = self.model.eval()
        codes, recon = [], []
        for s in range(0, x.shape[0], chunk):
            out = model(x[s:s + chunk])
            codes.append(out.codes)
            recon.append(out.recon)
        self.reconstruction = torch.cat(recon).numpy()
        return torch.cat(codes).numpy().astype(np.int64)

    def weights(self) -> dict:
        return {k: v.detach().clone() for k, v in self.model.state_dict().items()}
