"""Stopping a task for sure.

Python 3.11's `asyncio.wait_for` (used inside pymodbus and aiomqtt, and by our drivers) returns the
result and drops the cancel when a cancel races with the awaited future finishing (bpo-42130, fixed
in 3.12). A task cancelled once can then go on running, and whoever awaits it waits forever: a bus
owner stopped by `reload` kept polling and the reload never answered. `stop_task` cancels again
until the task is really done.
"""

from __future__ import annotations

import asyncio

CANCEL_AGAIN_S = 1.0
"""How long to wait for a cancelled task before cancelling it again."""


async def stop_task(task: asyncio.Task[object], *, again_s: float = CANCEL_AGAIN_S) -> None:
    """Cancel `task` (again every `again_s` while it still runs) and wait until it is done.

    The task's own outcome (its exception or its cancel) is not raised here; a cancel of the caller
    while waiting is.
    """
    while not task.done():
        task.cancel()
        await asyncio.wait({task}, timeout=again_s)
    if not task.cancelled():
        task.exception()  # retrieved: no "exception was never retrieved" warning
