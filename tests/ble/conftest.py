"""Fixtures for the BLE tests: a virtual radio and a listening driver."""

from __future__ import annotations

import asyncio
import contextlib
import itertools
from collections.abc import AsyncIterator, Callable
from typing import Any

import pytest
from ble_support import RecordingSink, bus_config

from citynerve.drivers.bthome import BTHomeDevice, BTHomeDriver
from citynerve.gateway.api import StateStore
from citynerve.hil.sim.ble import VirtualRadio

_names = itertools.count()


@pytest.fixture
def radio() -> Any:
    with VirtualRadio(f"test{next(_names)}") as r:
        yield r


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
