"""Simulated RS-485 meters: they answer frames the way real DL/T 645 and CJ/T 188 meters do."""

from __future__ import annotations

import math
import random
import time
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from zoneinfo import ZoneInfo

from citynerve.drivers.cjt188 import codec as cjt
from citynerve.drivers.cjt188.readings import STATUS_MAPS, StatusMap, build_901f
from citynerve.drivers.dlt645 import codec as dlt
from citynerve.drivers.dlt645.registry import BUILTIN, DataFormat, DataItem
from citynerve.drivers.serialio.search import fits
from citynerve.gateway.timecheck import SITE_TZ


class _Moving:
    """Values that move like a real installation: slow daily swing, noise, monotonic counters."""

    def __init__(self, seed: int) -> None:
        self.rng = random.Random(seed)
        self.started = time.monotonic()
        self.phase = self.rng.uniform(0, 2 * math.pi)

    def wave(self, base: float, swing: float, period_s: float = 600.0) -> float:
        t = time.monotonic() - self.started
        return (
            base + swing * math.sin(2 * math.pi * t / period_s + self.phase) + self.rng.gauss(0, swing / 20)
        )


def _wall_clock(tz: str, offset_s: float) -> datetime:
    """A meter's clock: the site's wall time without an offset, `offset_s` off."""
    return datetime.now(ZoneInfo(tz)).replace(tzinfo=None) + timedelta(seconds=offset_s)


@dataclass
class SimDlt645Meter:
    """A DL/T 645 meter at `address` (12 digits). Answers reads of every DI of its version's table,
    `extra` DIs with fixed values, read-address (13) and follow-ups for DIs in `split_dis`
    (their reply comes in two frames). `values` pins a DI to a fixed value."""

    address: str
    version: str = "2007"
    fe_count: int = 2  # FE bytes before each reply (real meters send 0..4)
    seed: int = 0
    values: dict[int, float | int | str] = field(default_factory=dict)
    extra: dict[int, tuple[DataItem, float | int | str]] = field(default_factory=dict)
    split_dis: frozenset[int] = frozenset()
    energy_kwh: float = 1234.56
    phases: int = 3  # 1: a single-phase meter, which has no phase B and C data (an error reply), 2007 or 1997
    clock_offset_s: float = 0.0  # how far the meter's own clock is off (it keeps local time)
    tz: str = SITE_TZ  # the site's zone: its clock keeps that wall time, whatever the host's zone

    def __post_init__(self) -> None:
        self._moving = _Moving(self.seed or int(self.address))
        self._last = time.monotonic()
        self._pending_split: dict[int, bytes] = {}

    def value(self, item: DataItem) -> float | int | str:
        if item.di in self.values:
            return self.values[item.di]
        m = self._moving
        now = time.monotonic()
        power_kw = max(0.05, m.wave(3.0, 1.5))
        self.energy_kwh += power_kw * (now - self._last) / 3600
        self._last = now
        name = item.name
        if item.di in (0x04000101, 0x04000102):  # the meter's clock: local time, maybe off
            clock = _wall_clock(self.tz, self.clock_offset_s)
            return (
                clock.strftime("%y%m%d0") + str(clock.isoweekday() % 7)
                if item.di == 0x04000101
                else (clock.strftime("%H%M%S"))
            )
        if item.fmt is DataFormat.BINARY:
            return 0
        if item.fmt is not DataFormat.BCD:
            return self.address if "address" in name or "number" in name else "000000"
        if "energy" in name:
            return round(self.energy_kwh * (0.3 if "reverse" in name or "reactive" in name else 1.0), 2)
        if "voltage" in name and "battery" not in name:
            return round(m.wave(228.0, 4.0), 1)
        if "current" in name:
            return round(power_kw * 1000 / 220 / 3, 3)
        if "power factor" in name:
            return round(min(0.999, m.wave(0.95, 0.02)), 3)
        if "power" in name or "demand" in name:
            return round(power_kw / (3 if "phase" in name else 1), 4)
        if "frequency" in name:
            return round(m.wave(50.0, 0.02), 2)
        if "temperature" in name:
            return round(m.wave(31.0, 3.0), 1)
        return round(m.wave(3.6, 0.05), 2)

    def _item(self, di: int) -> tuple[DataItem, float | int | str] | None:
        if di in self.extra:
            return self.extra[di]
        if self.phases == 1 and self.version == "2007" and di >> 24 == 0x02 and (di >> 8) & 0xFF in (2, 3):
            return None  # phase B / C voltage, current, power... (02 xx 02 00, 02 xx 03 00)
        if self.phases == 1 and self.version == "1997" and di >> 12 == 0xB and di & 0xF in (2, 3):
            return None  # phase B / C voltage, current, power (B6x2, B6x3)
        item = BUILTIN[self.version].get(di)
        return None if item is None else (item, self.value(item))

    def answer(self, frame: dlt.Frame) -> bytes | None:
        """The reply to one request frame (None: not for this meter, or no reply due)."""
        if frame.is_reply:
            return None
        fe = b"\xfe" * self.fe_count
        if frame.function == dlt.Function.READ_ADDRESS:
            if frame.address != dlt.WILDCARD and frame.address != self.address:
                return None
            return fe + dlt.build_reply(self.address, 0x13, dlt.encode_address(self.address))
        if not fits(frame.address, self.address):
            return None  # A in the address: any digit (a meter search asks partial addresses)
        di_len = 4 if self.version == "2007" else 2
        read_fn = dlt.Function.READ if self.version == "2007" else dlt.Function.READ_1997
        if frame.function == read_fn and len(frame.data) >= di_len:
            di_raw = frame.data[:di_len]
            found = self._item(int.from_bytes(di_raw, "little"))
            if found is None:
                return fe + dlt.build_error_reply(self.address, read_fn, 0x02)
            item, value = found
            payload = item.encode(value)
            if item.di in self.split_dis and len(payload) > 1:
                cut = len(payload) // 2
                self._pending_split[item.di] = payload[cut:]
                return fe + dlt.build_reply(self.address, read_fn, di_raw + payload[:cut], more=True)
            return fe + dlt.build_reply(self.address, read_fn, di_raw + payload)
        if frame.function == dlt.Function.READ_FOLLOWUP and len(frame.data) >= 5:
            di_raw, seq = frame.data[:4], frame.data[4]
            rest = self._pending_split.pop(int.from_bytes(di_raw, "little"), None)
            if rest is None:
                return fe + dlt.build_error_reply(self.address, 0x12, 0x02)
            return fe + dlt.build_reply(self.address, 0x12, di_raw + rest + bytes([seq]))
        if frame.function in (dlt.Function.WRITE, dlt.Function.READ_1997 if self.version == "2007" else -1):
            return fe + dlt.build_error_reply(self.address, frame.function, 0x04)
        return fe + dlt.build_error_reply(self.address, frame.function, 0x01)


