"""The DL/T 645 driver against simulated meters on a pty pair: several meters, follow-ups, 1997,
extra DIs from config, error replies, injected line faults, diagnostics."""

from __future__ import annotations

from collections.abc import Sequence

import pytest
from pydantic import ValidationError
from serial_support import bus_config, dlt_device

from citynerve.drivers.dlt645 import DRIVER, Dlt645Driver, codec
from citynerve.drivers.dlt645.registry import DataFormat, DataItem
from citynerve.gateway.api import (
    DeviceExceptionError,
    DeviceTimeoutError,
    FrameError,
    PermanentError,
    Quality,
    Sample,
)
from citynerve.hil.sim.serial import Fault, SerialMeterBus, SimCjt188Meter, SimDlt645Meter


async def read_all(driver: Dlt645Driver, device_id: str) -> dict[str, Sample]:
    device = driver.devices[device_id]
    out: dict[str, Sample] = {}
    for request in driver.plan(device):
        for sample in await driver.read(device, request):
            out[sample.point] = sample
    return out


@pytest.fixture
async def pinned() -> Sequence[SimDlt645Meter | SimCjt188Meter]:
    return [
        SimDlt645Meter(
            "000000000161",
            values={0x00010000: 0.26, 0x02010100: 100.1, 0x02020100: -1.5, 0x02030000: -0.1234},
        ),
        SimDlt645Meter("000000000162", values={0x00010000: 99999.99}),
        SimCjt188Meter("00000000000012"),  # another protocol on the same line must not confuse anyone
    ]


async def test_spec_names_protocol_and_models() -> None:
    assert (DRIVER.protocol, DRIVER.family, DRIVER.factory) == ("dlt645", "dlt645", Dlt645Driver)
    assert 0x17 not in {f.value for f in codec.Function}  # change-baud is never sent


async def test_two_meters_by_address(pinned: Sequence[SimDlt645Meter | SimCjt188Meter]) -> None:
    async with SerialMeterBus(meters=pinned) as bus:
        devices = [dlt_device("000000000161"), dlt_device("000000000162")]
        driver = Dlt645Driver(bus_config(bus.port), devices)
        await driver.open()
        try:
            first = await read_all(driver, "em-0161")
            second = await read_all(driver, "em-0162")
        finally:
            await driver.close()
    assert {k: s.value for k, s in first.items()} == {
        "energy": 0.26,
        "voltage_a": 100.1,
        "current_a": -1.5,
        "power": -0.1234,
    }
    assert all(s.quality is Quality.GOOD for s in first.values())
    assert second["energy"].value == 99999.99
    assert 200 < float(second["voltage_a"].value or 0) < 260  # moving values stay plausible
    assert bus.requests == 8


async def test_plan_one_request_per_di_with_intervals() -> None:
    device = dlt_device(
        points={
            "e": {"di": "00010000", "poll_interval_s": 900},
            "v": {"di": "02010100"},
            "off": {"di": "02010200", "enabled": False},
        },
        poll_interval_s=30,
    )
    driver = Dlt645Driver(bus_config("/dev/null"), [device])
    plan = driver.plan(device)
    assert [(r.points, r.interval_s) for r in plan] == [(("e",), 900), (("v",), 30)]


async def test_followup_frames_are_joined() -> None:
    meter = SimDlt645Meter("000000000161", values={0x00010000: 1234.56}, split_dis=frozenset({0x00010000}))
    async with SerialMeterBus(meters=[meter]) as bus:
        driver = Dlt645Driver(bus_config(bus.port), [dlt_device(points={"e": {"di": "00010000"}})])
        samples = await read_all(driver, "em-0161")
        await driver.close()
    assert samples["e"].value == 1234.56
    assert bus.requests == 2  # the read and one follow-up (12)


