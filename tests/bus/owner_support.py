"""Running a real `BusOwner` in a test: its task for the length of a block, and waiting for what it
does. Durations use the monotonic clock."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator, Callable

import pytest

from citynerve.gateway.bus import BusOwner


async def wait_for(predicate: Callable[[], object], timeout_s: float, what: str) -> float:
    """Poll `predicate` until true; seconds it took. Fails naming `what` after `timeout_s`."""
    started = time.monotonic()
    while not predicate():
        assert time.monotonic() - started < timeout_s, f"{what}: not within {timeout_s} s"
        await asyncio.sleep(0.02)
    return time.monotonic() - started


@contextlib.asynccontextmanager
async def running(owner: BusOwner) -> AsyncIterator[BusOwner]:
    """`owner.run()` as a task for the block; cancelled after it (and it must end cancelled)."""
    task = asyncio.create_task(owner.run(), name=f"bus[{owner.bus.id}]")
    try:
        yield owner
    finally:
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
