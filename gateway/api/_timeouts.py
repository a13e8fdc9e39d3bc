"""`SerialTimeout`: `asyncio.timeout` for operations that run one after another, on one loop timer.

A bus runs one transaction at a time, about a hundred a second at 1,000 meters polled every 10 s.
`asyncio.timeout` arms a loop timer per use and cancels it at the end (a timer handle, a heap push,
a cancelled handle left for the loop to sweep): with the owner's guard and the transaction's own
timeout that was two timers per transaction, measurable in the gateway's CPU per transaction
(docs/benchmarks.md, "Gateway footprint"). `SerialTimeout` keeps one timer: armed at the first
deadline, and when it fires it either cancels the operation in progress (its deadline has passed),
re-arms for that operation's deadline, or stays unarmed when nothing runs. An operation with an
earlier deadline than the armed timer re-arms it. A transaction that takes 1 ms under a 3 s
timeout costs no timer at all; the timer fires about once per timeout while the bus is busy.

Semantics are those of `asyncio.timeout` (the task is cancelled at the deadline and the
CancelledError becomes TimeoutError on the way out of the block; a cancel from elsewhere stays a
CancelledError), for one task at a time: entering it while an operation is in progress raises
RuntimeError.
"""

from __future__ import annotations

import asyncio
from types import TracebackType


class SerialTimeout:
    """`async with timeout.after(seconds): ...`: like `asyncio.timeout(seconds)`, one block at a time."""

    __slots__ = ("_cancelling", "_deadline", "_expired", "_handle", "_loop", "_seconds", "_task")

    def __init__(self) -> None:
        self._loop: asyncio.AbstractEventLoop | None = None
        self._handle: asyncio.TimerHandle | None = None
        self._task: asyncio.Task[object] | None = None
        self._deadline: float | None = None  # of the block in progress; None: none runs
        self._seconds = 0.0
        self._cancelling = 0
        self._expired = False

    def after(self, seconds: float) -> SerialTimeout:
        """The block that follows times out `seconds` after it is entered."""
        self._seconds = seconds
        return self

    async def __aenter__(self) -> None:
        if self._deadline is not None:
            raise RuntimeError("SerialTimeout: a block is already in progress (one at a time)")
        task = asyncio.current_task()
        if task is None:
            raise RuntimeError("SerialTimeout must be used inside a task")
        loop = task.get_loop()
        handle = self._handle
        if loop is not self._loop:  # used on another loop before: its timer is not this loop's
            if handle is not None:
                handle.cancel()
            handle = self._handle = None
            self._loop = loop
        self._task = task
        self._cancelling = task.cancelling()
        self._expired = False
        deadline = self._deadline = loop.time() + self._seconds
        if handle is None or handle.when() > deadline:
            if handle is not None:
                handle.cancel()
            self._handle = loop.call_at(deadline, self._fire)

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        task, self._task = self._task, None
        self._deadline = None
        if task is None or not self._expired:
            return
        # as asyncio.timeout does: take our cancel back (always); the CancelledError was ours
        # unless someone else's cancel is pending too
        ours = task.uncancel() <= self._cancelling
        if ours and exc_type is asyncio.CancelledError:
            raise TimeoutError from exc

    def _fire(self) -> None:
        self._handle = None
        deadline, loop = self._deadline, self._loop
        if deadline is None or loop is None or self._expired:
            return  # nothing runs: the next block arms the timer again
        if loop.time() < deadline:
            self._handle = loop.call_at(deadline, self._fire)  # a later block: its own deadline
            return
        self._expired = True
        if self._task is not None:
            self._task.cancel()
