"""Modbus simulators: values move like real ones, faults from code, 1,000 devices in one process."""

from __future__ import annotations

import itertools
import time
import tomllib
from pathlib import Path
from typing import Any

import pytest
from modbus_support import LOCATION, device_model
from pymodbus.constants import ExcCodes

from citynerve.drivers.modbus.config import ModbusDeviceConfig, ModbusTcpBusConfig
from citynerve.drivers.modbus.driver import ModbusDriver
from citynerve.gateway.api import DeviceTimeoutError
from citynerve.hil.sim.modbus import (
    PROFILES_DIR,
    ModbusBuilding,
    SimDevice,
    SimProfile,
    serve_tcp,
    start_tcp_devices,
)


class FakeClock:
    """Wall clock the test moves by hand (the simulator takes any `clock` callable)."""

    def __init__(self, t: float) -> None:
        self.t = t

    def __call__(self) -> float:
        return self.t


def device_config(
    profile: str, unit: int, bus: str = "b", *, device_id: str = "", **fields: Any
) -> ModbusDeviceConfig:
    """A device of a shipped profile at `unit`; `fields`: more device fields (e.g. register_base)."""
    data = tomllib.loads((PROFILES_DIR / f"{profile}.toml").read_text())
    return device_model(
        id=device_id or f"{profile}-{unit}",
        bus=bus,
        profile=profile,
        address=unit,
        location=LOCATION,
        points=data["points"],
        **fields,
    )


def at_local_hour(hour: float, utc_offset_h: float = 8.0) -> float:
    day = 20000 * 86400.0
    return day + (hour - utc_offset_h) * 3600.0


def test_power_follows_a_daily_curve_and_energy_only_rises() -> None:
    profile = SimProfile.load("modbus-power-meter-3ph")
    clock = FakeClock(at_local_hour(3.0))
    meter = SimDevice(profile, 1, clock=clock)
    night: dict[str, Any] = meter.values()
    energy = [night["energy_import"]]
    clock.t = at_local_hour(19.5)
    evening: dict[str, Any] = meter.values()
    assert evening["power"] > 2.5 * night["power"]
    # Energy integrates the power: over the 16.5 h between the reads it rose by about mean power x time.
    rise = evening["energy_import"] - energy[0]
    assert night["power"] / 1000 * 16.5 < rise < evening["power"] / 1000 * 16.5
    for _ in range(50):
        clock.t += 37.0
        energy.append(float(meter.values()["energy_import"]))
    assert all(b > a for a, b in itertools.pairwise(energy))
    voltages = {round(float(meter.values()["voltage_a"]), 3) for _ in range(20)}
    assert len(voltages) > 1 and all(220 < v < 240 for v in voltages)


def test_water_totaliser_rises_and_splits_integer_and_fraction() -> None:
    clock = FakeClock(at_local_hour(6.0))
    meter = SimDevice(SimProfile.load("modbus-water-meter"), 2, clock=clock)
    totals = []
    for _ in range(30):
        clock.t += 600.0
        v: dict[str, Any] = meter.values()
        assert v["flow_rate"] >= 0
        assert v["positive_total"] == v["net_total"]
        totals.append(v["positive_total"] + v["positive_total_fraction"])
    assert all(b >= a for a, b in itertools.pairwise(totals)) and totals[-1] > totals[0]


def test_speed_runs_simulated_time_faster() -> None:
    clock = FakeClock(1000.0)
    meter = SimDevice(SimProfile.load("modbus-water-meter"), 2, clock=clock, speed=60.0)
    clock.t += 10.0
    assert meter.sim_time() == pytest.approx(1000.0 + 600.0)


def test_any_profile_is_simulated_with_plausible_values(tmp_path: Path) -> None:
    path = tmp_path / "modbus-other.toml"
    path.write_text(
        'id = "modbus-other"\nfamily = "modbus"\npoll_interval_s = 5\n'
        '[points.v]\ntable = "input"\naddress = 0\ntype = "float32"\nunit = "V"\n'
        '[points.alarm]\ntable = "discrete"\naddress = 3\n'
        '[points.sn]\ntable = "holding"\naddress = 0\ntype = "string"\nlength = 4\n'
    )
    device = SimDevice(SimProfile.load(path), 1)
    values: dict[str, Any] = device.values()
    assert 220 < float(values["v"]) < 240 and values["alarm"] is False and values["sn"] == "SIM"
    assert device.registers("holding", 0, 4) == [0x5349, 0x4D00, 0, 0]
    assert device.registers("discrete", 3, 1) == [False]
    assert device.registers("holding", 0, 5) == ExcCodes.ILLEGAL_ADDRESS  # past the map


async def test_building_over_tcp_smoke_fault_and_silence() -> None:
    async with ModbusBuilding(speed=60.0) as building:
        host, port = building.endpoint
        smoke, water = device_config("modbus-smoke-detector", 12), device_config("modbus-water-meter", 3)
        driver = ModbusDriver(ModbusTcpBusConfig(id="b", host=host, port=port, timeout_s=0.2), [smoke, water])
        await driver.open()

        async def read(device: ModbusDeviceConfig) -> dict[str, Any]:
            out: dict[str, Any] = {}
            for r in driver.plan(device):
                out.update({s.point: s.value for s in await driver.read(device, r)})
            return out

        try:
            assert (await read(smoke))["smoke_alarm"] is False
            building.trigger_smoke(12)
            assert (await read(smoke))["smoke_alarm"] is True
            building.clear_smoke(12)
            assert (await read(smoke))["alarm_state"] == 0
            building.set_fault(3)
            assert (await read(water))["error_code"] == 1
            building.silence(3)
            with pytest.raises(DeviceTimeoutError):
                await read(water)
            building.revive(3)
            assert (await read(water))["error_code"] == 1
        finally:
            await driver.close()
        with pytest.raises(ValueError):
            building.trigger_smoke(1)  # unit 1 is the power meter
        with pytest.raises(KeyError):
            building.trigger_smoke(99)


async def test_unit_ids_must_be_unique_and_valid() -> None:
    profile = SimProfile.load("modbus-smoke-detector")
    with pytest.raises(ValueError):
        await serve_tcp([SimDevice(profile, 1), SimDevice(profile, 1)])
    with pytest.raises(ValueError):
        await serve_tcp([SimDevice(profile, 248)])
    with pytest.raises(ValueError):
        ModbusBuilding([("modbus-smoke-detector", 1), ("modbus-water-meter", 1)])


async def test_a_thousand_devices_in_one_process() -> None:
    start = time.perf_counter()
    fleet = await start_tcp_devices(
        ["modbus-power-meter-3ph", "modbus-water-meter", "modbus-smoke-detector"],
        1000,
        units_per_endpoint=100,
    )
    async with fleet:
        addresses = fleet.addresses
        assert len(addresses) == 1000 and len(fleet.endpoints) == 10
        assert len(set(addresses)) == 1000
        # Read one device of every profile on every endpoint, through the driver.
        for endpoint in fleet.endpoints:
            devices = [
                device_config(d.profile.id, u, bus=str(endpoint.port))
                for u, d in sorted(endpoint.devices.items())[:3]
            ]
            bus = ModbusTcpBusConfig(
                id=str(endpoint.port), host=endpoint.host, port=endpoint.port, timeout_s=0.5
            )
            driver = ModbusDriver(bus, devices)
            await driver.open()
            try:
                for device in devices:
                    for request in driver.plan(device):
                        assert len(await driver.read(device, request)) == len(request.points)
            finally:
                await driver.close()
    assert time.perf_counter() - start < 20.0
