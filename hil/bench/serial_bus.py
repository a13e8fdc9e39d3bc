"""Serial bus benchmark: poll-cycle time on a simulated 2400-baud RS-485 line vs its wire-time floor,
and codec decode rate.

Cycle: 8 DL/T 645 meters x 4 DIs (energy, phase A voltage, current, total power) and 8 CJ/T 188 water
meters (one 901F read each), polled one transaction after another through the real drivers and the
shared serial line, against `SerialMeterBus` in wire-time mode: every byte takes 11 bits / 2400 baud
(8E1), requests hold the line for their own wire time before the meter answers, replies come byte
by byte. The floor is the wire time of every byte that crossed the line (requests with their FE
preamble, replies with theirs), measured from the simulator's byte counters in the same run:
`cycle_ratio = measured / floor` (lower is better; 1.0 is a line that never rests). The drivers keep
the default 20 ms inter-frame gap, as in the field.

Modbus RTU on the same kind of line (2400 baud, paced byte by byte): hil/bench/serial_rtu.py, keys
`modbus_rtu_*`; its floor without and with the t3.5 silence Modbus requires before each request.

Decode rate: DL/T 645 and CJ/T 188 replies through the stream parsers and value decoders
(frames/s). Baseline in the same run: the third-party `dlt645` package's own frame parser against
our stream parser on the same DL/T 645 frames, frames only (a ratio > 1 means ours is faster).

    python -m citynerve.hil.bench.serial_bus [--runs 3] [--json]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import time
from typing import Any

from citynerve.drivers.cjt188 import Cjt188Device, Cjt188Driver
from citynerve.drivers.cjt188 import codec as cjt
from citynerve.drivers.cjt188.readings import STATUS_MAPS, build_901f, parse_901f
from citynerve.drivers.dlt645 import Dlt645Device, Dlt645Driver
from citynerve.drivers.dlt645 import codec as dlt
from citynerve.drivers.dlt645.registry import DI_2007
from citynerve.drivers.serialio import SerialBusConfig
from citynerve.hil.bench.serial_rtu import bench_rtu_cycle
from citynerve.hil.sim.serial import SerialMeterBus, SimCjt188Meter, SimDlt645Meter

BAUD = 2400
BITS_PER_BYTE = 11  # 8E1: start + 8 data + parity + stop
DIS = {"energy": "00010000", "voltage_a": "02010100", "current_a": "02020100", "power": "02030000"}
LOCATION = {"address_code": "320508001"}


def _dlt_devices() -> list[Dlt645Device]:
    return [
        Dlt645Device.model_validate(
            {
                "id": f"em-{i}",
                "bus": "bench",
                "profile": "bench",
                "address": f"{100 + i:012d}",
                "location": LOCATION,
                "points": {name: {"di": di} for name, di in DIS.items()},
            }
        )
        for i in range(8)
    ]


def _cjt_devices() -> list[Cjt188Device]:
    fields = ("flow_total", "flow_settlement", "meter_time", "valve", "battery_low")
    return [
        Cjt188Device.model_validate(
            {
                "id": f"wm-{i}",
                "bus": "bench",
                "profile": "bench",
                "address": f"{200 + i:014d}",
                "location": LOCATION,
                "points": {f: {"field": f} for f in fields},
            }
        )
        for i in range(8)
    ]


async def _cycle(
    port_dlt: str,
    port_cjt: str,
    dlt_devices: list[Dlt645Device],
    cjt_devices: list[Cjt188Device],
    gap_s: float | None = None,
) -> tuple[float, int]:
    gap = {} if gap_s is None else {"gap_s": gap_s}
    dlt_driver = Dlt645Driver(
        SerialBusConfig.model_validate({"id": "bench-e", "protocol": "dlt645", "port": port_dlt, **gap}),
        dlt_devices,
    )
    cjt_driver = Cjt188Driver(
        SerialBusConfig.model_validate({"id": "bench-w", "protocol": "cjt188", "port": port_cjt, **gap}),
        cjt_devices,
    )
    await dlt_driver.open()
    await cjt_driver.open()
    transactions = 0
    try:
        started = time.perf_counter()
        for dev in dlt_devices:
            for request in dlt_driver.plan(dev):
                await dlt_driver.read(dev, request)
                transactions += 1
        for wdev in cjt_devices:
            for request in cjt_driver.plan(wdev):
                await cjt_driver.read(wdev, request)
                transactions += 1
        return time.perf_counter() - started, transactions
    finally:
        await dlt_driver.close()
        await cjt_driver.close()


async def bench_cycle(runs: int, gap_s: float | None = None) -> dict[str, Any]:
    dlt_devices, cjt_devices = _dlt_devices(), _cjt_devices()
    dlt_meters = [SimDlt645Meter(d.address) for d in dlt_devices]
    cjt_meters = [SimCjt188Meter(d.address) for d in cjt_devices]
    ratios, cycles, floors = [], [], []
    transactions = 0
    async with (
        SerialMeterBus(
            meters=dlt_meters, baudrate=BAUD, bits_per_byte=BITS_PER_BYTE, wire_time=True
        ) as bus_e,
        SerialMeterBus(
            meters=cjt_meters, baudrate=BAUD, bits_per_byte=BITS_PER_BYTE, wire_time=True
        ) as bus_w,
    ):
        for _ in range(runs):
            before = bus_e.bytes_in + bus_e.bytes_out + bus_w.bytes_in + bus_w.bytes_out
            elapsed, transactions = await _cycle(bus_e.port, bus_w.port, dlt_devices, cjt_devices, gap_s)
            wire_bytes = bus_e.bytes_in + bus_e.bytes_out + bus_w.bytes_in + bus_w.bytes_out - before
            floor = wire_bytes * BITS_PER_BYTE / BAUD
            cycles.append(elapsed)
            floors.append(floor)
            ratios.append(elapsed / floor)
    return {
        "cycle_s": statistics.median(cycles),
        "wire_floor_s": statistics.median(floors),
        "cycle_ratio": statistics.median(ratios),
        "transactions_per_cycle": transactions,
        "cycle_runs": runs,
        "gap_s": 0.02 if gap_s is None else gap_s,
    }


def _frames() -> tuple[list[bytes], list[bytes]]:
    dlt_frames = []
    for i, di in enumerate(DIS.values()):
        item = DI_2007[int(di, 16)]
        value = {0: 12345.67, 1: 229.8, 2: -12.345, 3: 2.3456}[i]
        data = dlt.di_bytes(item.di) + item.encode(value)
        dlt_frames.append(b"\xfe\xfe" + dlt.build_reply(f"{100 + i:012d}", 0x11, data))
    cjt_frames = []
    for i in range(4):
        payload = build_901f(0x10, {"flow_total": 123.45 + i, "flow_settlement": 100.0, "valve": "open"})
        data = cjt.di_bytes(cjt.DI_READ) + bytes([i]) + payload
        cjt_frames.append(b"\xfe\xfe" + cjt.encode_frame(0x10, f"{200 + i:014d}", 0x81, data, preamble=False))
    return dlt_frames, cjt_frames


def _decode_ours(dlt_frames: list[bytes], cjt_frames: list[bytes], rounds: int) -> int:
    smap = STATUS_MAPS["standard"]
    count = 0
    for _ in range(rounds):
        for raw in dlt_frames:
            (frame,) = dlt.StreamParser().feed(raw)
            item = DI_2007[int.from_bytes(frame.data[:4], "little")]
            item.decode(frame.data[4:])
            count += 1
        for raw in cjt_frames:
            (wframe,) = cjt.StreamParser().feed(raw)
            parse_901f(wframe.data[3:], wframe.meter_type, smap)
            count += 1
    return count


def _parse_ours(dlt_frames: list[bytes], rounds: int) -> int:
    """Frame parsing only, on the baseline's work: DL/T 645 frames, no values."""
    count = 0
    for _ in range(rounds):
        for raw in dlt_frames:
            count += len(dlt.StreamParser().feed(raw))
    return count


