"""bdSeq kept across restarts: a small file beside the outbox, written atomically.

Sparkplug's bdSeq ties an NBIRTH to the NDEATH (the will) of the same MQTT session; a host that
sees a stale NDEATH with another bdSeq ignores it. It must not restart at 0 after a reboot, or a
late will of the previous life could kill the new session on the host.
"""

from __future__ import annotations

import contextlib
import os
from pathlib import Path

MAX_BYTES = 16


class BdSeqFile:
    """The next bdSeq to use (0-255) in a file; a missing or unreadable file reads as 0."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def load(self) -> int:
        try:
            with open(self.path, "rb") as f:
                text = f.read(MAX_BYTES + 1)
        except FileNotFoundError:
            return 0
        if len(text) > MAX_BYTES:
            return 0
        try:
            return int(text.decode("ascii").strip()) % 256
        except (UnicodeDecodeError, ValueError):
            return 0

    def save(self, next_bd_seq: int) -> None:
        """Write `next_bd_seq` durably (temp file, fsync, rename) before the session that used the
        previous one connects. OSError (a full disk) leaves the file as it was."""
        tmp = self.path.with_name(self.path.name + ".tmp")
        try:
            with open(tmp, "wb") as f:
                f.write(f"{next_bd_seq % 256}\n".encode())
                f.flush()
                os.fsync(f.fileno())
            os.replace(tmp, self.path)
        except OSError:  # a full disk: leave no half-written temp file taking room
            with contextlib.suppress(OSError):
                tmp.unlink()
            raise
        with contextlib.suppress(OSError):
            dir_fd = os.open(self.path.parent, os.O_RDONLY)
            try:
                os.fsync(dir_fd)
            finally:
                os.close(dir_fd)