async def test_1997_meter() -> None:
    meter = SimDlt645Meter("000000000161", version="1997", values={0x9010: 321.5, 0xB611: 229})
    async with SerialMeterBus(meters=[meter]) as bus:
        device = dlt_device(
            version="1997", points={"e": {"di": "9010"}, "v": {"di": "B611"}, "i": {"di": "B621"}}
        )
        driver = Dlt645Driver(bus_config(bus.port), [device])
        samples = await read_all(driver, "em-0161")
        await driver.close()
    assert samples["e"].value == 321.5 and samples["v"].value == 229
    assert isinstance(samples["i"].value, float)


async def test_extra_di_from_config_and_point_override() -> None:
    settlement = DataItem(0x04000B01, "settlement day", 2, DataFormat.BCD, 0, False, "", "2007")
    meter = SimDlt645Meter("000000000161", extra={0x04000B01: (settlement, 105)}, values={0x02800002: 49.98})
    device = dlt_device(
        extra_dis={"04000B01": {"name": "settlement day", "length": 2}},
        points={"day": {"di": "04000B01"}, "freq_raw": {"di": "02800002", "format": "hex"}},
    )
    async with SerialMeterBus(meters=[meter]) as bus:
        driver = Dlt645Driver(bus_config(bus.port), [device])
        samples = await read_all(driver, "em-0161")
        await driver.close()
    assert samples["day"].value == 105
    assert samples["freq_raw"].value == "4998"  # raw BCD shown as hex, by the point's override


async def test_unknown_di_error_reply_is_typed() -> None:
    async with SerialMeterBus(meters=[SimDlt645Meter("000000000161")]) as bus:
        device = dlt_device(points={"x": {"di": "04000B02", "length": 2}})
        driver = Dlt645Driver(bus_config(bus.port), [device])
        with pytest.raises(DeviceExceptionError) as info:
            await read_all(driver, "em-0161")
        await driver.close()
    assert (info.value.device_id, info.value.code, info.value.reason, info.value.points) == (
        "em-0161",
        0x02,
        "no such data",
        ("x",),
    )


async def test_config_errors_name_every_bad_point() -> None:
    with pytest.raises(ValidationError) as info:
        dlt_device(points={"a": {"di": "04000B02"}, "b": {"di": "9010"}, "ok": {"di": "00010000"}})
    text = str(info.value)
    assert "points.a: DI 04000B02 is not in the DL/T 645-2007 table" in text
    assert "points.b: DI 9010 does not fit DL/T 645-2007" in text


@pytest.mark.parametrize(
    ("fault", "error"),
    [
        (Fault.BAD_CHECKSUM, FrameError),
        (Fault.TRUNCATED, FrameError),
        (Fault.SILENCE, DeviceTimeoutError),
        (Fault.WRONG_ADDRESS, FrameError),
        (Fault.NOISE, None),
        (Fault.NO_PREAMBLE, None),
    ],
)
async def test_line_faults_then_recovery(fault: Fault, error: type[Exception] | None) -> None:
    meter = SimDlt645Meter("000000000161", values={0x00010000: 42.42})
    async with SerialMeterBus(meters=[meter]) as bus:
        driver = Dlt645Driver(
            bus_config(bus.port, timeout_s=0.5), [dlt_device(points={"e": {"di": "00010000"}})]
        )
        device = driver.devices["em-0161"]
        request = driver.plan(device)[0]
        bus.inject(fault)
        if error is None:
            assert (await driver.read(device, request))[0].value == 42.42
        else:
            with pytest.raises(error) as info:
                await driver.read(device, request)
            if isinstance(info.value, DeviceTimeoutError):
                assert info.value.device_id == "em-0161" and info.value.points == ("e",)
        # the next transaction drains whatever was left and works
        assert (await driver.read(device, request))[0].value == 42.42
        await driver.close()


