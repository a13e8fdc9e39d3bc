"""Telemetry reads queued ahead of the uplink's pump.

A backlog drain alternates two kinds of work: reading stored blocks (on the outbox's thread) and
publishing messages (on the event loop). `ReadAhead` keeps `depth` reads queued on the outbox's
thread, chained through a `TelemetryCursor` there: each starts where the one before stopped
without a trip through the (busy) event loop in between, so the pump finds the next chunk read
when it has published this one.
"""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import Awaitable, Callable

from citynerve.gateway.store import TelemetryBlock, TelemetryCursor
from citynerve.gateway.uplink._connection import retrieve_exception

Chunk = tuple[int | None, list[TelemetryBlock]]
"""Where a read started (None: it did not, the lane had caught up) and the blocks it found."""


class ReadAhead:
    """Chained reads of `read(cursor)`; `take(after)` hands out the read that started at `after`,
    or None when none did (nothing queued, the cursor moved on a rewind, the lane caught up)."""

    def __init__(self, read: Callable[[TelemetryCursor], Awaitable[Chunk]], depth: int) -> None:
        self._read = read
        self._depth = depth
        self._cursor: TelemetryCursor | None = None
        self._tasks: deque[asyncio.Task[Chunk]] = deque()

    async def take(self, after: int) -> list[TelemetryBlock] | None:
        if not self._tasks:
            return None
        start, blocks = await self._tasks.popleft()
        if start != after:
            self.cancel()
            return None
        self._fill()
        return blocks

    def start(self, after: int) -> None:
        """Queue reads from `after` on (dropping any queued from elsewhere)."""
        self.cancel()
        self._cursor = TelemetryCursor(after)
        self._fill()

    def _fill(self) -> None:
        cursor = self._cursor
        while cursor is not None and cursor.more and len(self._tasks) < self._depth:
            task = asyncio.ensure_future(self._read(cursor))
            # A read dropped after a rewind may fail: its error is not news (the pump reads again).
            task.add_done_callback(retrieve_exception)
            self._tasks.append(task)

    def cancel(self) -> None:
        # Reads already on the outbox's thread finish there and move a cursor no one uses again.
        for task in self._tasks:
            task.cancel()
        self._tasks.clear()
        self._cursor = None
