"""The BTHome driver under the lead's bus owner: a node that misses its heartbeats goes offline
(an event), and comes back online when it is heard again; diagnostics run while it listens."""

from __future__ import annotations

import asyncio
import contextlib

from ble_support import KEY, MAC, RecordingSink, bus_config, manhole_device

from citynerve.drivers.bthome import BTHomeDriver
from citynerve.gateway.api import EventState
from citynerve.gateway.bus.owner import BusOwner
from citynerve.hil.sim.ble import ManholeCoverNode, VirtualRadio


class OwnerSink(RecordingSink):
    def __init__(self) -> None:
        super().__init__()
        self.offline: list[str] = []

    def mark_offline(self, device_id: str, ts: float) -> None:
        self.offline.append(device_id)


async def test_missed_heartbeats_offline_then_online(radio: VirtualRadio) -> None:
    bus = bus_config(radio, offline_after=2, backoff_initial_s=0.1)
    device = manhole_device(poll_interval_s=0.4)  # heartbeat 0.4 s: offline after 0.8 s unheard
    driver = BTHomeDriver(bus, [device])
    sink = OwnerSink()
    owner = BusOwner(bus, [device], driver, sink)
    task = asyncio.create_task(owner.run(), name="test.owner")
    node = ManholeCoverNode(radio, MAC, key=KEY)
    try:
        await asyncio.sleep(0.2)
        await node.state(tilt_deg=1.0)
        await sink.wait_for(lambda: len(sink.batches) == 1)
        offline = [e for e in sink.events if e.kind == "device_offline"]
        assert offline == []
        await sink.wait_for(lambda: any(e.kind == "device_offline" for e in sink.events), within=5)
        assert sink.offline == ["mh-1"]
        # diagnostics through the owner while it listens
        stats = await owner.diag("stats", {})
        assert stats["devices"]["mh-1"]["accepted"] == 1
        await node.state(tilt_deg=1.5)
        await sink.wait_for(
            lambda: (
                [e.state for e in sink.events if e.kind == "device_offline"]
                == [EventState.RAISED, EventState.CLEARED]
            )
        )
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task


async def test_wrong_key_verdict_names_the_key_not_just_offline(radio: VirtualRadio) -> None:
    """A node heard with another key than configured: status says so, with the rejected count."""
    bus = bus_config(radio, offline_after=2, backoff_initial_s=0.1)
    device = manhole_device(poll_interval_s=0.3)
    driver = BTHomeDriver(bus, [device])
    sink = OwnerSink()
    owner = BusOwner(bus, [device], driver, sink)
    task = asyncio.create_task(owner.run(), name="test.owner")
    node = ManholeCoverNode(radio, MAC, key=bytes(16))  # not the configured KEY
    try:
        await asyncio.sleep(0.2)
        for tilt in range(4):
            await node.state(tilt_deg=float(tilt))
        await sink.wait_for(lambda: driver.stats()["mh-1"].rejected_total >= 4, within=5)
        await sink.wait_for(lambda: sink.offline == ["mh-1"], within=5)
        dev = owner.snapshot()["devices"][0]
        assert dev["state"] == "offline" and dev["cause"] == "wrong_key"
        assert "failed decryption" in dev["reason"] and "key" in dev["reason"]
        assert owner.snapshot()["verdict"]["cause"] == "wrong_key"
        assert dev["radio"]["rejected"]["wrong_key"] >= 4 and dev["radio"]["last_heard"] is None
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task


async def test_node_never_heard_verdict_names_range_and_battery(radio: VirtualRadio) -> None:
    bus = bus_config(radio, offline_after=2, backoff_initial_s=0.1)
    device = manhole_device(poll_interval_s=0.3)
    sink = OwnerSink()
    owner = BusOwner(bus, [device], BTHomeDriver(bus, [device]), sink)
    task = asyncio.create_task(owner.run(), name="test.owner")
    try:
        await sink.wait_for(lambda: sink.offline == ["mh-1"], within=5)
        dev = owner.snapshot()["devices"][0]
        assert dev["cause"] == "never_heard" and "range" in dev["reason"]
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
