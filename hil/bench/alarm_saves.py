"""Disk written per change of the registry of active alarms, by how many are active.

A fault storm: with N fire panel records active, one point is raised and cleared over and over and
each change saved (`ActiveAlarms.save` on the real outbox on disk, as the gateway does within a
second of a change). Prints per change: bytes handed to write() (`wchar`) and bytes the kernel
wrote to the disk (`write_bytes`, the fsyncs included), from /proc/self/io.

    .venv/bin/python -m citynerve.hil.bench.alarm_saves [N ...]   (default 100 1000 4096 9999)
"""

from __future__ import annotations

import asyncio
import os
import sys
import tempfile
from pathlib import Path

from citynerve.gateway.alarms import ActiveAlarms
from citynerve.gateway.api import Event, EventState, Severity
from citynerve.gateway.store import AsyncOutbox

CHANGES = 60


def written() -> tuple[int, int]:
    """This process's (wchar, write_bytes) so far; the outbox's worker thread counts too."""
    io = dict(line.split(": ") for line in Path("/proc/self/io").read_text().splitlines())
    return int(io["wchar"]), int(io["write_bytes"])


def record(i: int, state: EventState = EventState.RAISED) -> Event:
    """A fire panel's smoke on loop i // 256, point i % 256."""
    where = f"{i // 256}-{i % 256}"
    text = f"smoke at loop {i // 256} point {i % 256} (building 7, floor {i % 9})"
    return Event(
        f"fp-{i // 512}", "smoke", state, Severity.CRITICAL, 1.7e9 + i, "panel:gst", None, text, subject=where
    )


async def per_change(active: int, folder: str) -> tuple[float, float]:
    async with AsyncOutbox(Path(folder) / f"alarms-{active}.db") as outbox:
        alarms = ActiveAlarms()
        for i in range(active):
            alarms.apply(record(i))
        await alarms.save(outbox)
        os.sync()
        w0, b0 = written()
        for _ in range(CHANGES // 2):
            alarms.apply(record(active))
            await alarms.save(outbox)
            alarms.apply(record(active, EventState.CLEARED))
            await alarms.save(outbox)
        os.sync()
        w1, b1 = written()
    return (w1 - w0) / CHANGES, (b1 - b0) / CHANGES


def main() -> None:
    counts = [int(a) for a in sys.argv[1:]] or [100, 1_000, 4_096, 9_999]
    with tempfile.TemporaryDirectory(dir=Path.cwd()) as folder:  # on the disk, not a tmpfs
        for n in counts:
            wchar, disk = asyncio.run(per_change(n, folder))
            print(f"{n:6d} active: {wchar / 1000:8.1f} kB written, {disk / 1000:8.1f} kB to disk per change")


if __name__ == "__main__":
    main()
