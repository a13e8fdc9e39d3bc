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


BAD = b"\x40\xff\x01"  # plaintext BTHome v2, unknown object id 0xff: malformed


def transitions(caplog: pytest.LogCaptureFixture) -> tuple[list[str], list[str]]:
    msgs = [r.getMessage() for r in caplog.records if r.name == driver_mod.__name__]
    return [m for m in msgs if "advert rejected" in m], [m for m in msgs if "accepted again" in m]


async def test_a_node_flapping_between_good_and_bad_adverts_logs_once_a_minute(
    radio: VirtualRadio, stepped: tuple[Clock, Callable[..., object]], caplog: pytest.LogCaptureFixture
) -> None:
    """Five minutes of a plaintext node alternating good and malformed adverts at the rate the node
    may send (2 fresh adverts/s): every good one is delivered, the log has at most one
    rejected/accepted-again pair a minute, with the changes in between counted."""
    caplog.set_level("INFO", logger=driver_mod.__name__)
    clock, start = stepped
    driver, sink = await start([manhole_device(key=None)])  # type: ignore[misc]
    node = ManholeCoverNode(radio, MAC)
    await node.advertiser.power_on()
    sent = 0
    for _ in range(100):  # 3 s a step: 6 good and 6 bad adverts
        for _ in range(6):
            node.advertiser.send_now(node.payload(node.objects(tilt_deg=1.0)))
            node.advertiser.send_now(BAD)
            sent += 2
        await handled(driver, sent)
        clock.now += 3.0
    stats = driver.stats()["mh-1"]
    assert stats.accepted == 600 and stats.rate_limited == 0 and stats.rejected_total == 600
    assert len(sink.batches) == 600
    rejected, recovered = transitions(caplog)
    assert 1 <= len(rejected) <= 5 and len(recovered) == len(rejected), (rejected, recovered)
    assert "(120 times since the last such line" in rejected[1], rejected  # 2 changes a second, counted
    # The node's last change (to rejected) was not logged: the log catches up a minute after its
    # last line, so it does not end on "accepted again" while the node keeps failing.
    node.advertiser.send_now(BAD)
    await handled(driver, sent + 1)
    assert [len(m) for m in transitions(caplog)] == [len(rejected) + 1, len(recovered)]
    await node.close()


async def test_adverts_refused_by_the_rate_do_not_log_accepted_again(
    radio: VirtualRadio, stepped: tuple[Clock, Callable[..., object]], caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level("INFO", logger=driver_mod.__name__)
    clock, start = stepped
    driver, _ = await start([manhole_device(key=None)])  # type: ignore[misc]
    node = ManholeCoverNode(radio, MAC)
    await node.advertiser.power_on()
    for _ in range(driver_mod.ADVERTS_BURST):  # the burst used up, the clock does not move
        node.advertiser.send_now(node.payload(node.objects(tilt_deg=1.0)))
    for _ in range(50):
        node.advertiser.send_now(BAD)
        node.advertiser.send_now(node.payload(node.objects(tilt_deg=2.0)))  # over the rate
    await handled(driver, driver_mod.ADVERTS_BURST + 100)
    stats = driver.stats()["mh-1"]
    assert stats.rate_limited == 50 and stats.failing
    assert [len(m) for m in transitions(caplog)] == [1, 0]  # the node's adverts are not accepted
    clock.now += 1.0
    node.advertiser.send_now(node.payload(node.objects(tilt_deg=3.0)))
    await handled(driver, driver_mod.ADVERTS_BURST + 101)
    assert not stats.failing and [len(m) for m in transitions(caplog)] == [1, 1]
    await node.close()
