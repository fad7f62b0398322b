"""Data-parallel training on one box: the process-group plumbing every trainer shares.

One code path runs single-process or under torchrun, chosen by the environment torchrun sets
(WORLD_SIZE, RANK, LOCAL_RANK); no flag:

    python scripts/train_sasrec.py --gin_file ... --run_dir runs/x
    torchrun --nproc_per_node=2 scripts/train_sasrec.py --gin_file ... --run_dir runs/x

The contract the trainers keep, so that a run on W processes reproduces the single-process run with
the same global batch (up to float summation order):

- every rank builds the same global batch (same seeds, same order); `shard` gives this rank the rows
  r, r+W, r+2W, ... of it (strided, so length-sorted batches split evenly);
- each rank's mean loss is multiplied by `loss_weight(local, global)` = W * local / global, so the
  gradient DDP averages over ranks is the gradient of the global mean;
- model parameters are wrapped by `wrap` (DistributedDataParallel); the step's whole forward
  computation runs inside the wrapper's forward, so DDP sees it and all-reduces every gradient;
- evaluation is sharded over users and the per-user ranks are gathered (`all_gather_rows`) on every
  rank, so metrics, early stopping and model selection are identical on all ranks;
- only rank 0 writes files (`is_main`) and prints (other ranks' stdout goes to /dev/null);
- `finish` ends a distributed process (see there for why it calls os._exit).

NCCL on GPU (one GPU per process, cuda:LOCAL_RANK), gloo on CPU.
"""
from __future__ import annotations

import os
import sys
from typing import Callable

import numpy as np
import torch
import torch.distributed as dist


def _env_world() -> int:
    return int(os.environ.get("WORLD_SIZE", "1"))


def init_from_env() -> bool:
    """Join the process group when started by torchrun with WORLD_SIZE > 1; True when distributed.

    Idempotent. Chooses NCCL when CUDA is available (and pins this process to cuda:LOCAL_RANK),
    gloo otherwise.
    """
    if is_distributed():
        return True
    if _env_world() <= 1:
        return False
    use_cuda = torch.cuda.is_available()
    if use_cuda:
        torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", "0")))
    dist.init_process_group(backend="nccl" if use_cuda else "gloo")
    if dist.get_rank() != 0:
        # The scripts print summaries; W copies of every line help nobody. stderr (errors, tqdm,
        # which the trainers disable off rank 0 anyway) stays.
        sys.stdout = open(os.devnull, "w")
    return True


def is_distributed() -> bool:
    return dist.is_available() and dist.is_initialized()


def world_size() -> int:
    return dist.get_world_size() if is_distributed() else 1


def rank() -> int:
    return dist.get_rank() if is_distributed() else 0


def is_main() -> bool:
    """True on the one process that logs, checkpoints and writes artifacts."""
    return rank() == 0


def barrier() -> None:
    if is_distributed():
        dist.barrier()


def _comm_device() -> torch.device:
    """NCCL moves only CUDA tensors; gloo only CPU ones."""
    if is_distributed() and dist.get_backend() == "nccl":
        return torch.device("cuda", torch.cuda.current_device())
    return torch.device("cpu")


# ------------------------------------------------------------------------------------ batches
def shard(idx: np.ndarray) -> np.ndarray:
    """This rank's part of a global batch: elements r, r+W, r+2W, ... (may be empty)."""
    return np.asarray(idx)[rank()::world_size()]


def loss_weight(local_count: int, global_count: int) -> float:
    """Factor on this rank's mean loss so that DDP's gradient average is the global mean's gradient:
    (1/W) sum_r W n_r/N grad(mean_r) = grad(sum_r n_r mean_r / N)."""
    return world_size() * local_count / max(1, global_count)


# ------------------------------------------------------------------------------------ model
class _Closure(torch.nn.Module):
    """Runs `fn(model, *args)` as its forward, so a step that calls model methods other than
    forward (encode, an item table read by the loss, ...) still runs inside DDP's forward and gets
    its gradients all-reduced."""

    def __init__(self, model: torch.nn.Module):
        super().__init__()
        self.model = model

    def forward(self, fn: Callable, *args):
        return fn(self.model, *args)


class StepRunner:
    """`runner(fn, *args)` = `fn(model, *args)`, under DistributedDataParallel when distributed.

    Call it once per optimizer step and call backward once on (a function of) its output.
    find_unused_parameters: set it when some parameter may get no gradient in a step (e.g. a model
    whose loss decides which heads to use); it costs one graph traversal per step.
    """

    def __init__(self, model: torch.nn.Module, find_unused_parameters: bool = False):
        self.model = model
        self.ddp = None
        if is_distributed():
            from torch.nn.parallel import DistributedDataParallel as DDP
            p = next(model.parameters())
            device_ids = [p.device.index] if p.device.type == "cuda" else None
            # Construction broadcasts rank 0's parameters and buffers, so ranks start identical
            # even where initialisation is not bit-reproducible across processes (e.g. faiss).
            self.ddp = DDP(_Closure(model), device_ids=device_ids,
                           find_unused_parameters=find_unused_parameters)

    def __call__(self, fn: Callable, *args):
        if self.ddp is None:
            return fn(self.model, *args)
        return self.ddp(fn, *args)


