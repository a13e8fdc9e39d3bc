"""Fixtures for the BLE tests: a virtual radio, a recording sink, an in-memory state store."""

from __future__ import annotations

import asyncio
import contextlib
import itertools
from collections.abc import AsyncIterator, Callable
from typing import Any

import pytest

from drivers.ble import BleBusConfig
from drivers.bthome import BTHomeDevice, BTHomeDriver
from gateway.api import Event, SampleBatch, SampleSink, StateStore
from hil.sim.ble import VirtualRadio

KEY = bytes.fromhex("231d39c1d7cc1ab1aee224cd096db932")
MAC = "A4:C1:38:00:00:01"

_names = itertools.count()


class RecordingSink(SampleSink):
    """Collects what the driver delivers; `wait_for` blocks until a predicate holds."""

    def __init__(self) -> None:
        self.batches: list[SampleBatch] = []
        self.events: list[Event] = []
        self._changed = asyncio.Event()

    def submit(self, batch: SampleBatch) -> None:
        self.batches.append(batch)
        self._changed.set()

    def event(self, event: Event) -> None:
        self.events.append(event)
        self._changed.set()

    async def wait_for(self, predicate: Callable[[], bool], within: float = 5.0) -> None:
        async with asyncio.timeout(within):
            while not predicate():
                self._changed.clear()
                await self._changed.wait()


class MemoryState(StateStore):
    """A StateStore in a dict (the real one is the SQLite outbox, used in test_e2e_outbox)."""

    def __init__(self) -> None:
        self.data: dict[str, str] = {}
        self.puts = 0

    async def get(self, key: str) -> str | None:
        return self.data.get(key)

    async def put(self, key: str, value: str) -> None:
        self.puts += 1
        self.data[key] = value


@pytest.fixture
def radio() -> Any:
    with VirtualRadio(f"test{next(_names)}") as r:
        yield r


def bus_config(radio: VirtualRadio, **kw: Any) -> BleBusConfig:
    return BleBusConfig(id="ble0", protocol="bthome", backend="bumble", transport=radio.transport, **kw)


def manhole_device(mac: str = MAC, key: bytes | None = KEY, dev_id: str = "mh-1", **kw: Any) -> BTHomeDevice:
    points = {
        "tilt": {"object": "rotation", "unit": "°"},
        "water_level": {"object": "distance_mm", "unit": "mm"},
        "battery": {"object": "battery", "unit": "%"},
        "voltage": {"object": "voltage", "unit": "V"},
        "tilt_alarm": {"object": "opening", "event_kind": "manhole_tilt", "event_severity": "critical"},
        "water_high": {"object": "moisture_detected", "event_kind": "manhole_water_high"},
        "tamper": {"object": "tamper", "event_kind": "manhole_tamper"},
    }
    data: dict[str, Any] = {
        "id": dev_id,
        "bus": "ble0",
        "profile": "bthome-manhole-cover",
        "address": mac,
        "location": {"address_code": "320508001"},
        "component_code": "3205080101000001",
        "poll_interval_s": 60,
        "points": {name: {**p, "name": name} for name, p in points.items()},
        **kw,
    }
    if key is not None:
        data["key"] = key.hex()
    return BTHomeDevice.model_validate(data)


@pytest.fixture
async def listening(radio: VirtualRadio) -> AsyncIterator[Callable[..., Any]]:
    """Start a driver listening on the radio; yields a factory (devices, state) -> (driver, sink)."""
    tasks: list[asyncio.Task[None]] = []
    drivers: list[BTHomeDriver] = []

    async def start(
        devices: list[BTHomeDevice], state: StateStore | None = None, **bus_kw: Any
    ) -> tuple[BTHomeDriver, RecordingSink]:
        driver = BTHomeDriver(bus_config(radio, **bus_kw), devices, state)
        await driver.open()
        sink = RecordingSink()
        tasks.append(asyncio.create_task(driver.listen(sink), name="test.listen"))
        drivers.append(driver)
        return driver, sink

    yield start
    for t in tasks:
        t.cancel()
    for t in tasks:
        with contextlib.suppress(asyncio.CancelledError):
            await t
    for d in drivers:
        await d.close()
