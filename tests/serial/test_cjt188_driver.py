"""The CJ/T 188 driver against simulated water and heat meters on a pty pair."""

from __future__ import annotations

from pathlib import Path

import pytest
from serial_support import bus_config, cjt_device

from citynerve.drivers.cjt188 import DRIVER, Cjt188Driver, Cjt188Point, codec
from citynerve.drivers.cjt188.readings import STATUS_MAPS
from citynerve.gateway.api import (
    ConfigError,
    DeviceTimeoutError,
    FrameError,
    PermanentError,
    Quality,
    WriteRejectedError,
)
from citynerve.gateway.config import load_config
from citynerve.hil.sim.serial import Fault, SerialMeterBus, SimCjt188Meter, SimDlt645Meter

DATA = Path(__file__).parent / "data"


async def read(driver: Cjt188Driver, device_id: str) -> dict[str, tuple[object, Quality]]:
    device = driver.devices[device_id]
    (request,) = driver.plan(device)
    return {s.point: (s.value, s.quality) for s in await driver.read(device, request)}


async def test_spec() -> None:
    assert (DRIVER.protocol, DRIVER.family, DRIVER.point_model) == ("cjt188", "cjt188", Cjt188Point)
    with pytest.raises(ValueError):
        Cjt188Point(field="flow_total", writable=True)


@pytest.mark.parametrize(
    ("device_order", "meter_order"), [("901F", "901F"), ("1F90", "1F90"), ("901F", "1F90"), ("1F90", "901F")]
)
async def test_reads_in_either_di_order(device_order: str, meter_order: str) -> None:
    meter = SimCjt188Meter(
        "00000000000012", di_order=codec.DiOrder(meter_order), flow_m3=321.09, valve="closed"
    )
    async with SerialMeterBus(meters=[meter, SimDlt645Meter("000000000161")]) as bus:
        driver = Cjt188Driver(bus_config(bus.port, protocol="cjt188"), [cjt_device(di_order=device_order)])
        values = await read(driver, "wm-0012")
        await driver.close()
    assert values["flow_total"] == (321.09, Quality.GOOD)
    assert values["valve"] == ("closed", Quality.GOOD) and values["battery_low"] == (False, Quality.GOOD)
    assert isinstance(values["meter_time"][0], str)


async def test_invalid_meter_time_is_missing_not_a_crash() -> None:
    meter = SimCjt188Meter("00000000000012", bad_time=True, battery_low=True)
    async with SerialMeterBus(meters=[meter]) as bus:
        driver = Cjt188Driver(bus_config(bus.port, protocol="cjt188"), [cjt_device()])
        values = await read(driver, "wm-0012")
        await driver.close()
    assert values["meter_time"] == (None, Quality.BAD)
    assert values["flow_total"][1] is Quality.GOOD and values["battery_low"] == (True, Quality.GOOD)


async def test_vendor_status_map() -> None:
    meter = SimCjt188Meter("00000000000012", valve="closed", battery_low=True, status_map=STATUS_MAPS["st1"])
    async with SerialMeterBus(meters=[meter]) as bus:
        custom = {"valve_shift": 8, "battery_low_bit": 10}
        for extra in ({"status_map": "st1"}, {"status_bits": custom}):
            driver = Cjt188Driver(bus_config(bus.port, protocol="cjt188"), [cjt_device(**extra)])
            values = await read(driver, "wm-0012")
            await driver.close()
            assert values["valve"][0] == "closed" and values["battery_low"][0] is True


async def test_heat_meter_points() -> None:
    meter = SimCjt188Meter("00000000000099", meter_type=0x20)
    points = {
        f: {"field": f} for f in ("heat_total", "supply_temp", "return_temp", "flow_total", "working_hours")
    }
    async with SerialMeterBus(meters=[meter]) as bus:
        driver = Cjt188Driver(
            bus_config(bus.port, protocol="cjt188"),
            [cjt_device("00000000000099", points=points, meter_type="20")],
        )
        values = await read(driver, "wm-0099")
        await driver.close()
    assert values["working_hours"] == (4321, Quality.GOOD)
    assert float(str(values["supply_temp"][0])) - float(str(values["return_temp"][0])) == pytest.approx(
        12, abs=0.02
    )


async def test_valve_write_round_trip() -> None:
    meter = SimCjt188Meter("00000000000012")
    async with SerialMeterBus(meters=[meter]) as bus:
        driver = Cjt188Driver(bus_config(bus.port, protocol="cjt188"), [cjt_device(di_order="1F90")])
        device = driver.devices["wm-0012"]
        await driver.write(device, "valve", "close")
        assert meter.valve == "closed" and (await read(driver, "wm-0012"))["valve"][0] == "closed"
        await driver.write(device, "valve", True)
        assert meter.valve == "open"
        for point, value in (("valve", "half"), ("flow_total", 1), ("nope", "open")):
            with pytest.raises(WriteRejectedError) as info:
                await driver.write(device, point, value)
            assert info.value.point == point
        before = bus.requests
        await driver.close()
    assert before == 3  # rejected writes never reached the line


