"""`diag scan` on the monotonic clock: what was heard during the scan is listed whichever way the
wall clock steps, the longest unheard advertiser is the one forgotten, and a bad duration is a
typed error naming the parameter."""

from __future__ import annotations

import asyncio
import time
from typing import Any

import pytest
from ble_support import KEY, MAC, bus_config, manhole_device

from citynerve.drivers.ble import Advertisement
from citynerve.drivers.bthome import BTHomeDriver, codec
from citynerve.drivers.bthome import driver as driver_mod
from citynerve.gateway.api import DiagParamError, PermanentError
from citynerve.hil.sim.ble import ManholeCoverNode, VirtualRadio

STRANGER = "11:22:33:44:55:66"
EARLIER = "11:22:33:44:55:77"
HOUR = 3600.0


def plaintext(addr: str, temperature: float, ts: float, mono: float | None = None) -> Advertisement:
    """An advert as the backend stamps it: `ts` from the wall clock (stepped here), `mono` now."""
    data = {codec.UUID128: codec.build([(0x02, temperature)])}
    return Advertisement(addr, -70, data, ts, mono=time.monotonic() if mono is None else mono)


async def test_a_wall_clock_step_back_during_a_scan_hides_nobody(radio: VirtualRadio, listening: Any) -> None:
    driver, _sink = await listening([manhole_device()])
    # Heard a second before the scan, on a wall clock an hour fast (a Pi that booted with a wrong
    # time; NTP steps it back before the scan): stamped "later" than the scan's start, not heard in it.
    driver._on_advertisement(plaintext(EARLIER, 19.0, time.time() + HOUR, mono=time.monotonic() - 1.0))
    scan = asyncio.create_task(driver.diag("scan", {"duration": 0.3}))
    await asyncio.sleep(0)  # the scan has started (the adapter already scans: nothing to await)
    # During the scan the wall clock steps back an hour more (an operator's fix, a bad NTP source).
    driver._on_advertisement(plaintext(STRANGER, 21.5, time.time() - HOUR))
    await ManholeCoverNode(radio, MAC, key=KEY).state(tilt_deg=7.0)  # stamped by the backend
    result = await scan
    by_mac = {d["address"]: d for d in result["devices"]}
    assert set(by_mac) == {STRANGER, MAC}
    assert by_mac[STRANGER]["values"] == {"temperature": 21.5}
    assert driver.nearby[STRANGER].ts < driver.nearby[EARLIER].ts  # shown as stamped, not compared


def test_the_longest_unheard_is_forgotten_whatever_the_wall_clock_says(radio: VirtualRadio) -> None:
    driver = BTHomeDriver(bus_config(radio), [manhole_device()])
    wall = time.time()
    for i in range(driver_mod.NEARBY_MAX + 1):  # the wall clock steps back while they are heard
        adv = plaintext(f"11:22:33:44:{i >> 8:02X}:{i & 0xFF:02X}", 20.0, wall - i * HOUR, mono=float(i))
        driver._on_advertisement(adv)
    assert len(driver.nearby) == driver_mod.NEARBY_MAX
    assert "11:22:33:44:00:00" not in driver.nearby  # heard first
    assert f"11:22:33:44:{driver_mod.NEARBY_MAX >> 8:02X}:00" in driver.nearby  # heard last


@pytest.mark.parametrize("duration", ["abc", None, [5], True, 0, -1, 301, float("nan"), float("inf")])
async def test_a_bad_scan_duration_is_a_typed_error(radio: VirtualRadio, duration: object) -> None:
    driver = BTHomeDriver(bus_config(radio), [manhole_device()])
    with pytest.raises(DiagParamError) as info:
        await driver.diag("scan", {"duration": duration})
    assert isinstance(info.value, PermanentError)
    assert (info.value.action, info.value.param) == ("scan", "duration")
    assert "seconds" in str(info.value) and repr(duration) in str(info.value)
