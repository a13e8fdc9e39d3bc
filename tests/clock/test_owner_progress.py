"""The service watchdog's view of a bus owner: a poll bus shows progress while it polls and while it
idles, stops showing it when a driver call never returns, and a technician's diag does not count
as a hang. (A driver that hangs has no real peer: a subclass of the real PollDriver interface.)"""

from __future__ import annotations

import asyncio
import contextlib
import time
from typing import Any

from citynerve.gateway.api import BusConfig, DeviceConfig, PollRequest, Sample
from citynerve.gateway.bus import BusOwner
from citynerve.gateway.service.notify import Notifier, Watchdog
from tests.bus.test_owner import Collector, ScriptedDriver, device


class HangingDriver(ScriptedDriver):
    """Answers until `hang` is set; then the next read never returns (a driver bug)."""

    hang = False
    diag_s = 0.0

    async def read(self, device: DeviceConfig, request: PollRequest) -> tuple[Sample, ...]:
        if self.hang:
            await asyncio.Event().wait()
        return await super().read(device, request)

    async def diag(self, action: str, params: dict[str, Any]) -> dict[str, Any]:
        await asyncio.sleep(self.diag_s)  # a long bus scan
        return {"action": action}


async def test_a_hung_driver_call_stops_the_owners_progress() -> None:
    bus = BusConfig(id="b1", protocol="test", timeout_s=0.05)
    devices = [device("d1", interval=0.05)]
    driver = HangingDriver(bus, devices)
    owner = BusOwner(bus, devices, driver, Collector([], [], []))
    watchdog = Watchdog(
        Notifier({"WATCHDOG_USEC": "1000000"}), lambda: {"bus[b1]": owner.progress_at}, stall_s=1.0
    )
    task = asyncio.create_task(owner.run())
    try:
        await asyncio.sleep(0.5)
        assert watchdog.stalled() == []  # polling: progress
        driver.diag_s = 1.6
        scan = asyncio.create_task(owner.diag("scan", {}))
        await asyncio.sleep(1.3)
        assert not scan.done() and watchdog.stalled() == []  # a long technician's diag is no hang
        assert await scan == {"action": "scan"}
        driver.hang = True
        for _ in range(100):
            if watchdog.stalled():
                break
            await asyncio.sleep(0.1)
        assert watchdog.stalled() == ["bus[b1]"]
        assert time.monotonic() - owner.progress_at() > 1.0
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
