"""A wall clock that steps, and a systemd notify socket: the environment of a real `citynerve run`
for the time and watchdog fault scenarios.

`SteppedWallClock` runs a child process under libfaketime (Debian package `faketime`) with a
timestamp file: writing an offset to the file steps the child's wall clock (CLOCK_REALTIME) at once
(FAKETIME_NO_CACHE=1); its monotonic clock stays real (FAKETIME_DONT_FAKE_MONOTONIC=1), as a real
NTP step would leave it.

`NotifySocket` is the receiving end of sd_notify, as systemd binds it for a `Type=notify` unit.
"""

from __future__ import annotations

import glob
import os
import select
import socket
import time
from collections.abc import Callable
from pathlib import Path

_LIB_PATTERNS = (
    "/usr/lib/*/faketime/libfaketimeMT.so.1",
    "/usr/lib/faketime/libfaketimeMT.so.1",
    "/usr/local/lib/faketime/libfaketimeMT.so.1",
)


def libfaketime() -> Path | None:
    """The multi-threaded libfaketime (the gateway runs SQLite in threads), or None."""
    for pattern in _LIB_PATTERNS:
        found = sorted(glob.glob(pattern))
        if found:
            return Path(found[0])
    return None


class SteppedWallClock:
    """The wall clock of child processes started with `env()`, stepped by `set_offset`."""

    def __init__(self, folder: Path) -> None:
        lib = libfaketime()
        if lib is None:
            raise RuntimeError("libfaketime is not installed: `apt-get install faketime` (.ci/run does this)")
        self.lib = lib
        self.file = folder / "faketime.offset"
        self.offset_s = 0.0
        self.set_offset(0.0)

    def env(self) -> dict[str, str]:
        return {
            "LD_PRELOAD": str(self.lib),
            "FAKETIME_TIMESTAMP_FILE": str(self.file),
            "FAKETIME_NO_CACHE": "1",
            "FAKETIME_DONT_FAKE_MONOTONIC": "1",
        }

    def set_offset(self, seconds: float) -> None:
        """The child's wall clock is real time + `seconds` from now on (a step, either way)."""
        tmp = self.file.with_suffix(".tmp")
        tmp.write_text(f"{seconds:+.0f}\n")
        os.replace(tmp, self.file)  # never a half-written offset
        self.offset_s = seconds


class NotifySocket:
    """A bound AF_UNIX datagram socket collecting sd_notify messages with their arrival time."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.bind(str(path))
        self.sock.setblocking(False)
        self.messages: list[tuple[float, dict[str, str]]] = []  # (monotonic arrival, fields)

    def env(self, watchdog_s: float) -> dict[str, str]:
        return {"NOTIFY_SOCKET": str(self.path), "WATCHDOG_USEC": str(int(watchdog_s * 1e6))}

    def poll(self, wait_s: float = 0.0) -> None:
        """Collect what arrived (waiting up to `wait_s` for the first datagram)."""
        ready, _, _ = select.select([self.sock], [], [], wait_s)
        while ready:
            try:
                data = self.sock.recv(4096)
            except BlockingIOError:
                break
            fields = dict(line.split("=", 1) for line in data.decode().splitlines() if "=" in line)
            self.messages.append((time.monotonic(), fields))
            ready, _, _ = select.select([self.sock], [], [], 0)

    def with_key(self, key: str, since: float = 0.0) -> list[tuple[float, dict[str, str]]]:
        return [(t, m) for t, m in self.messages if key in m and t >= since]

    def wait_for(self, predicate: Callable[[], bool], timeout_s: float, alive: Callable[[], bool]) -> bool:
        """Poll until `predicate()`; False on timeout or when `alive()` turns False."""
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            self.poll(0.1)
            if predicate():
                return True
            if not alive():
                return False
        return predicate()

    def close(self) -> None:
        self.sock.close()
        self.path.unlink(missing_ok=True)
