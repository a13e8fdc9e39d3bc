"""Simulated Modbus devices and their pymodbus datastore.

Cheap by design, so one process can serve 1,000 devices: a profile is parsed once into a
`SimProfile` (register layout per table); a device is a `SimDevice` (profile reference, unit id,
a small `DeviceState`), and its registers are computed on demand when a read arrives. Nothing
is stored per register except what a client wrote.

Registers are encoded with pymodbus' own `convert_to_registers` (not the driver's codec), so
tests of the driver against the simulator compare two independent implementations.
"""

from __future__ import annotations

import random
import time
import tomllib
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pymodbus.client.mixin import ModbusClientMixin
from pymodbus.constants import ExcCodes
from pymodbus.datastore import ModbusBaseDeviceContext

from citynerve.drivers.modbus.config import BIT_TABLES, ModbusPointConfig
from citynerve.gateway import shipped
from citynerve.hil.sim.modbus._behaviour import BEHAVIOURS, DeviceState, ValueFn, advance_totals, fallback

PROFILES_DIR = shipped.profiles()

_DT = ModbusClientMixin.DATATYPE
_PYMODBUS_TYPES: dict[str, Any] = {
    "int16": _DT.INT16,
    "uint16": _DT.UINT16,
    "int32": _DT.INT32,
    "uint32": _DT.UINT32,
    "int64": _DT.INT64,
    "uint64": _DT.UINT64,
    "float32": _DT.FLOAT32,
    "float64": _DT.FLOAT64,
}
_INT_RANGE: dict[str, tuple[int, int]] = {
    "int16": (-(2**15), 2**15 - 1),
    "uint16": (0, 2**16 - 1),
    "int32": (-(2**31), 2**31 - 1),
    "uint32": (0, 2**32 - 1),
    "int64": (-(2**63), 2**63 - 1),
    "uint64": (0, 2**64 - 1),
}
_TABLE_OF_FC: dict[int, str] = {1: "coil", 5: "coil", 15: "coil", 2: "discrete", 3: "holding", 4: "input"}
_TABLE_OF_FC.update({6: "holding", 16: "holding", 22: "holding", 23: "holding"})


def registers_of(point: ModbusPointConfig, value: float | int | bool | str) -> list[int]:
    """Raw registers of an engineering value (inverse of scale/offset), with the point's orders."""
    if point.type == "bool":
        return [(1 << (point.bit or 0)) if value else 0]
    if point.type == "string":
        regs = ModbusClientMixin.convert_to_registers(str(value), _DT.STRING, string_encoding=point.encoding)
        regs = (regs + [0] * point.register_count)[: point.register_count]
    else:
        raw = (float(value) - point.offset) / point.scale
        if point.type in _INT_RANGE:
            lo, hi = _INT_RANGE[point.type]
            raw = min(hi, max(lo, round(raw)))
            regs = ModbusClientMixin.convert_to_registers(
                int(raw), _PYMODBUS_TYPES[point.type], point.word_order
            )
        else:
            regs = ModbusClientMixin.convert_to_registers(raw, _PYMODBUS_TYPES[point.type], point.word_order)
    if point.byte_order == "little":
        regs = [((r & 0xFF) << 8) | (r >> 8) for r in regs]
    return regs


@dataclass(frozen=True, slots=True)
class SimProfile:
    """A profile file turned into what the simulator needs: points by table and value functions."""

    id: str
    points: Mapping[str, ModbusPointConfig]
    behaviour: Mapping[str, ValueFn]
    extent: Mapping[str, tuple[int, int]]  # table -> (first address, end) of the device's map
    by_table: Mapping[str, tuple[ModbusPointConfig, ...]]

    @classmethod
    def load(cls, profile: str | Path) -> SimProfile:
        """Load by id (from config/profiles) or by path."""
        path = Path(profile)
        if not path.suffix:
            path = PROFILES_DIR / f"{profile}.toml"
        with path.open("rb") as fh:
            data = tomllib.load(fh)
        points = {
            name: ModbusPointConfig(name=name, **table) for name, table in data.get("points", {}).items()
        }
        known = BEHAVIOURS.get(data["id"], {})
        behaviour = {n: known.get(n) or fallback(p.unit, p.type) for n, p in points.items()}
        extent: dict[str, tuple[int, int]] = {}
        for p in points.values():
            lo, hi = extent.get(p.table, (p.address, p.address + p.register_count))
            extent[p.table] = (min(lo, p.address), max(hi, p.address + p.register_count))
        by_table = {t: tuple(p for p in points.values() if p.table == t) for t in extent}
        return cls(data["id"], points, behaviour, extent, by_table)


