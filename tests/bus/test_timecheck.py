"""Time on screen: skew of the gateway's clock against CJ/T 188 meters' own clocks (real driver,
simulated meters on a pty), the kernel's NTP state, and the verdict when meters agree and we do not.
Meters keep the site's wall time (`[gateway] tz`): the system's zone must not change the verdict."""

from __future__ import annotations

import asyncio
import contextlib
import textwrap
import time
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest

from citynerve.drivers.cjt188 import Cjt188Device, Cjt188Driver
from citynerve.drivers.serialio import SerialBusConfig
from citynerve.gateway.alarms import ActiveAlarms
from citynerve.gateway.api import ConfigError, Event, Sample, SampleBatch
from citynerve.gateway.bus import BusOwner
from citynerve.gateway.config import load_config
from citynerve.gateway.timecheck import MeterClocks, meter_clock_skew, time_status
from citynerve.gateway.timesync import kernel_state
from citynerve.gateway.wiring import BusWiring
from citynerve.hil.sim.serial import SerialMeterBus, SimCjt188Meter

DAY = 86400.0
SHANGHAI = ZoneInfo("Asia/Shanghai")
ZURICH = ZoneInfo("Europe/Zurich")


@pytest.fixture(params=["Asia/Shanghai", "UTC", "Europe/London"])
def system_tz(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    """The process's own zone (TZ, as an image's /etc/localtime would set it)."""
    monkeypatch.setenv("TZ", request.param)
    time.tzset()
    yield request.param
    monkeypatch.undo()
    time.tzset()


def wall(ts: float, tz: ZoneInfo) -> str:
    """A meter's clock: wall time in `tz`, no offset."""
    return datetime.fromtimestamp(ts, tz).replace(tzinfo=None).isoformat(timespec="seconds")


def test_meter_clock_skew_reads_the_sites_wall_time(system_tz: str) -> None:
    now = float(int(time.time()))  # whole seconds: the meter's clock has no fraction
    local = wall(now + 120, SHANGHAI)
    assert meter_clock_skew([Sample("flow_total", 1.0), Sample("meter_time", local)], now) == 120.0
    assert meter_clock_skew([Sample("meter_time", wall(now - 60, ZURICH))], now, ZURICH) == -60.0
    assert meter_clock_skew([Sample("meter_time", "not a time")], now) is None
    assert meter_clock_skew([Sample("flow_total", 1.0)], now) is None


def test_right_meter_clocks_do_not_call_the_gateway_clock_wrong(system_tz: str) -> None:
    # An image left at UTC made two right Beijing meters say "the gateway clock is 8.0 h behind".
    now = time.time()
    clocks = MeterClocks()
    skews = {d: clocks.observe(d, [Sample("meter_time", wall(now, SHANGHAI))], now) for d in ("wm-1", "wm-2")}
    st = time_status({d: s for d, s in skews.items() if s is not None}, synchronized=True, now=now)
    assert st["verdict"] == "ok", st["reason"]
    # DL/T 645: date and time from two DIs, joined, in the site's zone too
    date, hms = datetime.fromtimestamp(now, ZURICH).strftime("%y%m%d0%w %H%M%S").split()
    zurich = MeterClocks(ZURICH)
    assert zurich.observe("em-1", [Sample("meter_date", date)], now) is None
    skew = zurich.observe("em-1", [Sample("meter_clock_hms", hms)], now)
    assert skew is not None and abs(skew) < 2


def test_the_hour_dst_repeats_reads_as_the_pass_nearer_our_clock() -> None:
    # 2026-10-25 02:30 happens twice in Zurich: 00:30 UTC (CEST) and 01:30 UTC (CET)
    first, second = (datetime(2026, 10, 25, 2, 30, fold=f, tzinfo=ZURICH).timestamp() for f in (0, 1))
    assert second - first == 3600
    for now in (first, second):
        assert meter_clock_skew([Sample("meter_time", "2026-10-25T02:30:00")], now + 5, ZURICH) == -5.0


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


def gateway_toml(tmp_path: Path, port: str, tz_line: str, addresses: tuple[str, ...] = ()) -> Path:
    devices = "".join(
        f"""
        [[devices]]
        id = "wm-{a[-2:]}"
        bus = "water"
        profile = "cjt188-water-cold"
        address = "{a}"
        poll_interval_s = 1
        location = {{ address_code = "320508001" }}
        """
        for a in addresses
    )
    path = tmp_path / "gw.toml"
    path.write_text(
        textwrap.dedent(
            f"""
            [gateway]
            id = "gw-1"
            org = {{ city = "310100", district = "310106", street = "310106013" }}
            {tz_line}

            [[buses]]
            id = "water"
            protocol = "cjt188"
            port = "{port}"
            baudrate = 9600
            timeout_s = 0.5
            gap_s = 0
            """
        )
        + textwrap.dedent(devices)
    )
    return path


def test_the_sites_zone_is_a_gateway_setting(tmp_path: Path) -> None:
    assert load_config(gateway_toml(tmp_path, "/dev/null", "")).gateway.tz == "Asia/Shanghai"
    zurich = load_config(gateway_toml(tmp_path, "/dev/null", 'tz = "Europe/Zurich"'))
    assert zurich.gateway.tz == "Europe/Zurich"
    for bad in ("CST", "Asia/Beijing", "../etc/passwd", "+08:00"):
        with pytest.raises(ConfigError) as info:
            load_config(gateway_toml(tmp_path, "/dev/null", f'tz = "{bad}"'))
        issues = {i.path: i.message for i in info.value.issues}
        assert list(issues) == ["gateway.tz"], issues
        assert "unknown time zone" in issues["gateway.tz"] and "Asia/Shanghai" in issues["gateway.tz"]


class State:
    def __init__(self) -> None:
        self.values: dict[str, str] = {}

    async def get(self, key: str) -> str | None:
        return self.values.get(key)

    async def put(self, key: str, value: str) -> None:
        self.values[key] = value


async def test_a_gateway_reads_its_meters_clocks_in_its_configured_zone(
    tmp_path: Path, system_tz: str
) -> None:
    """Zurich meters with right clocks, a gateway configured for Zurich, whatever the system's zone:
    the bus owner the runtime wires reads them right (Asia/Shanghai would put them 6-7 h behind)."""
    meters = [SimCjt188Meter(a, tz="Europe/Zurich") for a in ("00000000000012", "00000000000013")]
    async with SerialMeterBus(meters=meters, baudrate=9600) as sim:
        path = gateway_toml(tmp_path, sim.port, 'tz = "Europe/Zurich"', tuple(m.address for m in meters))
        wiring = BusWiring(config=load_config(path), sink=Sink(), state=State(), alarms=ActiveAlarms())
        owner = wiring.owner("water")
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
    assert st["verdict"] == "ok", st["reason"]
    assert abs(st["median_meter_skew_s"]) < 60
