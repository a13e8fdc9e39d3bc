"""The listening bus's offline watchdog counts silence on the monotonic clock: a node that keeps
sending is never declared offline when the wall clock steps by days, and a node that goes silent
is declared offline on time whichever way the clock stepped."""

from __future__ import annotations

import asyncio
import contextlib
import time

import pytest
from ble_support import KEY, MAC, RecordingSink, bus_config, manhole_device

from citynerve.drivers.bthome import BTHomeDriver
from citynerve.gateway.api import Clock
from citynerve.gateway.bus.owner import BusOwner
from citynerve.hil.sim.ble import ManholeCoverNode, VirtualRadio


class WallStepped(Clock):
    """Real clocks, with the wall clock moved by `offset` (as NTP or an operator steps it)."""

    offset = 0.0

    def wall(self) -> float:
        return time.time() + self.offset


class OwnerSink(RecordingSink):
    def mark_offline(self, device_id: str, ts: float) -> None:
        return None


@pytest.mark.parametrize("step", [2 * 86400.0, -2 * 86400.0])
async def test_a_clock_step_is_no_silence(radio: VirtualRadio, step: float) -> None:
    bus = bus_config(radio, offline_after=3, backoff_initial_s=0.1)
    device = manhole_device(poll_interval_s=0.5)  # offline after 1.5 s unheard
    clock = WallStepped()
    sink = OwnerSink()
    owner = BusOwner(bus, [device], BTHomeDriver(bus, [device]), sink, clock=clock)
    task = asyncio.create_task(owner.run(), name="test.owner")
    node = ManholeCoverNode(radio, MAC, key=KEY)
    try:
        await asyncio.sleep(0.2)
        for i in range(12):  # heard every 0.25 s for 3 s; the clock steps in the middle
            await node.state(tilt_deg=1.0 + i / 10)
            await asyncio.sleep(0.25)
            if i == 4:
                clock.offset = step
        assert [e for e in sink.events if e.kind == "device_offline"] == []
        silent_from = time.monotonic()
        await sink.wait_for(lambda: any(e.kind == "device_offline" for e in sink.events), within=10)
        silent = time.monotonic() - silent_from
        assert 1.0 <= silent <= 4.0, silent  # 1.5 s after the last heartbeat (the watchdog looks each second)
        (offline,) = [e for e in sink.events if e.kind == "device_offline"]
        assert abs(offline.ts - clock.wall()) < 5  # stamped on the stepped wall clock
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
