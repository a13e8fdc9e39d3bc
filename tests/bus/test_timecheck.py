"""Time on screen: skew of the gateway's clock against CJ/T 188 meters' own clocks (real driver,
simulated meters on a pty), the kernel's NTP state, and the verdict when meters agree and we do not."""

from __future__ import annotations

import asyncio
import contextlib
import time

from citynerve.drivers.cjt188 import Cjt188Device, Cjt188Driver
from citynerve.drivers.serialio import SerialBusConfig
from citynerve.gateway.api import Event, Sample, SampleBatch
from citynerve.gateway.bus import BusOwner
from citynerve.gateway.timecheck import meter_clock_skew, time_status
from citynerve.gateway.timesync import kernel_state
from citynerve.hil.sim.serial import SerialMeterBus, SimCjt188Meter

DAY = 86400.0


def test_meter_clock_skew_reads_local_wall_time() -> None:
    now = float(int(time.time()))  # whole seconds: the meter's clock has no fraction
    local = time.strftime("%Y-%m-%dT%H:%M:%S", time.localtime(now + 120))
    assert meter_clock_skew([Sample("flow_total", 1.0), Sample("meter_time", local)], now) == 120.0
    assert meter_clock_skew([Sample("meter_time", "not a time")], now) is None
    assert meter_clock_skew([Sample("flow_total", 1.0)], now) is None


def test_kernel_clock_state_is_read_without_privilege() -> None:
    synced, max_error_s = kernel_state()
    assert synced in (True, False)
    assert max_error_s is not None and max_error_s >= 0


def test_verdict_needs_meters_that_agree() -> None:
    # one meter can be the wrong one
    assert time_status({"a": 2 * DAY}, synchronized=True)["verdict"] != "clock_wrong"
    st = time_status({"a": -2 * DAY, "b": -2 * DAY + 30}, synchronized=True)
    assert st["verdict"] == "clock_wrong" and "2.0 days ahead of 2 meters" in st["reason"]
    assert time_status({"a": 3.0, "b": -4.0}, synchronized=True)["verdict"] == "ok"
    assert time_status({}, synchronized=False)["verdict"] == "not_synchronized"


def test_the_platforms_clock_from_its_acks() -> None:
    st = time_status({}, synchronized=True, platform_skew_s=-2 * DAY)
    assert st["verdict"] == "clock_wrong" and "2.0 days ahead of the platform's" in st["reason"]
    assert st["platform_skew_s"] == -2 * DAY
    assert time_status({}, synchronized=True, platform_skew_s=0.4)["verdict"] == "ok"
    assert time_status({}, synchronized=True)["platform_skew_s"] is None


class Sink:
    def submit(self, batch: SampleBatch) -> None:
        pass

    def event(self, event: Event) -> None:
        pass

    def mark_offline(self, device_id: str, ts: float) -> None:
        pass


def water(address: str) -> Cjt188Device:
    return Cjt188Device.model_validate(
        {
            "id": f"wm-{address[-2:]}",
            "bus": "rs485-1",
            "profile": "cjt188-water",
            "address": address,
            "location": {"address_code": "320508001"},
            "poll_interval_s": 0.1,
            "points": {
                "flow_total": {"field": "flow_total", "unit": "m3"},
                "meter_time": {"field": "meter_time"},
            },
        }
    )


async def test_gateway_clock_two_days_ahead_of_the_meters_is_named() -> None:
    meters = [SimCjt188Meter(a, clock_offset_s=-2 * DAY) for a in ("00000000000012", "00000000000013")]
    devices = [water(m.address) for m in meters]
    async with SerialMeterBus(meters=meters, baudrate=9600) as sim:
        bus = SerialBusConfig(
            id="rs485-1", protocol="cjt188", port=sim.port, baudrate=9600, timeout_s=0.5, gap_s=0
        )
        owner = BusOwner(bus, devices, Cjt188Driver(bus, devices), Sink())
        task = asyncio.create_task(owner.run(), name="test.owner")
        try:
            async with asyncio.timeout(20):
                while True:
                    if len(owner.quality.meter_skew) >= 2:
                        break
                    await asyncio.sleep(0.05)
        finally:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
    st = time_status(owner.quality.meter_skew, synchronized=True)
    assert st["verdict"] == "clock_wrong"
    assert abs(st["median_meter_skew_s"] + 2 * DAY) < 60
    assert "gateway clock is 2.0 days ahead of 2 meters" in st["reason"]


async def test_dlt645_meters_date_and_time_dis_give_the_skew() -> None:
    from citynerve.drivers.dlt645 import Dlt645Device, Dlt645Driver
    from citynerve.hil.sim.serial import SimDlt645Meter

    meters = [SimDlt645Meter(a, clock_offset_s=-2 * DAY) for a in ("000000000161", "000000000162")]
    devices = [
        Dlt645Device.model_validate(
            {
                "id": f"em-{m.address[-3:]}",
                "bus": "rs485-1",
                "profile": "dlt645-generic",
                "address": m.address,
                "location": {"address_code": "320508001"},
                "poll_interval_s": 0.1,
                "points": {"meter_date": {"di": "04000101"}, "meter_clock_hms": {"di": "04000102"}},
            }
        )
        for m in meters
    ]
    async with SerialMeterBus(meters=meters, baudrate=9600) as sim:
        bus = SerialBusConfig(
            id="rs485-1", protocol="dlt645", port=sim.port, baudrate=9600, timeout_s=0.5, gap_s=0
        )
        owner = BusOwner(bus, devices, Dlt645Driver(bus, devices), Sink())
        task = asyncio.create_task(owner.run(), name="test.owner")
        try:
            async with asyncio.timeout(20):
                while True:
                    if len(owner.quality.meter_skew) >= 2:
                        break
                    await asyncio.sleep(0.05)
        finally:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
    st = time_status(owner.quality.meter_skew, synchronized=True)
    assert st["verdict"] == "clock_wrong" and abs(st["median_meter_skew_s"] + 2 * DAY) < 60
