"""One telemetry read queued ahead of the uplink's pump.

A backlog drain alternates reading stored blocks (on the outbox's thread) and publishing
messages (on the event loop). `ReadAhead` starts the next read while the pump publishes the
chunk it has, so the pump usually finds it done.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable

from citynerve.gateway.store import ReadingBlock
from citynerve.gateway.uplink._connection import retrieve_exception


class ReadAhead:
    """`start(after)` begins `read(after)`; `take(after)` hands out its blocks when it was started
    from `after` and found some, else None (the pump then reads itself)."""

    def __init__(self, read: Callable[[int], Awaitable[list[ReadingBlock]]]) -> None:
        self._read = read
        self._after = -1
        self._task: asyncio.Future[list[ReadingBlock]] | None = None

    def start(self, after: int) -> None:
        self.cancel()
        self._after = after
        self._task = asyncio.ensure_future(self._read(after))
        # A read dropped after a rewind may fail: its error is not news (the pump reads again).
        self._task.add_done_callback(retrieve_exception)

    async def take(self, after: int) -> list[ReadingBlock] | None:
        task, started = self._task, self._after
        self._task = None
        if task is None:
            return None
        if started != after:
            task.cancel()
            return None
        blocks = await task
        return blocks or None  # nothing then: read again now (a commit may have come since)

    def cancel(self) -> None:
        # A read already on the outbox's thread finishes there; its result is not used.
        if self._task is not None:
            self._task.cancel()
            self._task = None
