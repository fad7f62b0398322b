"""The thin shell every script shares: parse gin, make the run directory, report errors cleanly.

    python scripts/X.py --gin_file configs/a.gin [--gin_file b.gin] [--gin_param 'k=v'] --run_dir DIR

A user error prints one line on stderr and exits 2: a RecError, a gin typo or wrong-typed value, a
missing config file, a path that cannot be written (a --run_dir that is a file, lies below a file or
is read-only; a full disk). Any other exception is a bug: one line naming its type, exit 1 (set
SEMID_TRACEBACK=1 for the traceback). Either way a run directory this call created is removed.
While a script runs, `<run_dir>/.lock` keeps a second process from writing the same directory.
Gin includes resolve against the working directory, the folders above each --gin_file and the
repository root, so a script started elsewhere can use `--gin_file /abs/path/configs/x.gin`.
The operative gin config is written into the run directory when the job finishes.
"""
from __future__ import annotations

import argparse
import errno
import logging
import os
import re
import shlex
import shutil
import subprocess
import sys
import traceback
from pathlib import Path
from typing import Callable

import gin

from retrieval.core.errors import RecError
from retrieval.core.io import write_text
from retrieval.core.run_lock import RunDirLock

REPO = Path(__file__).resolve().parents[2]
EXIT_USER_ERROR, EXIT_BUG = 2, 1
_SEARCH_PATHS: list[str] = []          # added to gin's include search path in this process


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
    _add_search_paths(files)
    # gin logs "Path not found: ..." (root logger) before it raises for a missing include; the
    # exception says the same, so the log line would only make the error two lines.
    logging.disable(logging.ERROR)
    try:
        gin.parse_config_files_and_bindings(files, params, finalize_config=False)
    except (ValueError, KeyError, TypeError, SyntaxError, IOError) as e:
        raise RecError(_gin_error(e, params)) from None
    finally:
        logging.disable(logging.NOTSET)


def _add_search_paths(files: list[str]) -> None:
    """Configs include each other by repo-relative paths ('configs/base/x.gin'): let gin look in the
    folders above each --gin_file (nearest first) and in the repository root after the working
    directory, so a run started outside the repo finds them."""
    wanted = [str(d) for f in files for d in Path(f).resolve().parents if d != d.parent] + [str(REPO)]
    for d in dict.fromkeys(wanted):
        if d not in _SEARCH_PATHS:
            gin.add_config_file_search_path(d)
            _SEARCH_PATHS.append(d)


def git_commit() -> str:
    try:
        root = Path(__file__).resolve().parents[2]
        out = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=root, capture_output=True,
                             text=True, timeout=5)
        return out.stdout.strip() or "unknown"
    except (OSError, subprocess.SubprocessError):
        return "unknown"


def command_line() -> str:
    """How this process was started, as a shell line (`python scripts/x.py --flag value ...`)."""
    return "python " + shlex.join(sys.argv)


def run(main: Callable[[argparse.Namespace, Path | None], None], description: str,
        extra_args: Callable[[argparse.ArgumentParser], None] | None = None,
        require_run_dir: bool = True, keep_on_error: bool = False) -> None:
    """Parse arguments and gin, lock run_dir, call `main(args, run_dir)`; a failure is one line on
    stderr, exit 2 for a user error and 1 for a bug (see `error_line`).

    A run directory this call created is removed on error, unless `keep_on_error` (for pipelines
    whose finished sub-runs are worth keeping for reuse) and something was written into it.

    Under torchrun (WORLD_SIZE > 1) every process runs `main`; the process group is joined before
    it, only rank 0 writes config.gin, and the process ends through `distributed.finish`."""
    p = parser(description)
    if extra_args:
        extra_args(p)
    args = p.parse_args()
    run_dir = Path(args.run_dir) if args.run_dir else None
    created: Path | None = None                # the top-most folder this call created
    lock = RunDirLock(run_dir) if run_dir is not None else None
    from retrieval.core import distributed          # imports torch: only scripts that run get it
    distributed.init_from_env()
    try:
        if require_run_dir and run_dir is None:
            raise RecError("--run_dir is required: the directory this run writes its outputs to")
        parse_gin(args.gin_file, args.gin_param)
        if run_dir is not None:
            created = _make_run_dir(run_dir)
            if distributed.is_main():          # one writer per run directory (rank 0 writes)
                lock.acquire()
        main(args, run_dir)
        if run_dir is not None and distributed.is_main():
            write_text(run_dir / "config.gin", gin.operative_config_str())
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        sys.exit(130)
    except Exception as e:                     # noqa: BLE001  (every failure: one line, clean up)
        line, code = error_line(e)
        if lock is not None:
            lock.release()                     # before the emptiness check below
        # A pipeline keeps what it finished for reuse, but not a directory it left empty.
        if created is not None and (not keep_on_error or not run_dir.is_dir() or not any(run_dir.iterdir())):
            _cleanup(run_dir, created)
        if code == EXIT_BUG and os.environ.get("SEMID_TRACEBACK"):
            traceback.print_exc()
        print(f"error: {line}", file=sys.stderr)
        distributed.abort(code)                # under torchrun: leave the process group first
        sys.exit(code)
    finally:
        if lock is not None:
            lock.release()
    distributed.finish()


