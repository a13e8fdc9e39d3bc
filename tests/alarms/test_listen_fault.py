"""A listening bus: a batch of one device that the gateway cannot handle faults that device only;
the listener keeps delivering the other devices' batches, and the fault clears once it is handled."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Sequence

from citynerve.gateway.api import (
    BusConfig,
    DeviceConfig,
    Event,
    ListenDriver,
    Location,
    PointConfig,
    Sample,
    SampleBatch,
    SampleSink,
)
from citynerve.gateway.bus import FAULT_KIND, BusOwner


def device(dev_id: str) -> DeviceConfig:
    return DeviceConfig(
        id=dev_id, bus="l1", profile="p", address=dev_id, location=Location(address_code="310106013001"),
        poll_interval_s=60, points={"v": PointConfig(name="v")},
    )  # fmt: skip


class Chatter(ListenDriver[BusConfig, DeviceConfig]):
    """A listener whose devices each speak every 10 ms (no peer needed: the test is the owner's)."""

    async def open(self) -> None:
        pass

    async def close(self) -> None:
        pass

    async def listen(self, sink: SampleSink) -> None:
        n = 0
        while True:
            n += 1
            for dev_id in self.devices:
                sink.submit(SampleBatch(dev_id, float(n), (Sample("v", n),)))
            await asyncio.sleep(0.01)


class Sink:
    """The BusSink protocol: keeps what it is given; `broken` devices' batches raise (a bug)."""

    def __init__(self) -> None:
        self.batches: dict[str, int] = {}
        self.events: list[Event] = []
        self.broken = {"bad"}

    def submit(self, batch: SampleBatch) -> None:
        if batch.device_id in self.broken:
            raise RuntimeError("cannot handle this batch")
        self.batches[batch.device_id] = self.batches.get(batch.device_id, 0) + 1

    def event(self, event: Event) -> None:
        self.events.append(event)

    def mark_offline(self, device_id: str, ts: float) -> None:
        pass


async def wait(cond: object, timeout_s: float = 10.0) -> None:
    assert callable(cond)
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout_s
    while not cond():
        assert loop.time() < deadline, "timed out"
        await asyncio.sleep(0.01)


async def test_one_device_faulted_the_listener_goes_on() -> None:
    devices: Sequence[DeviceConfig] = [device("good"), device("bad")]
    bus = BusConfig(id="l1", protocol="test")
    sink = Sink()
    owner = BusOwner(bus, devices, Chatter(bus, devices), sink)
    task = asyncio.create_task(owner.run())
    try:
        await wait(lambda: sink.batches.get("good", 0) >= 20)
        assert owner.health["bad"].faulted and "cannot handle" in owner.health["bad"].faulted
        faults = [(e.device_id, str(e.state)) for e in sink.events if e.kind == FAULT_KIND]
        assert faults == [("bad", "raised")]  # once, not per batch
        assert not task.done()
        sink.broken.clear()
        await wait(lambda: sink.batches.get("bad", 0) > 0)
        await wait(lambda: owner.health["bad"].faulted is None)
        faults = [(e.device_id, str(e.state)) for e in sink.events if e.kind == FAULT_KIND]
        assert faults == [("bad", "raised"), ("bad", "cleared")]
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
