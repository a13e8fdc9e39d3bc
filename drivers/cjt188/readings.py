"""The 901F reading of a CJ/T 188 meter: flows (or heat), meter time and status, table-driven.

Status bits differ between firmwares: a `StatusMap` says where the valve state and the low-battery
flag live; `STATUS_MAPS` holds the known ones by name and a device may define its own.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from citynerve.drivers.cjt188.codec import HEAT_TYPES, PROTOCOL, UNIT_CODES, UNITS
from citynerve.gateway.api import FrameError


def bcd_to_int(raw_lsb_first: bytes, what: str) -> int:
    text = raw_lsb_first[::-1].hex()
    if not text.isdigit():  # a nibble A..F: not BCD
        bad = next(b for b in raw_lsb_first if b >> 4 > 9 or b & 0x0F > 9)
        raise FrameError(PROTOCOL, f"{what}: {bad:02X} is not BCD", raw_lsb_first)
    return int(text) if text else 0


def int_to_bcd(value: int, length: int) -> bytes:
    value %= 10 ** (length * 2)
    return bytes.fromhex(f"{value:0{length * 2}d}")[::-1]


def decode_time(raw: bytes) -> str | None:
    """7 BCD bytes `ss mm hh DD MM YYlo YYhi` -> ISO 8601 text, or None for an invalid time
    (all zeros, FF filler, month 13...): a meter with a flat clock battery still gives its flows."""
    if len(raw) != 7:
        return None
    try:
        ss, mm, hh, dd, mo = (bcd_to_int(raw[i : i + 1], "time") for i in range(5))
        year = bcd_to_int(raw[6:7], "time") * 100 + bcd_to_int(raw[5:6], "time")
        return datetime(year, mo, dd, hh, mm, ss).isoformat()
    except (FrameError, ValueError):
        return None


def encode_time(when: datetime) -> bytes:
    parts = [when.second, when.minute, when.hour, when.day, when.month, when.year % 100, when.year // 100]
    return b"".join(int_to_bcd(p, 1) for p in parts)


@dataclass(frozen=True, slots=True)
class StatusMap:
    """Where a firmware keeps its status flags in ST (2 bytes, ST0 first, read as ST0 | ST1 << 8)."""

    valve_shift: int = 0
    valve_mask: int = 0b11
    valve_states: dict[int, str] = field(default_factory=lambda: {0: "open", 1: "closed", 3: "abnormal"})
    battery_low_bit: int = 2

    def valve(self, status: int) -> str:
        return self.valve_states.get((status >> self.valve_shift) & self.valve_mask, "unknown")

    def battery_low(self, status: int) -> bool:
        return bool(status >> self.battery_low_bit & 1)

    def encode(self, valve: str, battery_low: bool) -> int:
        code = next((k for k, v in self.valve_states.items() if v == valve), 0)
        return (code << self.valve_shift) | (int(battery_low) << self.battery_low_bit)


STATUS_MAPS: dict[str, StatusMap] = {
    # CJ/T 188 text: ST0 bits 0-1 valve (00 open, 01 closed, 11 abnormal), bit 2 battery low
    "standard": StatusMap(),
    # firmwares that flag "valve closed" in bit 0 alone and a low battery in bit 3 (bit 1 = valve fault)
    "bit0-closed": StatusMap(
        valve_shift=0,
        valve_mask=0b11,
        valve_states={0: "open", 1: "closed", 2: "abnormal", 3: "abnormal"},
        battery_low_bit=3,
    ),
    # firmwares that keep the flags in ST1 (the second status byte)
    "st1": StatusMap(valve_shift=8, battery_low_bit=10),
}


@dataclass(frozen=True, slots=True)
class Quantity:
    value: float
    unit: str


def _quantity(raw: bytes, decimals: int, what: str) -> Quantity:
    return Quantity(bcd_to_int(raw[:4], what) / 10**decimals, UNITS.get(raw[4], f"unit {raw[4]:02X}"))


FLOW_LAYOUT = ("flow_total", "flow_settlement")  # 4 BCD + unit each, then time (7), ST (2)
HEAT_LAYOUT: tuple[tuple[str, int, int], ...] = (
    # name, BCD bytes (+1 unit byte when > 0 decimals table says so), decimals
    ("heat_settlement", 4, 2),
    ("heat_total", 4, 2),
    ("heat_power", 4, 2),
    ("flow_rate", 4, 4),
    ("flow_total", 4, 2),
)


def parse_901f(payload: bytes, meter_type: int, status_map: StatusMap) -> dict[str, Any]:
    """Values of a 901F reply payload (after DI and SER) by field name; flows with their units.

    Water/gas: flow_total, flow_settlement (+ `<name>_unit`), meter_time, status, valve, battery_low.
    Heat/cooling meters add heat_settlement, heat_total, heat_power, flow_rate, supply_temp,
    return_temp, working_hours."""
    out: dict[str, Any] = {}
    pos = 0
    if meter_type in HEAT_TYPES:
        need = 5 * 5 + 3 + 3 + 3 + 7 + 2
        if len(payload) < need:
            raise FrameError(PROTOCOL, f"901F heat reading needs {need} bytes, got {len(payload)}", payload)
        for name, size, decimals in HEAT_LAYOUT:
            q = _quantity(payload[pos : pos + size + 1], decimals, name)
            out[name], out[f"{name}_unit"] = q.value, q.unit
            pos += size + 1
        out["supply_temp"] = bcd_to_int(payload[pos : pos + 3], "supply_temp") / 100
        out["return_temp"] = bcd_to_int(payload[pos + 3 : pos + 6], "return_temp") / 100
        out["working_hours"] = bcd_to_int(payload[pos + 6 : pos + 9], "working_hours")
        pos += 9
    else:
        need = 5 + 5 + 7 + 2
        if len(payload) < need:
            raise FrameError(PROTOCOL, f"901F reading needs {need} bytes, got {len(payload)}", payload)
        for name in FLOW_LAYOUT:
            q = _quantity(payload[pos : pos + 5], 2, name)
            out[name], out[f"{name}_unit"] = q.value, q.unit
            pos += 5
    out["meter_time"] = decode_time(payload[pos : pos + 7])
    status = int.from_bytes(payload[pos + 7 : pos + 9], "little")
    out["status"] = status
    out["valve"] = status_map.valve(status)
    out["battery_low"] = status_map.battery_low(status)
    return out


def build_901f(
    meter_type: int,
    values: dict[str, Any],
    status_map: StatusMap | None = None,
    when: datetime | None = None,
    raw_time: bytes | None = None,
) -> bytes:
    """A 901F payload (after DI and SER) from values: simulators and round-trip tests."""
    smap = status_map or STATUS_MAPS["standard"]

    def q(name: str, decimals: int, default_unit: str) -> bytes:
        unit = UNIT_CODES[str(values.get(f"{name}_unit", default_unit))]
        return int_to_bcd(round(float(values.get(name, 0)) * 10**decimals), 4) + bytes([unit])

    if meter_type in HEAT_TYPES:
        units = {
            "heat_settlement": "kWh",
            "heat_total": "kWh",
            "heat_power": "kW",
            "flow_rate": "m3/h",
            "flow_total": "m3",
        }
        out = b"".join(q(name, dec, units[name]) for name, _, dec in HEAT_LAYOUT)
        out += int_to_bcd(round(float(values.get("supply_temp", 0)) * 100), 3)
        out += int_to_bcd(round(float(values.get("return_temp", 0)) * 100), 3)
        out += int_to_bcd(int(values.get("working_hours", 0)), 3)
    else:
        out = q("flow_total", 2, "m3") + q("flow_settlement", 2, "m3")
    out += raw_time if raw_time is not None else encode_time(when or datetime(2026, 1, 1))
    status = smap.encode(str(values.get("valve", "open")), bool(values.get("battery_low", False)))
    return out + status.to_bytes(2, "little")
