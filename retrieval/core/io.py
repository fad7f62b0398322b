"""Atomic artifact writing and content fingerprints.

Every artifact is written to a temporary file in the destination folder and renamed into place, so a
crash or an error never leaves a half-written file under the final name.
"""
from __future__ import annotations

import hashlib
import json
import os
import re
import tempfile
from pathlib import Path
from typing import Any, Callable, Mapping

import numpy as np

from retrieval.core.errors import RecError


def atomic_write(path: str | os.PathLike, write: Callable[[str], None]) -> Path:
    """Call ``write(tmp_path)`` then rename the temporary file to ``path``."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        try:
            os.fchmod(fd, 0o666 & ~_umask())    # mkstemp makes 0600; an artifact gets open()'s mode
        finally:
            os.close(fd)
        write(tmp)
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
    return path


def _umask() -> int:
    """The process umask, read without changing it where Linux allows (os.umask can only swap it)."""
    try:
        with open("/proc/self/status", encoding="ascii") as f:
            for line in f:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    except (OSError, ValueError, IndexError):
        pass
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def remove_stale_temps(folder: str | os.PathLike) -> list[Path]:
    """Delete temporary files an earlier, killed process left mid-write under `folder` (recursive).

    A SIGKILL during `atomic_write` cannot run the cleanup, so a run that resumes sweeps them first.
    """
    folder = Path(folder)
    stale = [p for p in folder.rglob(".*.tmp") if p.is_file()] if folder.is_dir() else []
    for p in stale:
        p.unlink(missing_ok=True)
    return stale


def write_text(path, text: str) -> Path:
    def _w(tmp):
        with open(tmp, "w", encoding="utf-8") as f:
            f.write(text)
    return atomic_write(path, _w)


def _json_default(o):
    if isinstance(o, np.generic):
        return o.item()
    if isinstance(o, np.ndarray):
        return o.tolist()
    if isinstance(o, Path):
        return str(o)
    raise TypeError(f"not JSON serialisable: {type(o).__name__}")


def json_text(obj: Any) -> str:
    """The text write_json writes: indented JSON, numpy values and paths as plain JSON."""
    return json.dumps(obj, indent=2, sort_keys=False, default=_json_default) + "\n"


def write_json(path, obj: Any) -> Path:
    return write_text(path, json_text(obj))


def read_json(path) -> Any:
    path = Path(path)
    if not path.is_file():
        raise RecError(f"{path}: file not found")
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise RecError(f"{path}: not valid JSON ({e}); the file is corrupted or truncated, re-create it")


def save_tensors(path, tensors: Mapping[str, Any], metadata: Mapping[str, str] | None = None) -> Path:
    """Save a dict of torch tensors (or numpy arrays) as safetensors, atomically."""
    import torch
    from safetensors.torch import save_file

    clean = {}
    for k, v in tensors.items():
        t = torch.as_tensor(v) if not isinstance(v, torch.Tensor) else v
        clean[k] = t.detach().cpu().contiguous()

    def write(tmp):
        try:
            save_file(clean, tmp, metadata=dict(metadata or {}))
        except Exception as e:  # noqa: BLE001  (safetensors reports I/O failures as its own error)
            code = re.search(r"os error (\d+)", str(e))
            if code is None:
                raise
            n = int(code.group(1))
            raise OSError(n, os.strerror(n), str(path)) from None     # e.g. a full disk: ENOSPC
    return atomic_write(path, write)


def load_tensors(path) -> dict:
    """Load a safetensors file into CPU torch tensors, with a clear error when it is damaged."""
    from safetensors.torch import load_file

    path = Path(path)
    if not path.is_file():
        raise RecError(f"{path}: file not found")
    try:
        return load_file(str(path))
    except Exception as e:  # safetensors raises several types for damaged headers/bodies
        raise RecError(f"{path}: cannot read safetensors ({type(e).__name__}: {e}); "
                       "the file is corrupted or truncated, delete it and re-run") from None


def fingerprint(*parts: Any) -> str:
    """A short, stable hash of arrays, strings and JSON-able values."""
    h = hashlib.sha256()
    for p in parts:
        if isinstance(p, np.ndarray):
            h.update(str(p.dtype).encode())
            h.update(str(p.shape).encode())
            h.update(np.ascontiguousarray(p).tobytes())
        elif isinstance(p, bytes):
            h.update(p)
        else:
            h.update(json.dumps(p, sort_keys=True, default=_json_default).encode())
        h.update(b"\x00")
    return h.hexdigest()[:16]


def file_fingerprint(path) -> str:
    """Hash of a file's size, mtime-independent content (sha256 of bytes, streamed)."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 22), b""):
            h.update(chunk)
    return h.hexdigest()[:16]