class SimDevice:
    """One simulated device: a profile, a unit id and its state. Values move with `clock()`."""

    def __init__(
        self,
        profile: SimProfile,
        unit: int,
        *,
        seed: int = 0,
        speed: float = 1.0,
        utc_offset_h: float = 8.0,
        clock: Any = time.time,
    ) -> None:
        self.profile = profile
        self.unit = unit
        self.speed = speed
        self.utc_offset_h = utc_offset_h
        self._clock = clock
        self._t_start = clock()
        rng = random.Random(seed * 7919 + unit)
        self.state = DeviceState(seed=seed * 7919 + unit, rng=rng, peak=rng.uniform(3.0, 30.0))
        if profile.id == "modbus-water-meter":
            self.state.peak = rng.uniform(0.5, 4.0)
        self.state.totals = {"energy_kwh": rng.uniform(1000, 50000), "water_m3": rng.uniform(100, 5000)}
        self.written: dict[tuple[str, int], int] = {}
        self.reads = 0

    # -- time -------------------------------------------------------------------------------
    def sim_time(self) -> float:
        """Simulated seconds since the epoch (runs `speed` times faster than the wall clock)."""
        now = self._clock()
        return self._t_start + (now - self._t_start) * self.speed

    def _hour(self, t: float) -> float:
        return ((t / 3600.0) + self.utc_offset_h) % 24

    # -- values -----------------------------------------------------------------------------
    def values(self, names: Iterable[str] | None = None) -> dict[str, float | int | bool | str]:
        """Engineering values now, of `names` or of every point (advances totals)."""
        t = self.sim_time()
        hour = self._hour(t)
        advance_totals(self.profile.id, self.state, t, hour)
        self.state.last_t = t
        out: dict[str, float | int | bool | str] = {}
        behaviour = self.profile.behaviour
        for name in behaviour if names is None else names:
            if name == "device_address":
                out[name] = self.unit
                continue
            out[name] = behaviour[name](self.state, t, hour)
        return out

    def registers(self, table: str, address: int, count: int) -> list[int] | list[bool] | ExcCodes:
        """What the device answers to a read of `count` addresses of `table` from `address`."""
        lo_hi = self.profile.extent.get(table)
        if lo_hi is None or address < lo_hi[0] or address + count > lo_hi[1]:
            return ExcCodes.ILLEGAL_ADDRESS
        self.reads += 1
        # Only the points this read touches are computed: a fleet of 1,000 devices stays cheap.
        touched = [
            p
            for p in self.profile.by_table[table]
            if p.address < address + count and p.address + p.register_count > address
        ]
        values = self.values(p.name for p in touched)
        words = [0] * count
        whole = [False] * count
        for point in touched:
            name = point.name
            start = point.address - address
            regs = [int(bool(values[name]))] if table in BIT_TABLES else registers_of(point, values[name])
            for i, reg in enumerate(regs):
                j = start + i
                if not 0 <= j < count:
                    continue
                if point.bit is not None:  # a bit shares its register with other points
                    if not whole[j]:
                        words[j] |= reg
                else:
                    words[j], whole[j] = reg, True
        for i in range(count):
            written = self.written.get((table, address + i))
            if written is not None:
                words[i] = written
        if table in BIT_TABLES:
            return [bool(w) for w in words]
        return words

    def write(self, table: str, address: int, values: list[int] | list[bool]) -> ExcCodes | None:
        """Keep what a client wrote; the device reads it back from then on."""
        lo_hi = self.profile.extent.get(table)
        if lo_hi is None or address < lo_hi[0] or address + len(values) > lo_hi[1]:
            return ExcCodes.ILLEGAL_ADDRESS
        for i, v in enumerate(values):
            self.written[(table, address + i)] = int(v)
        return None


class SimDeviceContext(ModbusBaseDeviceContext):
    """pymodbus datastore view of one `SimDevice` (0-based addresses, no +1 quirk)."""

    def __init__(self, device: SimDevice) -> None:
        self.device = device

    def reset(self) -> None:
        self.device.written.clear()

    def getValues(self, func_code: int, address: int, count: int = 1) -> list[int] | list[bool] | ExcCodes:
        table = _TABLE_OF_FC.get(func_code)
        if table is None:
            return ExcCodes.ILLEGAL_FUNCTION
        return self.device.registers(table, address, count)

    def setValues(self, func_code: int, address: int, values: list[int] | list[bool]) -> ExcCodes | None:
        table = _TABLE_OF_FC.get(func_code)
        if table not in ("coil", "holding"):
            return ExcCodes.ILLEGAL_FUNCTION
        return self.device.write(table, address, values)