@dataclass
class SimCjt188Meter:
    """A CJ/T 188 meter: 901F readings whose flow grows while the valve is open, read address,
    valve control (A017). `di_order` is the order it replies in (it accepts either)."""

    address: str
    meter_type: int = 0x10
    di_order: cjt.DiOrder = cjt.DiOrder.HIGH_FIRST
    fe_count: int = 2
    seed: int = 0
    flow_m3: float = 12.34
    valve: str = "open"
    battery_low: bool = False
    bad_time: bool = False  # an all-zero meter clock (flat clock battery)
    clock_offset_s: float = 0.0  # how far the meter's own clock is off (it keeps local time)
    tz: str = SITE_TZ  # the site's zone: its clock keeps that wall time, whatever the host's zone
    status_map: StatusMap = field(default_factory=lambda: STATUS_MAPS["standard"])

    def __post_init__(self) -> None:
        self._moving = _Moving(self.seed or int(self.address))
        self._last = time.monotonic()
        self.settlement_m3 = self.flow_m3

    def reading(self) -> dict[str, float | str | bool]:
        now = time.monotonic()
        if self.valve == "open":  # a household uses 0..0.5 m3/h in bursts
            rate = max(0.0, self._moving.wave(0.15, 0.2, 120.0))
            self.flow_m3 += rate * (now - self._last) / 3600
        self._last = now
        values: dict[str, float | str | bool] = {
            "flow_total": round(self.flow_m3, 2),
            "flow_settlement": round(self.settlement_m3, 2),
            "valve": self.valve,
            "battery_low": self.battery_low,
        }
        if self.meter_type in cjt.HEAT_TYPES:
            supply = self._moving.wave(65.0, 3.0)
            values |= {
                "heat_settlement": 100.0,
                "heat_total": round(100 + self.flow_m3 * 11.6, 2),
                "heat_power": 4.2,
                "flow_rate": 0.3,
                "supply_temp": round(supply, 2),
                "return_temp": round(supply - 12, 2),
                "working_hours": 4321,
            }
        return values

    def answer(self, frame: cjt.Frame) -> bytes | None:
        if frame.is_reply:
            return None
        fe = b"\xfe" * self.fe_count
        ser = bytes([frame.ser or 0])
        if frame.function == cjt.Control.READ_ADDRESS:
            if not fits(frame.address, self.address):
                return None  # AA..AA: any meter; a partial pattern: the meters that fit it
            data = cjt.di_bytes(cjt.DI_ADDRESS, self.di_order) + ser
            return fe + cjt.encode_frame(self.meter_type, self.address, 0x83, data, preamble=False)
        if frame.address != self.address:
            return None
        if frame.function == cjt.Control.READ and cjt.di_matches(frame.di, cjt.DI_READ):
            raw_time = bytes(7) if self.bad_time else None
            payload = build_901f(
                self.meter_type,
                self.reading(),
                self.status_map,
                _wall_clock(self.tz, self.clock_offset_s),  # local time, like real meters
                raw_time,
            )
            data = cjt.di_bytes(cjt.DI_READ, self.di_order) + ser + payload
            return fe + cjt.encode_frame(self.meter_type, self.address, 0x81, data, preamble=False)
        if (
            frame.function == cjt.Control.WRITE
            and cjt.di_matches(frame.di, cjt.DI_VALVE)
            and len(frame.data) >= 4
        ):
            command = frame.data[3]
            if command not in (cjt.VALVE_OPEN, cjt.VALVE_CLOSE):
                data = cjt.di_bytes(cjt.DI_VALVE, self.di_order) + ser + b"\x01\x00"
                return fe + cjt.encode_frame(self.meter_type, self.address, 0xC4, data, preamble=False)
            self.valve = "open" if command == cjt.VALVE_OPEN else "closed"
            status = self.status_map.encode(self.valve, self.battery_low).to_bytes(2, "little")
            data = cjt.di_bytes(cjt.DI_VALVE, self.di_order) + ser + status
            return fe + cjt.encode_frame(self.meter_type, self.address, 0x84, data, preamble=False)
        data = frame.data[:3] + b"\x01\x00"
        return fe + cjt.encode_frame(
            self.meter_type, self.address, 0xC0 | frame.function, data, preamble=False
        )
