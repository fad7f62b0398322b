"""The thin shell every script shares: parse gin, make the run directory, report errors cleanly.

    python scripts/X.py --gin_file configs/a.gin [--gin_file b.gin] [--gin_param 'k=v'] --run_dir DIR

A user error (RecError, a gin typo, a missing config file) prints one line on stderr and exits 2.
The operative gin config is written into the run directory when the job finishes.
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Callable

import gin

from retrieval.errors import RecError
from retrieval.io import write_text


def parser(description: str) -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=description)
    p.add_argument("--gin_file", action="append", default=[], help="gin config file (repeatable)")
    p.add_argument("--gin_param", action="append", default=[], help="gin binding 'k=v' (repeatable)")
    p.add_argument("--run_dir", default=None, help="output directory of this run")
    return p


def _gin_error(e: Exception, params: list[str] | None = None) -> str:
    msg = " ".join(str(e).split())
    # A syntax error in a --gin_param reports only its line in the joined bindings; name the binding.
    if isinstance(e, SyntaxError) and e.filename is None and e.lineno and params:
        lines = "\n".join(params).splitlines()
        if 1 <= e.lineno <= len(lines):
            msg += f" in --gin_param {lines[e.lineno - 1].strip()!r}"
    return f"gin config error: {msg}"


def parse_gin(files: list[str], params: list[str]) -> None:
    for f in files:
        if not Path(f).is_file():
            raise RecError(f"gin file {f} not found; pass an existing file to --gin_file "
                           "(frozen configs live under configs/<dataset>/)")
    gin.clear_config()
    try:
        gin.parse_config_files_and_bindings(files, params, finalize_config=False)
    except (ValueError, KeyError, TypeError, SyntaxError, IOError) as e:
        raise RecError(_gin_error(e, params)) from None


def git_commit() -> str:
    try:
        root = Path(__file__).resolve().parents[1]
        out = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=root, capture_output=True,
                             text=True, timeout=5)
        return out.stdout.strip() or "unknown"
    except (OSError, subprocess.SubprocessError):
        return "unknown"


def run(main: Callable[[argparse.Namespace, Path | None], None], description: str,
        extra_args: Callable[[argparse.ArgumentParser], None] | None = None,
        require_run_dir: bool = True, keep_on_error: bool = False) -> None:
    """Parse arguments and gin, call `main(args, run_dir)`, turn user errors into one line + exit 2.

    A run directory this call created is removed on error, unless `keep_on_error` (for pipelines
    whose finished sub-runs are worth keeping for reuse) and something was written into it.

    Under torchrun (WORLD_SIZE > 1) every process runs `main`; the process group is joined before
    it, only rank 0 writes config.gin, and the process ends through `distributed.finish`."""
    p = parser(description)
    if extra_args:
        extra_args(p)
    args = p.parse_args()
    run_dir = Path(args.run_dir) if args.run_dir else None
    created = False
    from retrieval import distributed          # imports torch: only scripts that run get it
    distributed.init_from_env()
    try:
        if require_run_dir and run_dir is None:
            raise RecError("--run_dir is required: the directory this run writes its outputs to")
        parse_gin(args.gin_file, args.gin_param)
        if run_dir is not None and not run_dir.exists():
            run_dir.mkdir(parents=True, exist_ok=True)      # exist_ok: other ranks race here
            created = True
        main(args, run_dir)
        if run_dir is not None and distributed.is_main():
            write_text(run_dir / "config.gin", gin.operative_config_str())
    except RecError as e:
        # A pipeline keeps what it finished for reuse, but not a directory it left empty.
        _cleanup(run_dir, created and (not keep_on_error or not any(run_dir.iterdir())))
        # gin appends "In call to configurable ..." on a new line to errors raised inside a
        # configurable; a RecError message is one line by construction, so keep only that.
        print(f"error: {str(e).splitlines()[0] if str(e) else type(e).__name__}", file=sys.stderr)
        distributed.abort(2)                   # under torchrun: leave the process group first
        sys.exit(2)
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        sys.exit(130)
    distributed.finish()


def _cleanup(run_dir: Path | None, created: bool) -> None:
    """Remove a run directory this invocation created if the run failed before finishing.

    A directory that already holds checkpoints is kept: a failure mid-training (e.g. a NaN loss)
    must leave the last good checkpoint for --resume.
    """
    if created and run_dir is not None and run_dir.exists() and not (run_dir / "checkpoints").is_dir():
        shutil.rmtree(run_dir, ignore_errors=True)


def dump(obj) -> str:
    return json.dumps(obj, indent=2, default=str)


def env_info() -> dict:
    import platform

    import torch
    info = {"python": platform.python_version(), "torch": torch.__version__,
            "machine": platform.machine(), "cpus": os.cpu_count(), "git_commit": git_commit()}
    if torch.cuda.is_available():
        info["gpu"] = torch.cuda.get_device_name(0)
    return info
