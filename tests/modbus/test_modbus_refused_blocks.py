"""A device that refuses two of its blocks at every poll (a profile of more registers than the meter
has), polled by a real BusOwner and ModbusDriver against a real pymodbus server: the journal gets one
line per refused block, not two per poll for ever; a changed refusal is logged again."""

from __future__ import annotations

import asyncio
import logging
import random

import pytest
from modbus_support import LOCATION, device_model, start_bank_server

from citynerve.drivers.modbus.config import ModbusTcpBusConfig
from citynerve.drivers.modbus.driver import ModbusDriver
from citynerve.gateway.api import Event, SampleBatch
from citynerve.gateway.bus import BusOwner


class Sink:
    def __init__(self) -> None:
        self.events: list[Event] = []
        self.answered = 0  # polls of the block the device answers
        self.polled = asyncio.Event()

    def submit(self, batch: SampleBatch) -> None:
        if any(s.point == "ok" for s in batch.samples):
            self.answered += 1
        self.polled.set()

    async def until(self, polls: int) -> None:
        async with asyncio.timeout(20):
            while self.answered < polls:
                self.polled.clear()
                await self.polled.wait()

    def event(self, event: Event) -> None:
        self.events.append(event)

    def mark_offline(self, device_id: str, ts: float) -> None:
        pass


async def test_two_refused_blocks_log_once_each_over_many_polls(caplog: pytest.LogCaptureFixture) -> None:
    srv = await start_bank_server((1,))
    bank = srv.banks[1]
    bank.exceptions = {("holding", 250): 2, ("holding", 350): 2}  # illegal data address
    bus = ModbusTcpBusConfig(id="b1", host=srv.host, port=srv.port, timeout_s=0.3, min_poll_interval_s=0.05)
    meter = device_model(
        id="em-1", bus="b1", profile="t", address=1, location=LOCATION, poll_interval_s=0.05,
        points={
            "ok": {"table": "holding", "address": 0},
            "bad_a": {"table": "holding", "address": 250},
            "bad_b": {"table": "holding", "address": 350},
        },
    )  # fmt: skip
    caplog.set_level(logging.INFO, logger="citynerve.bus")
    sink = Sink()
    owner = BusOwner(bus, [meter], ModbusDriver(bus, [meter]), sink, rng=random.Random(1))

    task = asyncio.create_task(owner.run())
    try:
        await sink.until(20)
        lines = [r.getMessage() for r in caplog.records if r.name == "citynerve.bus"]
        assert lines == [
            "bus b1: device em-1: error 0x02 (illegal data address) for bad_a",
            "bus b1: device em-1: error 0x02 (illegal data address) for bad_b",
        ]
        bank.exceptions[("holding", 350)] = 4  # the device's answer changes: news
        await sink.until(30)
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
        await srv.server.shutdown()
    lines = [r.getMessage() for r in caplog.records if r.name == "citynerve.bus"]
    assert lines[2:] == ["bus b1: device em-1: error 0x04 (server device failure) for bad_b"]
    health = owner.health["em-1"]
    assert health.errors >= 2 * 29 and health.online is True  # the technician still sees each one
    assert health.last_error is not None and "error 0x0" in health.last_error
    assert owner.counters.exceptions == health.errors and sink.events == []