async def test_faults_typed_then_recovery() -> None:
    async with SerialMeterBus(meters=[SimCjt188Meter("00000000000012")]) as bus:
        driver = Cjt188Driver(bus_config(bus.port, protocol="cjt188", timeout_s=0.5), [cjt_device()])
        for fault, error in (
            (Fault.BAD_CHECKSUM, FrameError),
            (Fault.SILENCE, DeviceTimeoutError),
            (Fault.TRUNCATED, FrameError),
        ):
            bus.inject(fault)
            with pytest.raises(error):
                await read(driver, "wm-0012")
            assert (await read(driver, "wm-0012"))["flow_total"][1] is Quality.GOOD
        bus.inject(Fault.NOISE)
        bus.inject(Fault.NO_PREAMBLE)
        assert (await read(driver, "wm-0012"))["flow_total"][1] is Quality.GOOD
        await driver.close()


async def test_diag_read_address_read_and_valve() -> None:
    meter = SimCjt188Meter("12345678901234", meter_type=0x30)
    async with SerialMeterBus(meters=[meter]) as bus:
        driver = Cjt188Driver(bus_config(bus.port, protocol="cjt188"), [])
        found = await driver.diag("read-address", {})
        assert (found["address"], found["meter_type"], found["meter_type_name"]) == (
            "12345678901234",
            "30",
            "gas",
        )
        values = await driver.diag("read", {"address": "12345678901234", "meter_type": "30"})
        assert values["flow_total_unit"] == "m3"
        assert (
            await driver.diag("valve", {"address": "12345678901234", "meter_type": 0x30, "state": "close"})
        )["accepted"]
        assert meter.valve == "closed"
        with pytest.raises(PermanentError):
            await driver.diag("valve", {"address": "12345678901234", "state": "maybe"})
        await driver.close()
    with pytest.raises(PermanentError):
        await Cjt188Driver(
            bus_config("/dev/null"), [cjt_device("00000000000001"), cjt_device("00000000000002")]
        ).diag("read-address", {})


@pytest.mark.parametrize(
    ("states", "mask", "named"),
    [
        ({"0": "open", "closed": "closed"}, 3, "'closed'"),  # not a code at all
        ({"0": "open", "1.5": "closed"}, 3, "'1.5'"),
        ({"0": "open", "0x4": "closed"}, 3, "'0x4'"),  # outside the mask: never read
        ({"0": "open", "2": "closed"}, 1, "'2'"),
        ({"-1": "open"}, 3, "'-1'"),
        ({"1": "closed", "0x1": "open"}, 3, "'1' and '0x1'"),  # one code twice
    ],
)
def test_valve_state_keys_are_checked_when_the_config_loads(
    states: dict[str, str], mask: int, named: str, tmp_path: Path
) -> None:
    with pytest.raises(ValueError, match=named):
        cjt_device(status_bits={"valve_mask": mask, "valve_states": states})
    # through the gateway's loader: a ConfigError whose issue names the key path and the key
    text = (DATA / "building-meters.toml").read_text(encoding="utf-8")
    table = ", ".join(f'"{k}" = "{v}"' for k, v in states.items())
    text = text.replace(
        'address = "00000000000301"',
        f'address = "00000000000301"\nstatus_bits = {{ valve_mask = {mask}, valve_states = {{ {table} }} }}',
    )
    path = tmp_path / "gateway.toml"
    path.write_text(text, encoding="utf-8")
    with pytest.raises(ConfigError) as info:
        load_config(path)
    (issue,) = info.value.issues
    assert issue.path.endswith("status_bits.valve_states") and named in issue.message, str(issue)


async def test_hex_valve_state_keys_read_on_every_poll() -> None:
    bits = {"valve_states": {"0x0": "open", "0x1": "closed", "0X3": "abnormal"}}
    device = cjt_device(status_bits=bits)
    assert device.status_bits is not None and device.status_bits.valve_states == {
        "0": "open",
        "1": "closed",
        "3": "abnormal",
    }
    async with SerialMeterBus(meters=[SimCjt188Meter("00000000000012", valve="closed")]) as bus:
        driver = Cjt188Driver(bus_config(bus.port, protocol="cjt188"), [device])
        for _ in range(2):
            assert (await read(driver, "wm-0012"))["valve"] == ("closed", Quality.GOOD)
        await driver.close()
