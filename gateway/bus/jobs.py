"""What a bus owner is fed and what it queues: the sink it feeds (`BusSink`), its poll entries and
its jobs (diagnostics, commands, local actions: one at a time on the channel). Split from owner.py."""

from __future__ import annotations

import asyncio
import math
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any, Protocol

from citynerve.gateway.api import ChannelError, Driver, Event, PollRequest, SampleBatch


class BusSink(Protocol):
    """What a bus owner feeds. The pipeline satisfies it."""

    def submit(self, batch: SampleBatch) -> None: ...

    def event(self, event: Event) -> None: ...

    def mark_offline(self, device_id: str, ts: float) -> None: ...


class BusNotRunningError(ChannelError):
    """A job was sent to a bus whose channel is down."""


class BusStoppedError(BusNotRunningError):
    """The bus's owner stopped before the job finished: a reload restarted the bus (its settings or
    devices changed), or the gateway stops. Nothing more runs on that owner; a restarted bus has a
    new one, so the job can be asked again. The control socket sends it by this class name."""

    def __init__(self, bus_id: str) -> None:
        super().__init__(
            bus_id,
            "stopped before the job finished (restarted by a config reload, or the gateway stops): "
            "run it again",
        )


@dataclass(order=True, slots=True)
class _Entry:
    due: float
    order: int
    device_id: str = field(compare=False)
    index: int = field(compare=False)  # position of the request in the device's plan
    request: PollRequest = field(compare=False)
    attempt: int = field(default=0, compare=False)  # a retry of the poll: 1..retries


@dataclass(slots=True)
class _Job:
    run: Callable[[Driver[Any, Any]], Awaitable[Any]]
    future: asyncio.Future[Any]
    name: str
    polls_before: float | None = None
    """A step of a longer diag (a scan's unit, a line test's transaction): loop time it was queued;
    the polls due by then run first, so polling keeps its pace however many steps follow."""


async def run_job(job: _Job, driver: Driver[Any, Any], *, bus_id: str, name: str) -> BaseException | None:
    """Run one job on the channel and settle its asker's future; never raises for the job.

    The job runs as a task of its own, tied to the asker: when the asker gives up (a local action's
    timeout, a platform command's, a technician's Ctrl-C cancels the future), the job is cancelled
    too, so an abandoned scan or probe stops using the line, and a future already done is never
    set again (that raised InvalidStateError out of the owner: the bus was rebuilt). Returns the
    job's error (for the owner: a ChannelError means the channel is gone), None otherwise. Only a
    cancellation of the owner itself propagates (the job is cancelled and awaited first, and its
    asker gets BusStoppedError: a scan's step left unsettled hung its asker until its own timeout).
    """
    future = job.future
    if future.done():  # the asker gave up while the job waited in the queue
        return None

    async def call() -> Any:
        return await job.run(driver)

    task = asyncio.create_task(call(), name=name)

    def asker_gone(done: asyncio.Future[Any]) -> None:
        if done.cancelled():
            task.cancel()

    future.add_done_callback(asker_gone)
    try:
        await asyncio.wait((task,))
    except asyncio.CancelledError:  # the owner stops: so does its job, and its asker is told
        task.cancel()
        await asyncio.wait((task,))
        if not future.done():
            future.set_exception(BusStoppedError(bus_id))
        raise
    finally:
        future.remove_done_callback(asker_gone)
    if task.cancelled():
        future.cancel()
        return None
    error = task.exception()
    if not future.done():
        if error is None:
            future.set_result(task.result())
        else:
            future.set_exception(error)
    return error


COALESCE_S = 0.2
"""The grid (seconds of the loop clock) that a bus owner's wake-ups for polls are rounded up to."""
COALESCE_SHARE = 0.02
"""At most this share of the poll's interval: a device polled every second waits at most 20 ms."""


def wake_time(due: float, interval_s: float) -> float:
    """When an owner wakes for a poll due at `due`: rounded up to the next multiple of
    min(COALESCE_S, 2 % of the interval) on the loop clock (timer coalescing).

    Owners of every bus share the grid, so the polls of all buses that fall due within one slot
    start in one loop turn and their replies come back together: a few process wake-ups per slot
    instead of two per transaction. At 1,000 meters on 10 buses every 10 s, each wake-up of an
    idle process (a context switch into cold caches) cost more CPU than the transaction it served
    (docs/benchmarks.md, "Gateway footprint"). Only waiting is rounded: the schedule keeps its due
    times (the cadence does not drift), a poll already due runs at once, and a poll is never
    started early."""
    slot = min(COALESCE_S, interval_s * COALESCE_SHARE)
    if slot <= 0:
        return due
    return max(due, math.ceil(due / slot) * slot)


class Wakeup:
    """How a bus owner sleeps until its next poll: a future and a loop timer per sleep (what
    `asyncio.sleep` costs; an `asyncio.Event` under `asyncio.timeout` cost twice that, at every
    poll), ended early by `set` when a job or a restart arrives. `set` while nobody sleeps does
    nothing: the owner looks at its queue before it sleeps."""

    def __init__(self) -> None:
        self._waiter: asyncio.Future[bool] | None = None

    def set(self) -> None:
        waiter = self._waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(True)

    async def sleep(self, seconds: float) -> bool:
        """Sleep `seconds`; True when `set` ended it early."""
        loop = asyncio.get_running_loop()
        waiter = self._waiter = loop.create_future()
        timer = loop.call_later(seconds, _over, waiter)
        try:
            return await waiter
        finally:
            timer.cancel()
            self._waiter = None


def _over(waiter: asyncio.Future[bool]) -> None:
    if not waiter.done():
        waiter.set_result(False)
