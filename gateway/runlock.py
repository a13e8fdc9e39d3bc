"""One gateway per store: the run lock `citynerve run` holds on its outbox (moved from runtime.py)."""

from __future__ import annotations

import contextlib
import fcntl
import os
from collections.abc import Iterator
from pathlib import Path

from citynerve.gateway.api import PermanentError

__all__ = ["GatewayLockedError", "run_lock"]


class GatewayLockedError(PermanentError):
    """Another gateway process already runs on this store."""

    def __init__(self, path: Path, pid: str) -> None:
        self.path = path
        self.pid = pid
        super().__init__(f"another citynerve run (pid {pid or '?'}) is using {path}")


@contextlib.contextmanager
def run_lock(db_path: Path) -> Iterator[None]:
    """One gateway per store: an flock on `<db>.lock`, released by the kernel even on kill -9."""
    lock_path = db_path.with_name(db_path.name + ".lock")
    lock_path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(lock_path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            pid = os.pread(fd, 32, 0).decode(errors="replace").strip()
            raise GatewayLockedError(db_path, pid) from None
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
        yield
    finally:
        os.close(fd)
