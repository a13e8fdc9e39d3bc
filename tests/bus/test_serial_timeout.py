"""`SerialTimeout` behaves as `asyncio.timeout` for blocks run one after another, on one loop timer."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from citynerve.gateway.api import SerialTimeout


class CountingLoop(asyncio.SelectorEventLoop):
    """The real selector loop, counting the timers armed on it."""

    def __init__(self) -> None:
        super().__init__()
        self.timers = 0

    def call_at(self, when: float, callback: Any, *args: Any, context: Any = None) -> asyncio.TimerHandle:
        self.timers += 1
        return super().call_at(when, callback, *args, context=context)


def run(coro: Any) -> Any:
    loop = CountingLoop()
    try:
        return loop.run_until_complete(coro), loop
    finally:
        loop.close()


def test_many_quick_blocks_arm_one_timer() -> None:
    async def main() -> int:
        timeout = SerialTimeout()
        done = 0
        for _ in range(500):
            async with timeout.after(30.0):
                await asyncio.sleep(0)  # a transaction that takes a loop turn, not 30 s
                done += 1
        return done

    done, loop = run(main())
    assert done == 500
    assert loop.timers == 1  # asyncio.timeout would have armed 500


def test_a_block_past_its_deadline_raises_timeout_error() -> None:
    async def main() -> tuple[bool, bool]:
        timeout = SerialTimeout()
        async with timeout.after(5.0):
            await asyncio.sleep(0)  # the timer now points 5 s ahead
        # a shorter block after a longer one: the timer is moved earlier
        started = asyncio.get_running_loop().time()
        with pytest.raises(TimeoutError):
            async with timeout.after(0.05):
                await asyncio.sleep(10)
        took = asyncio.get_running_loop().time() - started
        # the next block is unaffected by the previous expiry
        async with timeout.after(1.0):
            await asyncio.sleep(0.01)
        # a later, longer block is cancelled at its own deadline (the armed timer re-arms)
        with pytest.raises(TimeoutError):
            async with timeout.after(0.2):
                await asyncio.sleep(10)
        return took < 5.0, asyncio.current_task().cancelling() == 0  # type: ignore[union-attr]

    (quick, clean), _ = run(main())
    assert quick and clean


def test_a_cancel_from_elsewhere_stays_a_cancel() -> None:
    async def main() -> None:
        timeout = SerialTimeout()

        async def block() -> None:
            async with timeout.after(30.0):
                await asyncio.sleep(30)

        task = asyncio.create_task(block())
        await asyncio.sleep(0.01)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        # usable again afterwards
        async with timeout.after(1.0):
            await asyncio.sleep(0)

    run(main())


def test_nested_in_asyncio_timeout_each_keeps_its_own() -> None:
    async def main() -> None:
        timeout = SerialTimeout()
        # the outer asyncio.timeout expires first: it raises TimeoutError, ours does not convert
        with pytest.raises(TimeoutError):
            async with asyncio.timeout(0.05):
                async with timeout.after(30.0):
                    await asyncio.sleep(10)
        # ours expires first inside a longer outer one: TimeoutError from ours, outer untouched
        async with asyncio.timeout(30.0):
            with pytest.raises(TimeoutError):
                async with timeout.after(0.05):
                    await asyncio.sleep(10)

    run(main())


def test_one_block_at_a_time() -> None:
    async def main() -> None:
        timeout = SerialTimeout()

        async def inner() -> None:
            async with timeout.after(1.0):
                await asyncio.sleep(0.1)

        task = asyncio.create_task(inner())
        await asyncio.sleep(0.01)
        with pytest.raises(RuntimeError, match="one at a time"):
            async with timeout.after(1.0):
                pass
        await task

    run(main())


def test_a_new_loop_gets_its_own_timer() -> None:
    timeout = SerialTimeout()

    async def arm() -> None:
        async with timeout.after(0.5):
            await asyncio.sleep(0)

    async def expire() -> None:
        with pytest.raises(TimeoutError):
            async with timeout.after(0.05):
                await asyncio.sleep(10)

    run(arm())
    run(expire())  # the first loop's timer is gone with it: this loop arms its own
