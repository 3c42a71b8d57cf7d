"""One agent per outbox: an exclusive lock on the state folder, held for the life of the process.

Two agents on one outbox would publish the same messages twice, fight over the broker session (same client id) and the
DICOM port. The lock is `fcntl.flock` on a file in the state folder: the kernel releases it when the process ends,
however it ends, so a stale lock file never blocks a restart. The file holds the holder's pid, for the refusal line.
"""

from __future__ import annotations

import fcntl
import os
from pathlib import Path

LOCK_NAME = "agent.lock"


class AlreadyRunning(Exception):
    """Another process holds the state folder's lock; str() is the one line to print."""


class InstanceLock:
    """`acquire()` takes the lock or raises AlreadyRunning; `release()` (or process exit) frees it."""

    def __init__(self, state_dir: Path):
        self.path = Path(state_dir) / LOCK_NAME
        self._fd: int | None = None

    def acquire(self) -> "InstanceLock":
        self.path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = _read_pid(fd)
            os.close(fd)
            who = f"pid {holder}" if holder else "another process"
            raise AlreadyRunning(f"another xray-agent ({who}) is already running on {self.path.parent}; stop it "
                                 "first (systemctl stop xray-agent) or give this one its own outbox.path") from None
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
        self._fd = fd
        return self

    def release(self) -> None:
        if self._fd is not None:
            os.close(self._fd)  # closing the only descriptor drops the flock
            self._fd = None


def _read_pid(fd: int) -> int | None:
    try:
        text = os.pread(fd, 32, 0).decode("ascii", "replace").strip()
        return int(text) if text.isdigit() else None
    except OSError:
        return None
