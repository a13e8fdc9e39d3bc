"""A node over the advert rate, on the bumble virtual radio with the real listening driver and a
stepped monotonic clock: a refused advert leaves the node's counter as it was (its repeat is then
delivered, not refused as a replay)."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Callable

import pytest
from ble_support import KEY, MAC, MemoryState, RecordingSink, bus_config, manhole_device

from citynerve.drivers.bthome import BTHomeDevice, BTHomeDriver
from citynerve.drivers.bthome import driver as driver_mod
from citynerve.hil.sim.ble import ManholeCoverNode, VirtualRadio


class Clock:
    """The driver's monotonic clock, stepped by the test."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
async def stepped(radio: VirtualRadio) -> AsyncIterator[tuple[Clock, Callable[..., object]]]:
    clock = Clock()
    tasks: list[asyncio.Task[None]] = []
    drivers: list[BTHomeDriver] = []

    async def start(devices: list[BTHomeDevice]) -> tuple[BTHomeDriver, RecordingSink]:
        driver = BTHomeDriver(bus_config(radio), devices, MemoryState(), clock=clock)
        await driver.open()
        sink = RecordingSink()
        tasks.append(asyncio.create_task(driver.listen(sink), name="test.listen"))
        drivers.append(driver)
        return driver, sink

    yield clock, start
    for t in tasks:
        t.cancel()
    for t in tasks:
        with contextlib.suppress(asyncio.CancelledError):
            await t
    for d in drivers:
        await d.close()


async def handled(driver: BTHomeDriver, n: int) -> None:
    """Until the driver has taken `n` adverts of mh-1 (delivered, repeats, refused or over rate)."""
    s = driver.stats()["mh-1"]
    for _ in range(500):
        if s.accepted + s.duplicates + s.rate_limited + s.rejected_total >= n:
            return
        await asyncio.sleep(0.01)
    raise AssertionError(f"the driver took {n} adverts: {s.as_dict()}")


async def test_a_rate_limited_advert_repeated_later_is_delivered(
    radio: VirtualRadio, stepped: tuple[Clock, Callable[..., object]]
) -> None:
    clock, start = stepped
    driver, sink = await start([manhole_device()])  # type: ignore[misc]
    node = ManholeCoverNode(radio, MAC, key=KEY)
    await node.advertiser.power_on()
    fresh = driver_mod.ADVERTS_BURST + 9
    payload = b""
    for i in range(fresh):  # an alarm flapping: more fresh adverts at once than the burst
        payload = node.payload(node.objects(tilt_deg=float(i)))
        node.advertiser.send_now(payload)
    await handled(driver, fresh)
    stats = driver.stats()["mh-1"]
    assert (stats.accepted, stats.rate_limited) == (driver_mod.ADVERTS_BURST, 9)
    clock.now += 1.0  # the node repeats its last advert a second later; the rate allows it now
    node.advertiser.send_now(payload)
    await handled(driver, fresh + 1)
    assert stats.rejected == {} and stats.accepted == driver_mod.ADVERTS_BURST + 1
    assert stats.last_counter == node.counter - 1
    last = {s.point: s.value for s in sink.batches[-1].samples}
    assert last["tilt"] == float(fresh - 1)  # the node's latest reading reached the gateway
    await node.close()
