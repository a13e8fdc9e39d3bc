"""Modbus RTU poll cycle on a paced 2400-baud line vs its wire-time floor (part of serial_bus.py).

The simulated building's six Modbus devices (a three-phase meter, two water meters, three smoke
detectors: hil/sim/modbus DEFAULT_BUILDING) answer as pymodbus RTU slaves behind `PtyLink`, which
delivers every byte one character time (11 bits) after the previous one in each direction. The
gateway's `ModbusDriver` reads every planned request of every device, one after another. The link
counts the bytes both ways: `wire_floor_s` = bytes x 11 / baud; `t35_floor_s` adds the one t3.5
silence a master must keep before each request (Modbus over serial line, 2.5.1.1), the least a
conforming master can take with a slave that answers at once.
"""

from __future__ import annotations

import statistics
import time
import tomllib
from typing import Any

from citynerve.drivers.modbus._channel import silent_interval_s
from citynerve.drivers.modbus.config import ModbusDeviceConfig, ModbusRtuBusConfig
from citynerve.drivers.modbus.driver import ModbusDriver
from citynerve.hil.sim.modbus import PROFILES_DIR, ModbusBuilding, PtyLink
from citynerve.hil.sim.modbus._serve import DEFAULT_BUILDING

BITS_PER_BYTE = 11


def _devices() -> list[ModbusDeviceConfig]:
    out = []
    for profile, unit in DEFAULT_BUILDING:
        data = tomllib.loads((PROFILES_DIR / f"{profile}.toml").read_text())
        out.append(
            ModbusDeviceConfig.model_validate(
                {
                    "id": f"{profile}-{unit}",
                    "bus": "bench-rtu",
                    "profile": profile,
                    "address": unit,
                    "location": {"address_code": "320508001"},
                    "points": data["points"],
                    **data.get("device", {}),
                }
            )
        )
    return out


async def bench_rtu_cycle(runs: int, baud: int = 2400) -> dict[str, Any]:
    devices = _devices()
    counted = [0]

    def count(data: bytes) -> bytes:
        counted[0] += len(data)
        return data

    cycles, ratios, t35_ratios, floors = [], [], [], []
    transactions = 0
    async with PtyLink(baudrate=baud) as link, ModbusBuilding(rtu_url=link.device_port, baudrate=baud):
        link.to_device = count
        link.to_gateway = count
        bus = ModbusRtuBusConfig(id="bench-rtu", port=link.gateway_port, baudrate=baud, timeout_s=1.0)
        driver = ModbusDriver(bus, devices)
        await driver.open()
        try:
            for _ in range(runs):
                counted[0] = 0
                transactions = 0
                started = time.perf_counter()
                for device in devices:
                    for request in driver.plan(device):
                        await driver.read(device, request)
                        transactions += 1
                elapsed = time.perf_counter() - started
                floor = counted[0] * BITS_PER_BYTE / baud
                t35 = floor + transactions * silent_interval_s(baud)
                cycles.append(elapsed)
                floors.append(floor)
                ratios.append(elapsed / floor)
                t35_ratios.append(elapsed / t35)
        finally:
            await driver.close()
    return {
        "modbus_rtu_cycle_s": statistics.median(cycles),
        "modbus_rtu_wire_floor_s": statistics.median(floors),
        "modbus_rtu_cycle_ratio": statistics.median(ratios),
        "modbus_rtu_ratio_over_t35_floor": statistics.median(t35_ratios),
        "modbus_rtu_transactions_per_cycle": transactions,
    }
