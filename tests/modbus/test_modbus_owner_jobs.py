"""An asker that gives up while its job runs on the bus (a local action's timeout, the platform
command's timeout, a technician's Ctrl-C) must not hurt the bus owner: the job is cancelled with
it, polling goes on, health is kept. Real pymodbus server, real ModbusDriver and BusOwner."""

from __future__ import annotations

import asyncio
import random

import pytest
from modbus_support import LOCATION, device_model, start_bank_server

from citynerve.drivers.modbus.config import ModbusTcpBusConfig
from citynerve.drivers.modbus.driver import ModbusDriver
from citynerve.gateway.api import Event, SampleBatch
from citynerve.gateway.bus import BusOwner


class Sink:
    def __init__(self) -> None:
        self.batches: list[SampleBatch] = []
        self.events: list[Event] = []
        self.polled = asyncio.Event()

    def submit(self, batch: SampleBatch) -> None:
        self.batches.append(batch)
        self.polled.set()

    def event(self, event: Event) -> None:
        self.events.append(event)

    def mark_offline(self, device_id: str, ts: float) -> None:
        pass

    async def next_poll(self, limit_s: float = 5.0) -> None:
        self.polled.clear()
        async with asyncio.timeout(limit_s):
            await self.polled.wait()


def _job_tasks(bus_id: str) -> list[asyncio.Task[object]]:
    return [t for t in asyncio.all_tasks() if t.get_name().startswith(f"bus[{bus_id}].") and not t.done()]


async def test_an_asker_that_gives_up_during_its_write_does_not_crash_the_owner() -> None:
    srv = await start_bank_server((1,))  # unit 9 is silent: its write waits for the 0.5 s timeout
    bus = ModbusTcpBusConfig(id="b1", host=srv.host, port=srv.port, timeout_s=0.5)
    ok = device_model(
        id="ok", bus="b1", profile="t", address=1, location=LOCATION, poll_interval_s=0.2,
        points={"v": {"table": "holding", "address": 0}},
    )  # fmt: skip
    valve = device_model(
        id="valve", bus="b1", profile="t", address=9, location=LOCATION, poll_interval_s=60,
        points={"set": {"table": "holding", "address": 0, "writable": True}},
    )  # fmt: skip
    sink = Sink()
    owner = BusOwner(bus, [ok, valve], ModbusDriver(bus, [ok, valve]), sink, rng=random.Random(1))
    task = asyncio.create_task(owner.run())
    try:
        await sink.next_poll()
        health_before = owner.health["ok"]
        with pytest.raises(TimeoutError):  # a local action with a 0.1 s timeout (rules/actions.py)
            await asyncio.wait_for(owner.write("valve", "set", 1), 0.1)
        await asyncio.sleep(0)
        assert _job_tasks("b1") == []  # the write was cancelled with its asker
        for _ in range(3):  # the owner polls on, same owner, same health
            await sink.next_poll()
        assert not task.done()
        assert owner.health["ok"] is health_before and owner.health["ok"].online is True
        assert owner.channel_open and not sink.events
        assert (await owner.read_now("ok"))[0].value == 0  # and answers the next asker
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
        await srv.server.shutdown()


async def test_a_cancelled_scan_stops_using_the_line_and_polling_resumes() -> None:
    srv = await start_bank_server((1,))
    bus = ModbusTcpBusConfig(id="b1", host=srv.host, port=srv.port, timeout_s=0.5)
    dev = device_model(
        id="m1", bus="b1", profile="t", address=1, location=LOCATION, poll_interval_s=0.2,
        points={"v": {"table": "holding", "address": 0}},
    )  # fmt: skip
    sink = Sink()
    owner = BusOwner(bus, [dev], ModbusDriver(bus, [dev]), sink, rng=random.Random(1))
    task = asyncio.create_task(owner.run())
    try:
        await sink.next_poll()
        # 20 silent units x 0.5 s: a 10 s scan, abandoned by the technician
        asker = asyncio.create_task(owner.diag("scan", {"first": 2, "last": 21, "timeout_s": 0.5}))
        for _ in range(500):  # until the owner runs the scan
            if owner._in_diag:
                break
            await asyncio.sleep(0.01)
        assert owner._in_diag
        asker.cancel()
        with pytest.raises(asyncio.CancelledError):
            await asker
        await asyncio.sleep(0)
        assert _job_tasks("b1") == []  # the scan stopped with its asker
        reads_before = len(srv.banks[1].requests)
        await sink.next_poll(limit_s=2.0)  # polling resumes at once, not after the scan's 10 s
        assert len(srv.banks[1].requests) > reads_before
        assert not task.done() and not owner._in_diag
        # a scan that runs to its end still answers its asker
        result = await owner.diag("scan", {"first": 1, "last": 2, "timeout_s": 0.2})
        assert [a["unit"] for a in result["answered"]] == [1]
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
        await srv.server.shutdown()