def wrap(model: torch.nn.Module, find_unused_parameters: bool = False) -> StepRunner:
    return StepRunner(model, find_unused_parameters)


# ------------------------------------------------------------------------------------ collectives
def all_reduce_sum(values) -> np.ndarray:
    """Element-wise sum over ranks of a small float64 vector (identity when single-process)."""
    arr = np.asarray(values, dtype=np.float64)
    if not is_distributed():
        return arr
    t = torch.from_numpy(arr.copy()).to(_comm_device())
    dist.all_reduce(t)
    return t.cpu().numpy()


def all_reduce_tensor_sum(t: torch.Tensor) -> torch.Tensor:
    """Sum over ranks of a tensor (returns a new tensor on t's device)."""
    if not is_distributed():
        return t
    c = t.detach().to(_comm_device()).clone()
    dist.all_reduce(c)
    return c.to(t.device)


def any_rank(flag: bool) -> bool:
    """True on every rank if `flag` is True on some rank (keeps time-based stops in lockstep)."""
    return bool(all_reduce_sum([1.0 if flag else 0.0])[0] > 0)


def all_gather_rows(local, positions: np.ndarray, total: int):
    """Reassemble rows that ranks computed for different positions of a global array.

    local: (n_r, ...) numpy array or tensor, the rows of this rank, for global `positions` (n_r,).
    Returns the (total, ...) array (same type, dtype and device as `local`) on every rank; each
    position must be covered by exactly one rank. Single-process: `local` placed at `positions`.
    """
    is_np = isinstance(local, np.ndarray)
    t = torch.from_numpy(np.ascontiguousarray(local)) if is_np else local.detach()
    pos = torch.as_tensor(np.asarray(positions, dtype=np.int64))
    if not is_distributed():
        out = t.new_empty((total, *t.shape[1:]))
        out[pos.to(t.device)] = t
        return out.numpy() if is_np else out
    dev = _comm_device()
    counts = [torch.zeros(1, dtype=torch.int64, device=dev) for _ in range(world_size())]
    dist.all_gather(counts, torch.tensor([len(pos)], dtype=torch.int64, device=dev))
    counts = [int(c) for c in counts]
    most = max(counts)
    pad_rows = t.new_zeros((most, *t.shape[1:])).to(dev)
    pad_rows[:len(pos)] = t.to(dev)
    pad_pos = torch.zeros(most, dtype=torch.int64, device=dev)
    pad_pos[:len(pos)] = pos.to(dev)
    rows = [torch.empty_like(pad_rows) for _ in counts]
    poss = [torch.empty_like(pad_pos) for _ in counts]
    dist.all_gather(rows, pad_rows)
    dist.all_gather(poss, pad_pos)
    out = t.new_empty((total, *t.shape[1:])).to(dev)
    for c, r, p in zip(counts, rows, poss):
        out[p[:c]] = r[:c]
    out = out.to(t.device)
    return out.numpy() if is_np else out


# ------------------------------------------------------------------------------------ shutdown
def finish(exit_code: int = 0) -> None:
    """End a distributed process: barrier, destroy the process group, flush, then os._exit.

    With torch 2.13 CPU + gloo about 1 in 6 two-process runs aborted at interpreter exit
    ("terminate called without an active exception", SIGABRT) after a correct run, from teardown
    order of gloo's threads; leaving with os._exit right after destroy_process_group removed it
    (15 of 15 runs). os._exit skips Python's own cleanup, so stdout/stderr are flushed (and the
    rank>0 /dev/null stdout closed) first. A no-op when not distributed.
    """
    if not is_distributed():
        return
    try:
        dist.barrier()
        dist.destroy_process_group()
    finally:
        _flush_and_exit(exit_code)


def _flush_and_exit(exit_code: int) -> None:
    """Flush stdout/stderr (closing rank>0's /dev/null stdout), then os._exit: Python's own
    cleanup is skipped, so nothing else would flush them."""
    for stream in (sys.stdout, sys.stderr, sys.__stdout__, sys.__stderr__):
        try:
            stream.flush()
        except (OSError, ValueError, AttributeError):
            pass
    if sys.stdout is not sys.__stdout__:
        try:
            sys.stdout.close()
        except OSError:
            pass
    os._exit(exit_code)


def abort(exit_code: int) -> None:
    """End a distributed process after a user error: destroy the process group without a barrier
    (the other ranks may not have failed alike), flush, os._exit. A no-op when not distributed."""
    if not is_distributed():
        return
    try:
        dist.destroy_process_group()
    except Exception:  # noqa: BLE001  (teardown after an error: leave in any case)
        pass
    _flush_and_exit(exit_code)