def _decode_baseline(dlt_frames: list[bytes], rounds: int) -> int:
    from dlt645.protocol.protocol import DLT645Protocol

    count = 0
    for _ in range(rounds):
        for raw in dlt_frames:
            _, frame = DLT645Protocol.deserialize_with_remaining(raw)
            assert frame is not None
            count += 1
    return count


def bench_decode(runs: int, rounds: int = 5000) -> dict[str, Any]:
    dlt_frames, cjt_frames = _frames()
    ours, parse, theirs = [], [], []
    for _ in range(runs):
        t = time.perf_counter()
        n = _decode_ours(dlt_frames, cjt_frames, rounds)
        ours.append(n / (time.perf_counter() - t))
        t = time.perf_counter()
        n = _parse_ours(dlt_frames, rounds // 2)
        parse.append(n / (time.perf_counter() - t))
        t = time.perf_counter()
        n = _decode_baseline(dlt_frames, rounds // 2)
        theirs.append(n / (time.perf_counter() - t))
    return {
        "decode_frames_per_s": statistics.median(ours),
        "dlt645_parse_frames_per_s": statistics.median(parse),
        "baseline_dlt645_pkg_frames_per_s": statistics.median(theirs),
        "parse_ratio_vs_baseline": statistics.median(parse) / statistics.median(theirs),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--runs", type=int, default=3, help="poll cycles / decode runs (median reported)")
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    parser.add_argument("--gap", type=float, help="the buses' gap_s (turnaround silence; default 0.02)")
    args = parser.parse_args()
    result = {
        **asyncio.run(bench_cycle(args.runs, args.gap)),
        **asyncio.run(bench_rtu_cycle(args.runs, BAUD)),
        **bench_decode(max(3, args.runs)),
    }
    if args.json:
        print(json.dumps(result))
        return
    print(f"poll cycle ({result['transactions_per_cycle']} transactions at {BAUD} baud 8E1, wire-time sim):")
    print(
        f"  measured {result['cycle_s']:.3f} s, wire floor {result['wire_floor_s']:.3f} s, "
        f"ratio {result['cycle_ratio']:.3f} (floor <= 1.3)"
    )
    print(
        f"Modbus RTU ({result['modbus_rtu_transactions_per_cycle']} transactions at {BAUD} baud, paced pty): "
        f"measured {result['modbus_rtu_cycle_s']:.3f} s, "
        f"wire floor {result['modbus_rtu_wire_floor_s']:.3f} s, "
        f"ratio {result['modbus_rtu_cycle_ratio']:.3f}, over the floor with t3.5 "
        f"{result['modbus_rtu_ratio_over_t35_floor']:.3f}"
    )
    print(f"decode (both codecs, frames and values): {result['decode_frames_per_s']:,.0f} frames/s")
    print(
        f"DL/T 645 frame parsing: ours {result['dlt645_parse_frames_per_s']:,.0f} frames/s, "
        f"dlt645 package {result['baseline_dlt645_pkg_frames_per_s']:,.0f} frames/s, "
        f"ratio {result['parse_ratio_vs_baseline']:.2f}"
    )


if __name__ == "__main__":
    main()
