"""Modbus RTU through the line relay: real pymodbus RTU servers on ptys behind it.

Two servers both answering unit 1 (a duplicate address: their replies collide on the wire) while
unit 2 is clean; and a probe through the bus owner finding the servers' baud rate.
"""

from __future__ import annotations

import asyncio
import contextlib
import tomllib
from collections.abc import AsyncIterator, Callable, Sequence
from typing import Any

from citynerve.drivers.modbus.config import ModbusDeviceConfig, ModbusRtuBusConfig
from citynerve.drivers.modbus.driver import ModbusDriver
from citynerve.gateway.api import Event, SampleBatch
from citynerve.gateway.bus import BusOwner
from citynerve.gateway.bus.probe import PROBE, LineSettings
from citynerve.hil.sim.modbus import PROFILES_DIR, SimDevice, SimProfile, serve_rtu
from citynerve.hil.sim.serial import LineRelay


class Sink:
    def submit(self, batch: SampleBatch) -> None:
        pass

    def event(self, event: Event) -> None:
        pass

    def mark_offline(self, device_id: str, ts: float) -> None:
        pass


def device(profile: str, unit: int, points: Sequence[str]) -> ModbusDeviceConfig:
    data = tomllib.loads((PROFILES_DIR / f"{profile}.toml").read_text())
    return ModbusDeviceConfig.model_validate(
        {
            "id": f"{profile}-{unit}",
            "bus": "rtu",
            "profile": profile,
            "address": unit,
            "location": {"address_code": "320508001"},
            "poll_interval_s": 0.1,
            "points": {p: data["points"][p] for p in points},
        }
    )


POWER = device("modbus-power-meter-3ph", 1, ["voltage_a"])
WATER = device("modbus-water-meter", 2, ["flow_rate"])


@contextlib.asynccontextmanager
async def owner_on(port: str, baudrate: int) -> AsyncIterator[BusOwner]:
    bus = ModbusRtuBusConfig(
        id="rtu", port=port, baudrate=baudrate, timeout_s=0.3, retries=0, offline_after=2,
        backoff_initial_s=0.2, backoff_max_s=0.4,
    )  # fmt: skip
    devices = [POWER, WATER]
    owner = BusOwner(bus, devices, ModbusDriver(bus, devices), Sink())
    task = asyncio.create_task(owner.run(), name="test.owner")
    try:
        yield owner
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task


async def until(check: Callable[[], bool], within: float = 30.0) -> None:
    async with asyncio.timeout(within):
        while True:
            if check():
                return
            await asyncio.sleep(0.05)


def devs(owner: BusOwner) -> dict[str, dict[str, Any]]:
    return {d["id"]: d for d in owner.snapshot()["devices"]}


async def test_two_units_on_one_address_collide_and_are_named() -> None:
    power = SimProfile.load("modbus-power-meter-3ph")
    water = SimProfile.load("modbus-water-meter")
    s9600 = LineSettings(9600, "N", 1)
    async with LineRelay([(None, s9600), (None, s9600)], collision_window_s=0.05) as relay:
        first = await serve_rtu([SimDevice(power, 1, seed=1), SimDevice(water, 2)], url=relay.device_ports[0])
        second = await serve_rtu([SimDevice(power, 1, seed=2)], url=relay.device_ports[1])
        try:
            async with owner_on(relay.port, 9600) as owner:
                await until(
                    lambda: (
                        devs(owner)["modbus-power-meter-3ph-1"]["cause"] == "duplicate_address"
                        and devs(owner)["modbus-water-meter-2"]["window"]["attempts"] >= 5
                    )
                )
                snap = devs(owner)
        finally:
            await first.close()
            await second.close()
    pm = snap["modbus-power-meter-3ph-1"]
    assert "two devices probably answer on address 1" in pm["reason"]
    assert snap["modbus-water-meter-2"]["cause"] == "ok"
    assert relay.collisions > 0


async def test_modbus_probe_through_the_owner_finds_the_baud_rate() -> None:
    power = SimProfile.load("modbus-power-meter-3ph")
    water = SimProfile.load("modbus-water-meter")
    s19200 = LineSettings(19200, "N", 1)
    async with LineRelay([(None, s19200)]) as relay:
        server = await serve_rtu([SimDevice(power, 1), SimDevice(water, 2)], url=relay.device_ports[0])
        try:
            async with owner_on(relay.port, 9600) as owner:
                await until(lambda: owner.snapshot()["verdict"]["cause"] in ("line_silent", "line_garbled"))
                result = await owner.diag(PROBE, {"bauds": [9600, 4800, 19200], "parities": ["N"]})
        finally:
            await server.close()
    assert result["conclusion"] == "configured 9600 8N1, devices answer at 19200 8N1 (all devices answer)"
    assert result["fix"] == {"baudrate": 19200, "parity": "N", "stopbits": 1}
