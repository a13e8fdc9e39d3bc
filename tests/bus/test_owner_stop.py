"""A bus owner stopped (a reload restarting its bus, the gateway stopping) while a diag's steps are
running or queued: every asker is answered at once with BusStoppedError, none waits for ever."""

from __future__ import annotations

import asyncio
from collections.abc import Mapping
from typing import Any

import pytest

from citynerve.gateway.api import DiagSteps
from citynerve.gateway.bus import BusStoppedError

from .test_owner import ScriptedDriver, make


class SteppedDriver(ScriptedDriver):
    """`diag("scan")` as steps: each waits `step_s` (a silent unit id) and says which it was."""

    step_s = 0.3

    def diag_steps(self, action: str, params: Mapping[str, Any]) -> DiagSteps | None:
        def step(unit: int) -> Any:
            async def run() -> int:
                await asyncio.sleep(self.step_s)
                return unit

            return run

        units = range(int(params["first"]), int(params["last"]) + 1)
        return DiagSteps(tuple(step(u) for u in units), lambda done: {"units": done})


async def test_a_diag_whose_owner_stops_mid_step_fails_at_once_and_later_jobs_too() -> None:
    owner, _, _ = make(1)
    owner.driver = SteppedDriver(owner.bus, list(owner.devices.values()))
    task = asyncio.create_task(owner.run())
    scan = asyncio.create_task(owner.diag("scan", {"first": 1, "last": 10}))
    await asyncio.sleep(0.45)  # inside the second step
    task.cancel()  # what a reload does to the bus's owner
    with pytest.raises(asyncio.CancelledError):
        await task
    # Before, the running step's future was never settled: the asker waited for ever (its timeout).
    with pytest.raises(BusStoppedError) as info:
        await asyncio.wait_for(scan, 1.0)
    assert info.value.bus_id == "b1" and "run it again" in str(info.value)
    # A job for the stopped owner (a scan's next step, a request that found it) is refused at once.
    with pytest.raises(BusStoppedError):
        await asyncio.wait_for(owner.write("d0", "w", 1), 1.0)
