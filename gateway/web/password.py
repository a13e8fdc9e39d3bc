"""The status page's password, followed in its file while the gateway runs.

`citynerve config reload` compares config values, and `password_file` names a file whose *contents*
change when a technician rotates the password: the page re-reads the file itself when its stat
(device, inode, size, mtime, ctime) changed, looked at no more than once a second, so a rotated
password applies within a second and the old one stops working.

A file that becomes unreadable, empty or too long while running refuses everyone (the server
answers 503: the password typed is not what is wrong) until it is readable again; it is logged
once when it starts failing (and when the reason changes) and once when it is read again.
"""

from __future__ import annotations

import asyncio
import logging
import os
import stat
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from citynerve.gateway.web.config import read_password_file

__all__ = ["CHECK_INTERVAL_S", "PasswordFile"]

log = logging.getLogger("citynerve.web")

CHECK_INTERVAL_S = 1.0  # how often the file's stat is looked at, on requests only (a stat each)

_StatKey = tuple[int, int, int, int, int]


@dataclass(frozen=True, slots=True)
class _Read:
    """One look at the file: its stat key, and the password or why there is none."""

    key: _StatKey | None
    password: bytes | None
    error: str | None
    changed: bool  # the stat differed from the last look (the file was read again)


def _key(st: os.stat_result) -> _StatKey:
    return (st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns, st.st_ctime_ns)


class PasswordFile:
    """`PasswordFile.load(path)` reads it once (raises ValueError naming the file, as at start);
    `await current()` is the password now, or None while the file cannot be used."""

    def __init__(self, path: Path, password: bytes, key: _StatKey, *, clock: Callable[[], float]) -> None:
        self.path = path
        self._password: bytes | None = password
        self._key: _StatKey | None = key
        self._error: str | None = None
        self._clock = clock
        self._checked = clock()
        self.reloads = 0  # times a changed file was read again

    @classmethod
    def load(cls, path: Path, *, clock: Callable[[], float] = time.monotonic) -> PasswordFile:
        """The file as the page starts: unreadable or empty raises ValueError (the page does not
        start, as `config check` says)."""
        try:
            key = _key(os.stat(path))
        except OSError as err:
            raise ValueError(f"cannot read password_file {path}: {err.strerror or err}") from err
        return cls(path, read_password_file(path), key, clock=clock)

    @property
    def error(self) -> str | None:
        """Why no password applies now (the file became unreadable or empty), else None."""
        return self._error

    async def current(self) -> bytes | None:
        """The password to compare with, None while the file cannot be used (refuse everyone).
        Looks at the file at most once per CHECK_INTERVAL_S; requests meanwhile use what is known."""
        now = self._clock()
        if now - self._checked >= CHECK_INTERVAL_S:
            self._checked = now  # before the await: requests arriving meanwhile do not look again
            self._apply(await asyncio.to_thread(self._look, self._key))
        return self._password

    def _look(self, known: _StatKey | None) -> _Read:
        """In a worker thread: stat the file, read it when its stat changed (bounded read)."""
        try:
            st = os.stat(self.path)
        except OSError as err:
            return _Read(None, None, f"cannot read password_file {self.path}: {err.strerror or err}", True)
        key = _key(st)
        if key == known:
            return _Read(key, None, None, False)
        if not stat.S_ISREG(st.st_mode):  # a FIFO would block the read
            return _Read(key, None, f"password_file {self.path} is not a regular file", True)
        try:
            return _Read(key, read_password_file(self.path), None, True)
        except ValueError as err:
            return _Read(key, None, str(err), True)

    def _apply(self, read: _Read) -> None:
        if not read.changed:
            return
        self._key = read.key
        if read.error is not None:
            self._password = None
            if read.error != self._error:
                log.error("status page: %s; refusing everyone (503) until it is fixed", read.error)
            self._error = read.error
            return
        self._password = read.password
        self.reloads += 1
        if self._error is not None:
            log.warning(
                "status page: password_file %s read again; the page is open to its password", self.path
            )
        else:
            log.info("status page: password_file %s changed; the new password applies", self.path)
        self._error = None