def _make_run_dir(run_dir: Path) -> Path | None:
    """Create --run_dir (and missing parents); returns the top-most folder created, None if it existed."""
    if run_dir.exists() and not run_dir.is_dir():
        raise RecError(f"--run_dir {run_dir} is a file, not a folder; choose another --run_dir")
    if run_dir.is_dir():
        return None
    top = run_dir
    while not top.parent.exists() and top.parent != top:
        top = top.parent
    try:
        run_dir.mkdir(parents=True, exist_ok=True)         # exist_ok: other ranks race here
    except OSError as e:
        if top.is_dir():                                   # parents made before the failure
            shutil.rmtree(top, ignore_errors=True)
        raise RecError(f"cannot create --run_dir {run_dir} ({os_reason(e.errno, e.strerror)}); "
                       "choose a path in a "
                       "folder you can write to") from None
    return top


def error_line(e: BaseException) -> tuple[str, int]:
    """The one stderr line (without 'error: ') and the exit status for an exception.

    RecError, gin errors, wrong-typed values bound in gin (a ValueError/TypeError raised inside a
    configurable's call) and OSError (paths, permissions, a full disk) are user errors (exit 2);
    anything else is a bug, reported by its type in one line (exit 1)."""
    text = str(e)
    first = text.splitlines()[0].strip() if text.strip() else ""
    # gin appends "In call to configurable ..." on a new line to errors raised inside a
    # configurable; a RecError message is one line by construction, so keep only that.
    if isinstance(e, RecError):
        return first or type(e).__name__, EXIT_USER_ERROR
    if isinstance(e, OSError):
        code, where = e.errno, e.filename
        if code is None:                       # gin re-raises it with only the text left
            m = re.search(r"\[Errno (\d+)\] [^:']*(?:: '([^']*)')?", text)
            code, where = (int(m.group(1)), m.group(2)) if m else (None, None)
        reason = os_reason(code, e.strerror or (os.strerror(code) if code else type(e).__name__))
        return f"cannot write or read {where or 'a file'}: {reason}", EXIT_USER_ERROR
    if isinstance(e, (ValueError, TypeError)) and "In call to configurable" in text:
        macro = re.search(r"In call to configurable 'macro' .* in scope '([^']+)'", text)
        if macro:
            return (f"gin config error: macro %{macro.group(1)} is not defined; define it "
                    f"({macro.group(1)} = value) in a gin file or with --gin_param"), EXIT_USER_ERROR
        name = re.search(r"In call to configurable '([^']+)'", text).group(1)
        return (f"gin config error in {name}: {type(e).__name__}: {first}; check the values bound to "
                f"{name} in the gin config"), EXIT_USER_ERROR
    return (f"{type(e).__name__}: {first} (an unexpected error: a bug, please report it with the "
            "command; SEMID_TRACEBACK=1 prints the traceback)"), EXIT_BUG


def os_reason(code: int | None, strerror: str) -> str:
    hints = {errno.ENOSPC: "no space left on device; free some disk space and run again",
             errno.EDQUOT: "disk quota exceeded; free some disk space and run again",
             errno.EACCES: "permission denied; choose a --run_dir you can write to",
             errno.EPERM: "operation not permitted; choose a --run_dir you can write to",
             errno.EROFS: "read-only file system; choose a --run_dir on a writable disk",
             errno.ENOTDIR: "a part of the path is a file, not a folder",
             errno.EEXIST: "a file of that name is in the way"}
    return hints.get(code, strerror)


def _cleanup(run_dir: Path | None, created: Path | None) -> None:
    """Remove a run directory this invocation created if the run failed before finishing, and
    the empty parent folders it created with it (`created`: the top-most one).

    A directory that already holds a checkpoint is kept: a failure mid-training (e.g. a NaN loss)
    must leave the last good checkpoint for --resume.
    """
    if created is None or run_dir is None:
        return
    if run_dir.exists() and not (run_dir / "checkpoints" / "last.json").is_file():
        shutil.rmtree(run_dir, ignore_errors=True)
    d = run_dir.parent
    while not run_dir.exists() and d.is_relative_to(created) and d.is_dir():
        try:
            d.rmdir()                          # only if empty
        except OSError:
            break
        if d == created:
            break
        d = d.parent


def env_info() -> dict:
    import platform

    import torch
    info = {"python": platform.python_version(), "torch": torch.__version__,
            "machine": platform.machine(), "cpus": os.cpu_count(), "git_commit": git_commit()}
    if torch.cuda.is_available():
        info["gpu"] = torch.cuda.get_device_name(0)
    return info