async def test_diag_read_address_and_read_di() -> None:
    async with SerialMeterBus(meters=[SimDlt645Meter("123456789012", values={0x00010000: 7.5})]) as bus:
        driver = Dlt645Driver(bus_config(bus.port), [])
        assert (await driver.diag("read-address", {}))["address"] == "123456789012"
        out = await driver.diag("read-di", {"address": "123456789012", "di": "00010000"})
        assert out == {
            "address": "123456789012",
            "di": "00010000",
            "name": "forward active total energy",
            "value": 7.5,
            "unit": "kWh",
        }
        with pytest.raises(PermanentError):
            await driver.diag("read-di", {"address": "12", "di": "00010000"})
        with pytest.raises(PermanentError):
            await driver.diag("change-baud", {})
        await driver.close()


async def test_read_address_refused_with_several_meters() -> None:
    driver = Dlt645Driver(bus_config("/dev/null"), [dlt_device("000000000161"), dlt_device("000000000162")])
    with pytest.raises(PermanentError):
        await driver.diag("read-address", {})


async def test_adapter_echo_is_skipped() -> None:
    meter = SimDlt645Meter("000000000161", values={0x00010000: 8.8})
    async with SerialMeterBus(meters=[meter], echo=True) as bus:
        driver = Dlt645Driver(bus_config(bus.port), [dlt_device(points={"e": {"di": "00010000"}})])
        samples = await read_all(driver, "em-0161")
        assert (await driver.diag("read-address", {}))["address"] == "000000000161"
        await driver.close()
    assert samples["e"].value == 8.8


async def test_two_meters_answering_back_to_back_are_told_apart() -> None:
    # a late reply of one meter arriving during the next transaction is skipped by address
    slow = SimDlt645Meter("000000000161", values={0x00010000: 1.0})
    fast = SimDlt645Meter("000000000162", values={0x00010000: 2.0})
    async with SerialMeterBus(meters=[slow, fast], reply_delay_s=0.3) as bus:
        devices = [
            dlt_device("000000000161", points={"e": {"di": "00010000"}}),
            dlt_device("000000000162", points={"e": {"di": "00010000"}}),
        ]
        driver = Dlt645Driver(bus_config(bus.port, timeout_s=0.05), devices)
        with pytest.raises(DeviceTimeoutError):  # too short a timeout: the reply comes late
            await read_all(driver, "em-0161")
        driver.bus = bus_config(bus.port, timeout_s=1.0)
        assert (await read_all(driver, "em-0162"))["e"].value == 2.0
        assert (await read_all(driver, "em-0161"))["e"].value == 1.0
        await driver.close()


async def test_status_word_bits_share_one_transaction() -> None:
    meter = SimDlt645Meter("000000000161", values={0x04000501: 0b0000_1100})
    points = {
        "status_1": {"di": "04000501"},
        "clock_battery_low": {"di": "04000501", "bit": 2},
        "meter_battery_low": {"di": "04000501", "bit": 3, "poll_interval_s": 10},
        "reverse_power": {"di": "04000501", "bit": 4},
        "energy": {"di": "00010000"},
    }
    async with SerialMeterBus(meters=[meter]) as bus:
        driver = Dlt645Driver(bus_config(bus.port), [dlt_device(points=points, poll_interval_s=60)])
        device = driver.devices["em-0161"]
        plan = driver.plan(device)
        assert [(r.points, r.interval_s) for r in plan] == [
            (("status_1", "clock_battery_low", "meter_battery_low", "reverse_power"), 10),
            (("energy",), 60),
        ]
        samples = await read_all(driver, "em-0161")
        await driver.close()
    assert bus.requests == 2
    assert {k: s.value for k, s in samples.items() if k != "energy"} == {
        "status_1": 12,
        "clock_battery_low": True,
        "meter_battery_low": True,
        "reverse_power": False,
    }


def test_bit_needs_a_binary_di() -> None:
    with pytest.raises(ValidationError) as info:
        dlt_device(points={"x": {"di": "00010000", "bit": 1}, "y": {"di": "04000501", "bit": 16}})
    assert "points.x: bit 1 needs a binary DI" in str(info.value) and "points.y: bit 16" in str(info.value)
