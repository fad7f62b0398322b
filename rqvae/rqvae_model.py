"""The RQ-VAE (docs/protocol.md §4): MLP encoder -> residual quantizer -> MLP decoder, and its tokenizer, which
trains it on the item embeddings and returns each item's L codes.

loss = ||x - dec(z_q)||^2 + sum_l (||sg(r_l) - e_l||^2 + beta ||r_l - sg(e_l)||^2)
Training is deterministic for a fixed seed: seeded shuffles, seeded faiss k-means initialisation,
torch deterministic algorithms.

Under torchrun (retrieval.core.distributed) every rank draws the same global batch, runs every W-th row
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

from retrieval.core import distributed
from retrieval.core.errors import RecError
from retrieval.core.checkpoints import set_seed
from retrieval.core.trainer import StepOutput, Trainer, TrainingTask, local_rows
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
        init_idx = torch.randperm(n, generator=torch.Generator().manual_seed(self.seed + 1))
        init_idx = init_idx[: max(self.kmeans_init_size, self.codebook_size)]
        with torch.no_grad():
            model.quantizer.init_kmeans(model.encoder(x[init_idx]), self.seed)
        # The one training loop, in memory (no run directory): `steps` steps over full batches;
        # DDP wraps the model after the init, so it broadcasts rank 0's codebooks.
        task = RQVAETask(self, model, x, gen)
        per_epoch = max(1, n // min(self.batch_size, n))
        trainer = Trainer(num_epochs=-(-self.steps // per_epoch), max_steps=self.steps,
                          batch_size=self.batch_size, lr=self.lr, weight_decay=self.weight_decay,
                          grad_clip=None, amp=False, progress=False, device="cpu", seed=self.seed)
        trainer.name = "RQVAETokenizer"
        trainer.run(task, None)
        self.history = task.history
        return self.encode(x)

    @torch.no_grad()
    def encode(self, x, chunk: int = 8192) -> np.ndarray:
        """Codes (N, L) of the trained model for embeddings x (array or tensor; seen or unseen
        items); also sets .reconstruction (N, d) float32."""
        if self.model is None:
            raise RecError("RQVAETokenizer.encode: the tokenizer is not fitted")
        if isinstance(x, np.ndarray):
            x = torch.from_numpy(np.ascontiguousarray(x, dtype=np.float32))
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


class RQVAETask(TrainingTask):
    """The RQ-VAE's batches (a fresh seeded permutation per epoch, full batches only: a stable loss
    scale), its step and its dead-code resets, for the one training loop."""

    def __init__(self, tok: RQVAETokenizer, model: RQVAE, x: torch.Tensor, gen: torch.Generator):
        self.tok, self.model, self.x, self.gen = tok, model, x, gen
        self.counts = torch.zeros(tok.levels, tok.codebook_size, dtype=torch.long)
        self.history: list[dict] = []
        self.window: list = []
        self.t0 = time.perf_counter()
        self.last = None                   # (RQVAEOutput, this rank's rows, global batch, weight)

    def signature(self) -> dict:
        return {"model": self.tok.model_args, "items": int(self.x.shape[0])}

    def param_groups(self):
        codebook = [self.model.quantizer.codebooks]
        others = [p for name, p in self.model.named_parameters() if not name.startswith("quantizer.")]
        return [{"params": others, "weight_decay": self.tok.weight_decay},
                {"params": codebook, "weight_decay": 0.0}]

    def lr_factor(self, total_steps: int):
        # cosine decay to 10% of lr: the codebooks settle before the final assignment
        steps = self.tok.steps
        if self.tok.lr_schedule == "constant":
            return lambda s: 1.0
        return lambda s: 0.1 + 0.45 * (1 + np.cos(np.pi * s / steps))

    def epoch_batches(self, epoch: int, rng: np.random.Generator) -> list:
        n = self.x.shape[0]
        bs = min(self.tok.batch_size, n)
        perm = torch.randperm(n, generator=self.gen)
        return [perm[s:s + bs] for s in range(0, n - bs + 1, bs)]

    def step(self, idx: torch.Tensor, runner) -> StepOutput:
        mine, weight = local_rows(len(idx))                   # this rank's rows of the global batch
        out = runner(lambda m, xb: m(xb), self.x[idx[mine]])
        self.last = (out, mine if weight else mine[:0], len(idx), weight)
        return StepOutput(out.loss * weight if weight != 1.0 else out.loss, out.loss.item(),
                          len(mine) if weight else 0)

    def after_step(self, step: int, _: StepOutput) -> None:
        tok, (out, mine, batch, weight) = self.tok, self.last
        if weight:
            for level in range(tok.levels):
                self.counts[level] += torch.bincount(out.codes[:, level], minlength=tok.codebook_size)
        # n_r/N-weighted, so the sum over ranks is the global batch mean
        world = distributed.world_size()
        self.window.append([v * weight / world for v in
                            (out.loss.item(), out.recon_loss.item(), out.quant_loss.item())])
        n_reset, usage = 0, None
        if step % tok.reset_every == 0:
            total = distributed.all_reduce_tensor_sum(self.counts)   # codes used by any rank
            if step <= tok.reset_until * tok.steps:
                residuals = distributed.all_gather_rows(out.residuals[:len(mine)], mine, batch)
                n_reset = self.model.quantizer.reset_dead_codes(total, residuals, self.gen)
            usage = (total > 0).float().mean(1).tolist()
            self.counts.zero_()
        if step % tok.log_every == 0 or step == tok.steps:
            m = distributed.all_reduce_sum(np.mean(self.window, axis=0))
            self.history.append({"step": step, "loss": float(m[0]), "recon_loss": float(m[1]),
                                 "quant_loss": float(m[2]), "dead_codes_reset": n_reset,
                                 "batch_usage": usage, "seconds": round(time.perf_counter() - self.t0, 2)})
            self.window = []
