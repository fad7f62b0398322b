"""Training utilities shared by every trainer: seeds, JSON-lines metrics, early stopping and
crash-safe checkpoints (model + optimizer + scheduler + RNG + data position, safetensors + JSON).

A checkpoint is two files written atomically: `<name>.safetensors` (model and optimizer tensors)
and `<name>.json` (RNG states, scheduler state, the trainer's state with its signature). The
JSON is written last, so a checkpoint exists only when both are complete.
"""
from __future__ import annotations

import contextlib
import json
import os
import random
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from retrieval.core.errors import RecError
from retrieval.core.io import load_tensors, read_json, save_tensors, write_json, write_text

LAST, BEST = "checkpoints/last", "checkpoints/best"     # inside a run directory


def set_seed(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


class MetricsLog:
    """Append-only JSON lines (one record per line, flushed)."""

    def __init__(self, path: Path | None):
        self.path = Path(path) if path else None

    def write(self, **record: Any) -> None:
        if self.path is None:
            return
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with open(self.path, "a", encoding="utf-8") as f:
            f.write(json.dumps(record, default=float) + "\n")

    def read(self) -> list[dict]:
        if self.path is None or not self.path.exists():
            return []
        return [json.loads(line) for line in self.path.read_text().splitlines() if line.strip()]


@dataclass
class EarlyStopping:
    """Stop after `patience` evaluations without improvement of a higher-is-better metric."""

    patience: int = 5
    best: float = -float("inf")
    best_step: int = -1
    bad_rounds: int = 0

    def update(self, value: float, step: int) -> bool:
        """Record `value`; return True when it is a new best."""
        if value > self.best:
            self.best, self.best_step, self.bad_rounds = value, step, 0
            return True
        self.bad_rounds += 1
        return False

    @property
    def should_stop(self) -> bool:
        return self.bad_rounds >= self.patience

    def state(self) -> dict:
        return {"patience": self.patience, "best": self.best, "best_step": self.best_step,
                "bad_rounds": self.bad_rounds}


def _flatten_optimizer(opt: torch.optim.Optimizer) -> tuple[dict, dict]:
    """Optimizer state as (tensors, JSON-able rest)."""
    sd = opt.state_dict()
    tensors, scalars = {}, {}
    for pid, st in sd["state"].items():
        for k, v in st.items():
            if isinstance(v, torch.Tensor):
                tensors[f"optim.{pid}.{k}"] = v
            else:
                scalars[f"{pid}.{k}"] = v
    return tensors, {"param_groups": sd["param_groups"], "scalars": scalars}


def _restore_optimizer(opt: torch.optim.Optimizer, tensors: dict, meta: dict) -> None:
    state: dict = {}
    for name, v in tensors.items():
        if name.startswith("optim."):
            _, pid, k = name.split(".", 2)
            state.setdefault(int(pid), {})[k] = v
    for key, v in meta["scalars"].items():
        pid, k = key.split(".", 1)
        state.setdefault(int(pid), {})[k] = v
    opt.load_state_dict({"state": state, "param_groups": meta["param_groups"]})


def _rng_state() -> dict:
    np_state = np.random.get_state()
    return {"python": repr(random.getstate()),
            "numpy": [np_state[0], np_state[1].tolist(), *np_state[2:]],
            "torch": torch.get_rng_state().tolist()}


def _set_rng_state(s: dict, where: Path) -> None:
    import ast
    try:
        random.setstate(ast.literal_eval(s["python"]))
        n = s["numpy"]
        np.random.set_state((n[0], np.array(n[1], dtype=np.uint32), *n[2:]))
        torch.set_rng_state(torch.tensor(s["torch"], dtype=torch.uint8))
    except (KeyError, TypeError, ValueError, SyntaxError, RuntimeError, OverflowError) as e:
        first = str(e).splitlines()[0] if str(e) else ""
        raise RecError(f"{where}: the RNG state is damaged ({type(e).__name__}: {first}); the run "
                       "cannot be resumed exactly: restore the file or start a fresh --run_dir") from None


def read_checkpoint_json(path: Path) -> dict:
    """A checkpoint's JSON, checked to be an object with an object `state` and `rng`."""
    meta = read_json(path)
    if not isinstance(meta, dict) or not isinstance(meta.get("state", {}), dict) \
            or not isinstance(meta.get("rng", {}), dict):
        found = ({type(None): "null", list: "an array", str: "a string", bool: "a boolean", int: "a number",
                  float: "a number"}.get(type(meta), "an object with a damaged 'state' or 'rng'"))
        raise RecError(f"{path}: not a checkpoint (expected a JSON object, found {found}); the file is "
                       "damaged: restore it or start a fresh --run_dir")
    return meta


def save_checkpoint(path_stem: Path, model: torch.nn.Module, optimizer=None, scheduler=None,
                    state: dict | None = None) -> None:
    """Write `<stem>.safetensors` then `<stem>.json` atomically."""
    path_stem = Path(path_stem)
    tensors = {f"model.{k}": v for k, v in model.state_dict().items()}
    meta: dict = {"state": state or {}, "rng": _rng_state()}
    if optimizer is not None:
        t, m = _flatten_optimizer(optimizer)
        tensors.update(t)
        meta["optimizer"] = m
    if scheduler is not None:
        meta["scheduler"] = scheduler.state_dict()
    # The two files are replaced one after the other, so a kill between the renames would pair new
    # weights with the old JSON. The JSON therefore names its weights by digest, and the weights it
    # describes are kept as <stem>.prev.safetensors until the new JSON is in place.
    weights, prev = path_stem.with_suffix(".safetensors"), _prev_path(path_stem)
    digest = _digest(tensors)
    if weights.is_file():
        os.replace(weights, prev)
    save_tensors(weights, tensors, metadata={"digest": digest})
    meta["weights_digest"] = digest
    write_json(path_stem.with_suffix(".json"), meta)
    prev.unlink(missing_ok=True)


def _prev_path(path_stem: Path) -> Path:
    return path_stem.with_name(path_stem.name + ".prev.safetensors")


def _digest(tensors: dict) -> str:
    import hashlib
    h = hashlib.sha256()
    for k in sorted(tensors):
        t = tensors[k].detach().cpu().contiguous()
        h.update(k.encode())
        h.update(str(t.dtype).encode())
        h.update(t.reshape(-1).view(torch.uint8).numpy().tobytes() if t.numel() else b"")
    return h.hexdigest()[:32]


def _weights_for(path_stem: Path, want: str | None) -> Path:
    """The weights file the checkpoint's JSON describes (see save_checkpoint)."""
    weights = path_stem.with_suffix(".safetensors")
    if want is None:                                   # written before digests existed
        return weights
    from safetensors import safe_open
    damaged = False
    for cand in (weights, _prev_path(path_stem)):
        if cand.is_file():
            try:
                with safe_open(str(cand), "pt") as f:
                    if (f.metadata() or {}).get("digest") == want:
                        return cand
            except Exception:                          # damaged file: try the other one
                damaged = damaged or cand == weights
    if damaged:
        return weights                                 # load_tensors names the damage
    raise RecError(f"{weights}: no weights file matches {path_stem}.json (the run was stopped while "
                   "writing this checkpoint and its weights are gone); start a fresh --run_dir")


def load_checkpoint(path_stem: Path, model: torch.nn.Module, optimizer=None, scheduler=None,
                    restore_rng: bool = True) -> dict:
    """Restore what save_checkpoint wrote; returns the extra `state` dict."""
    path_stem = Path(path_stem)
    meta = read_checkpoint_json(path_stem.with_suffix(".json"))
    tensors = load_tensors(_weights_for(path_stem, meta.get("weights_digest")))
    model_sd = {k[len("model."):]: v for k, v in tensors.items() if k.startswith("model.")}
    try:
        model.load_state_dict(model_sd, strict=True)
    except RuntimeError as e:
        first = str(e).splitlines()[0] if str(e) else type(e).__name__
        raise RecError(f"{path_stem}.safetensors does not fit this model ({first}); it comes from "
                       "another model/dataset configuration") from None
    if optimizer is not None and "optimizer" in meta:
        _restore_optimizer(optimizer, tensors, meta["optimizer"])
    if scheduler is not None and "scheduler" in meta:
        scheduler.load_state_dict(meta["scheduler"])
    if restore_rng:
        _set_rng_state(meta.get("rng", {}), path_stem.with_suffix(".json"))
    return meta.get("state", {})


def autocast(device: torch.device, enabled: bool = True):
    """bf16 autocast of a forward on CUDA; a no-op elsewhere (CPU trains in float32)."""
    if enabled and device.type == "cuda":
        return torch.autocast("cuda", dtype=torch.bfloat16)
    return contextlib.nullcontext()


def load_best(run_dir: Path, model: torch.nn.Module, signature: dict) -> dict:
    """Load checkpoints/best into `model` (refused when made for another signature); its state."""
    best = Path(run_dir) / BEST
    if not best.with_suffix(".json").is_file():
        raise RecError(f"{run_dir}: training finished without a validation checkpoint; check the "
                       "trainer's eval_every / eval_every_steps")
    check_signature(best.with_suffix(".json"), signature)
    return load_checkpoint(best, model, restore_rng=False)


def check_signature(path: Path, expected: dict) -> None:
    """Refuse a checkpoint made for another model, dataset or batching, naming the field."""
    got = read_checkpoint_json(path).get("state", {}).get("signature")
    if not isinstance(got, dict):
        raise RecError(f"{path}: not a checkpoint of this project's trainer (no signature); use a "
                       "fresh --run_dir")
    if (got.get("dataset"), got.get("dataset_fingerprint")) != (expected.get("dataset"),
                                                                 expected.get("dataset_fingerprint")):
        raise RecError(f"{path}: checkpoint was trained on dataset {got.get('dataset')!r} (fingerprint "
                       f"{got.get('dataset_fingerprint')}) but this run loads {expected.get('dataset')!r} "
                       f"(fingerprint {expected.get('dataset_fingerprint')}); use a fresh --run_dir")
    for key, want in expected.items():
        if _jsonable(got.get(key)) != _jsonable(want):
            raise RecError(f"{path}: checkpoint has {key} = {got.get(key)} but this config has {want}; "
                           "use the matching config or a fresh --run_dir")


def _jsonable(value: Any) -> Any:
    return json.loads(json.dumps(value, sort_keys=True, default=str))


def truncate_log(log: MetricsLog, step: int) -> None:
    """Keep only the metrics records up to `step` (the resume point; -1 = none), atomically."""
    if log.path is None or not log.path.is_file():
        return
    records = [r for r in log.read() if r.get("step", 0) <= step]
    write_text(log.path, "".join(json.dumps(r, default=float) + "\n" for r in records))
