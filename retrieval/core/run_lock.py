"""One writer per run directory: an fcntl lock on `<run_dir>/.lock` while a script writes it.

Two processes writing one run directory would interleave checkpoints and metrics lines; the
second one is refused with a RecError instead. The kernel drops the lock when its holder dies
(even by SIGKILL), so a stale `.lock` file left by a killed run does not block the next one.
"""
from __future__ import annotations

import fcntl
import os
from pathlib import Path

from retrieval.core.errors import RecError

LOCK_NAME = ".lock"


class RunDirLock:
    """acquire() takes the lock or raises RecError; release() removes the file and unlocks."""

    def __init__(self, run_dir: Path):
        self.run_dir = Path(run_dir)
        self.path = self.run_dir / LOCK_NAME
        self._fd: int | None = None

    def acquire(self) -> None:
        while True:
            try:
                fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o666)
            except OSError as e:
                raise RecError(f"--run_dir {self.run_dir} is not writable ({e.strerror} creating "
                               f"{self.path}); choose a folder you can write to") from None
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                holder = os.read(fd, 32).decode("ascii", "replace").strip()
                os.close(fd)
                raise RecError(f"{self.run_dir} is being written by another process"
                               f"{f' (pid {holder})' if holder else ''}; wait for it to finish or "
                               "choose another --run_dir") from None
            # The previous holder unlinks the file before it unlocks; if it did so after our open,
            # we locked a deleted file: start again on the new one.
            try:
                if os.fstat(fd).st_ino == os.stat(self.path).st_ino:
                    break
            except FileNotFoundError:
                pass
            os.close(fd)
        os.ftruncate(fd, 0)
        os.write(fd, f"{os.getpid()}\n".encode("ascii"))
        self._fd = fd

    def release(self) -> None:
        if self._fd is None:
            return
        try:
            self.path.unlink(missing_ok=True)          # while still locked: see acquire()
        except OSError:
            pass
        os.close(self._fd)
        self._fd = None
