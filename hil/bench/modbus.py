"""Modbus read planner benchmark: one poll cycle of a building, planned reads vs one read per point.

    python -m citynerve.hil.bench.modbus [--json] [--runs 5] [--rounds 10]

The simulated building (citynerve.hil.sim.modbus: one three-phase meter, two water meters, three smoke
detectors, 58 points) is read over RTU through a pty pair (unpaced, and paced like a real
9600 baud line) and over Modbus TCP, with the
planner's requests and, as the baseline in the same run, with one request per point. It prints
the median time of a full cycle of every device, the number of transactions, their ratio, and
the time the same transactions would need on a real 9600 baud line
((13 + 2N) x 11 / baud + 2 x t3.5 per read of N registers, zero turnaround; see
field-protocols.md section 1). `--json` prints one object with the keys printed.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import time
import tomllib
from typing import Any

from citynerve.drivers.modbus._channel import READ_FUNCTION, silent_interval_s
from citynerve.drivers.modbus.config import ModbusDeviceConfig, ModbusRtuBusConfig, ModbusTcpBusConfig
from citynerve.drivers.modbus.driver import ModbusDriver, ModbusRequest, plan_device
from citynerve.hil.sim.modbus import DEFAULT_BUILDING, PROFILES_DIR, ModbusBuilding, PtyLink


def building_devices(bus: str) -> list[ModbusDeviceConfig]:
    devices = []
    for profile, unit in DEFAULT_BUILDING:
        data = tomllib.loads((PROFILES_DIR / f"{profile}.toml").read_text())
        devices.append(
            ModbusDeviceConfig.model_validate(
                {
                    "id": f"{profile}-{unit}",
                    "bus": bus,
                    "profile": profile,
                    "address": unit,
                    "location": {"address_code": "310106013007"},
                    "points": data["points"],
                    **data.get("device", {}),
                }
            )
        )
    return devices


def naive_plan(device: ModbusDeviceConfig) -> tuple[ModbusRequest, ...]:
    """The baseline: one request per point, as a gateway without a planner would poll."""
    return tuple(
        ModbusRequest(
            points=(name,),
            interval_s=60.0,
            table=p.table,
            function=READ_FUNCTION[p.table],
            address=p.address,
            count=p.register_count,
        )
        for name, p in device.points.items()
    )


def wire_time_s(requests: list[ModbusRequest], baud: int) -> float:
    """Best-case line time of these reads at `baud` (bits reads: 1 byte per 8 coils)."""
    total = 0.0
    for r in requests:
        payload = r.count * 2 if r.table in ("holding", "input") else (r.count + 7) // 8
        total += (8 + 5 + payload) * 11 / baud + 2 * silent_interval_s(baud)
    return total


async def cycle(
    driver: ModbusDriver, plans: list[tuple[ModbusDeviceConfig, tuple[ModbusRequest, ...]]]
) -> float:
    start = time.perf_counter()
    for device, requests in plans:
        for request in requests:
            await driver.read(device, request)
    return time.perf_counter() - start


async def measure(kind: str, runs: int, rounds: int) -> dict[str, float]:
    # "rtu9600": the pty link paces bytes like a real 9600 baud line (11 bits per character).
    baud = 9600 if kind == "rtu9600" else 115200
    paced = baud if kind == "rtu9600" else None
    async with (
        PtyLink(baudrate=paced) as link,
        ModbusBuilding(rtu_url=link.device_port, baudrate=baud) as building,
    ):
        devices = building_devices(kind)
        if kind.startswith("rtu"):
            bus: Any = ModbusRtuBusConfig(id=kind, port=link.gateway_port, baudrate=baud, timeout_s=1.0)
        else:
            host, port = building.endpoint
            bus = ModbusTcpBusConfig(id=kind, host=host, port=port, timeout_s=1.0)
        planned = [(d, tuple(plan_device(d))) for d in devices]
        naive = [(d, naive_plan(d)) for d in devices]
        driver = ModbusDriver(bus, devices)
        await driver.open()
        try:
            planned_t, naive_t = [], []
            for _ in range(runs):  # interleaved, so machine noise hits both alike
                planned_t.append(min([await cycle(driver, planned) for _ in range(rounds)]))
                naive_t.append(min([await cycle(driver, naive) for _ in range(rounds)]))
        finally:
            await driver.close()
    n_planned = sum(len(r) for _, r in planned)
    n_naive = sum(len(r) for _, r in naive)
    all_planned = [r for _, rs in planned for r in rs]
    all_naive = [r for _, rs in naive for r in rs]
    p_ms, n_ms = statistics.median(planned_t) * 1000, statistics.median(naive_t) * 1000
    result = {
        f"{kind}_points": sum(len(d.points) for d in devices),
        f"{kind}_planned_reads": n_planned,
        f"{kind}_naive_reads": n_naive,
        f"{kind}_planned_cycle_ms": round(p_ms, 2),
        f"{kind}_naive_cycle_ms": round(n_ms, 2),
        f"{kind}_speedup": round(n_ms / p_ms, 2),
    }
    if kind == "rtu":
        result["rtu_wire_9600_planned_ms"] = round(wire_time_s(all_planned, 9600) * 1000, 1)
        result["rtu_wire_9600_naive_ms"] = round(wire_time_s(all_naive, 9600) * 1000, 1)
    return result


async def main_async(runs: int, rounds: int) -> dict[str, float]:
    result: dict[str, float] = {}
    for kind in ("rtu", "tcp"):
        result.update(await measure(kind, runs, rounds))
    paced = await measure("rtu9600", max(3, runs // 2), 1)
    result.update({k: v for k, v in paced.items() if "cycle_ms" in k or "speedup" in k})
    result["reads_ratio"] = round(result["rtu_naive_reads"] / result["rtu_planned_reads"], 2)
    result["wire_9600_ratio"] = round(
        result["rtu_wire_9600_naive_ms"] / result["rtu_wire_9600_planned_ms"], 2
    )
    return result


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    parser.add_argument("--runs", type=int, default=5, help="runs (median reported)")
    parser.add_argument("--rounds", type=int, default=10, help="cycles per run (fastest kept)")
    args = parser.parse_args()
    result = asyncio.run(main_async(args.runs, args.rounds))
    if args.json:
        print(json.dumps(result))
        return
    for kind in ("rtu", "tcp"):
        print(
            f"{kind}: {result[f'{kind}_points']} points, planned {result[f'{kind}_planned_reads']} reads "
            f"{result[f'{kind}_planned_cycle_ms']} ms/cycle vs one read per point "
            f"{result[f'{kind}_naive_reads']} reads {result[f'{kind}_naive_cycle_ms']} ms/cycle: "
            f"x{result[f'{kind}_speedup']}"
        )
    print(
        f"rtu on a paced 9600 baud pty: planned {result['rtu9600_planned_cycle_ms']} ms/cycle vs "
        f"{result['rtu9600_naive_cycle_ms']} ms/cycle: x{result['rtu9600_speedup']}"
    )
    print(
        f"on a 9600 baud line (computed best case): planned {result['rtu_wire_9600_planned_ms']} ms vs "
        f"{result['rtu_wire_9600_naive_ms']} ms per cycle: x{result['wire_9600_ratio']}"
    )


if __name__ == "__main__":
    main()
