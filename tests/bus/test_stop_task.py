"""`stop_task` ends a task even when the task swallows a cancel (Python 3.11's wait_for race)."""

from __future__ import annotations

import asyncio

from citynerve.gateway.api import stop_task


async def test_a_swallowed_cancel_is_repeated_until_the_task_ends() -> None:
    swallowed = 0

    async def owner() -> None:
        nonlocal swallowed
        while True:
            try:
                await asyncio.sleep(3600)
            except asyncio.CancelledError:
                if swallowed == 0:  # what wait_for does when a result races with the cancel
                    swallowed += 1
                    asyncio.current_task().uncancel()  # type: ignore[union-attr]
                    continue
                raise

    task = asyncio.create_task(owner())
    await asyncio.sleep(0)
    await asyncio.wait_for(stop_task(task, again_s=0.05), 5.0)
    assert task.cancelled() and swallowed == 1


async def test_a_task_that_failed_is_stopped_without_raising() -> None:
    async def broken() -> None:
        raise RuntimeError("owner crashed")

    task = asyncio.create_task(broken())
    await asyncio.sleep(0)
    await stop_task(task)
    assert isinstance(task.exception(), RuntimeError)
