"""Simulated BTHome nodes of the street (issue 18), driven by their profile files.

A `ProfileNode` reads config/profiles/<profile>.toml and advertises the profile's points as BTHome
objects (the first object id of each name in the BTHome table, values divided by the point's
`scale`, as a real node would send them). The node classes below keep a physical state with
realistic noise and can be put into their faults:

- `BedFootNode`: in bed / out of bed (its `in_bed` attribute).
- `HydrantNode`: network pressure with a pump cycle and transducer noise; `open_outlet()`,
  `leak(mpa)`, `knock(deg, broken=)`.
- `FireLaneNode`: `park()` / `leave()`; radar range with noise.
- `LitterBinNode`: `add_rubbish(share)`, `empty()`, `knock()`, `ignite()` (the lid heats ~4 degC/min).
- `CurtainWallNode`: `wind(m/s)`, `loosen()` (six times the vibration), `slip(deg)`.
- `EntranceNode`: `release_lock()`, `open_door()` (forced open unless the lock was released first),
  `close_door()`.

Each node's `values(t)` is its state at simulated time `t` (seconds); `report(t)` advertises it.
"""

from __future__ import annotations

import math
import random
import tomllib
from pathlib import Path
from typing import Any

from citynerve.drivers.bthome.objects import OBJECTS
from citynerve.hil.sim.ble.advertiser import VirtualRadio
from citynerve.hil.sim.ble.nodes import BTHomeNode

PROFILES_DIR = Path(__file__).resolve().parents[3] / "config" / "profiles"
_FIRST_ID: dict[str, int] = {}
for _oid in sorted(OBJECTS):
    _FIRST_ID.setdefault(OBJECTS[_oid].name, _oid)

Value = bool | int | float


class ProfileNode(BTHomeNode):
    """A BTHome node sending the points of one profile (subclasses give the values)."""

    profile_id = ""

    def __init__(
        self, radio: VirtualRadio, mac: str, *, key: bytes | None = None, seed: int = 0, **kw: Any
    ) -> None:
        super().__init__(radio, mac, key=key, **kw)
        data = tomllib.loads((PROFILES_DIR / f"{self.profile_id}.toml").read_text(encoding="utf-8"))
        self.points: dict[str, tuple[int, float]] = {}
        for name, p in data["points"].items():
            obj = p["object"]
            oid = int(obj, 16) if isinstance(obj, str) and obj.startswith("0x") else _FIRST_ID[obj]
            self.points[name] = (oid, float(p.get("scale", 1.0)))
        self.rng = random.Random(seed)
        self.battery = 95

    def values(self, t: float) -> dict[str, Value]:
        raise NotImplementedError

    def objects_of(self, values: dict[str, Value]) -> list[tuple[int, Value]]:
        """BTHome objects in id order (as the spec asks), engineering values back to the object's unit."""
        out: list[tuple[int, Value]] = []
        for name, v in values.items():
            oid, scale = self.points[name]
            out.append((oid, v if isinstance(v, bool) or scale == 1.0 else v / scale))
        return sorted(out, key=lambda o: o[0])

    async def report_at(self, t: float) -> dict[str, Value]:
        """Advertise the state at simulated time `t`; returns the values sent."""
        values = self.values(t)
        await self.report(self.objects_of(values))  # type: ignore[arg-type]
        return values


class BedFootNode(ProfileNode):
    profile_id = "bthome-bed-occupancy"

    def __init__(self, radio: VirtualRadio, mac: str, **kw: Any) -> None:
        super().__init__(radio, mac, **kw)
        self.in_bed = True

    def values(self, t: float) -> dict[str, Value]:
        volts = round(2.9 + 0.004 * self.battery + self.rng.gauss(0, 0.005), 3)
        return {"in_bed": self.in_bed, "battery": self.battery, "battery_voltage": volts}


class FlatDoorNode(ProfileNode):
    """The door contact of an elderly resident's flat (the household's third signal)."""

    profile_id = "bthome-door-contact"

    def __init__(self, radio: VirtualRadio, mac: str, **kw: Any) -> None:
        super().__init__(radio, mac, **kw)
        self.door_open = False

    def values(self, t: float) -> dict[str, Value]:
        return {"door_open": self.door_open, "battery": self.battery}


class MotionNode(ProfileNode):
    """A PIR in the living room and hallway of an elderly resident's flat."""

    profile_id = "bthome-motion-pir"

    def __init__(self, radio: VirtualRadio, mac: str, **kw: Any) -> None:
        super().__init__(radio, mac, **kw)
        self.motion = False
        self.lux = 120.0

    def values(self, t: float) -> dict[str, Value]:
        lux = round(max(0.0, self.lux + self.rng.gauss(0, 2)), 2)
        return {"motion": self.motion, "illuminance": lux, "battery": self.battery}


class HydrantNode(ProfileNode):
    profile_id = "bthome-fire-hydrant"

    def __init__(self, radio: VirtualRadio, mac: str, *, base_mpa: float = 0.32, **kw: Any) -> None:
        super().__init__(radio, mac, **kw)
        self.base = base_mpa
        self.outlet_open = False
        self.leak_mpa = 0.0
        self.tilt = 0.0
        self.broken = False
        self.tamper = False

    def open_outlet(self, is_open: bool = True) -> None:
        self.outlet_open = is_open

    def leak(self, mpa: float) -> None:
        self.leak_mpa = mpa

    def knock(self, deg: float = 40.0, *, broken: bool = False) -> None:
        self.tilt, self.broken = deg, broken

    def values(self, t: float) -> dict[str, Value]:
        pump = 0.03 if math.sin(2 * math.pi * t / 1800.0) > 0 else 0.0  # booster stage every 15 min
        p = self.base + pump - self.leak_mpa - (0.15 if self.outlet_open else 0.0)
        p = 0.01 if self.broken else max(0.0, p + self.rng.gauss(0, 0.004))
        tilt = self.tilt + abs(self.rng.gauss(0, 0.3))
        return {
            "pressure": round(p, 4),
            "outlet_open": self.outlet_open,
            "tamper": self.tamper,
            "tilt": round(tilt, 1),
            "battery": self.battery,
        }


class FireLaneNode(ProfileNode):
    profile_id = "bthome-fire-lane"

    def __init__(self, radio: VirtualRadio, mac: str, **kw: Any) -> None:
        super().__init__(radio, mac, **kw)
        self.occupied = False

    def park(self) -> None:
        self.occupied = True

    def leave(self) -> None:
        self.occupied = False

    def values(self, t: float) -> dict[str, Value]:
        dist = round(self.rng.uniform(300, 900)) if self.occupied else 4000
        return {"occupied": self.occupied, "distance": dist, "battery": self.battery}


class LitterBinNode(ProfileNode):
    profile_id = "bthome-litter-bin"

    def __init__(self, radio: VirtualRadio, mac: str, *, depth_mm: float = 900.0, **kw: Any) -> None:
        super().__init__(radio, mac, **kw)
        self.depth = depth_mm
        self.fill = 0.1
        self.tilt = 0.0
        self.fire_since: float | None = None

    def add_rubbish(self, share: float) -> None:
        self.fill = min(1.0, self.fill + share)

    def empty(self) -> None:
        self.fill = 0.02

    def knock(self, deg: float = 80.0) -> None:
        self.tilt = deg

    def ignite(self, t: float) -> None:
        self.fire_since = t

    def values(self, t: float) -> dict[str, Value]:
        dist = self.depth * (1 - self.fill) + self.rng.gauss(0, 10)
        if self.rng.random() < 0.03:
            dist = self.rng.uniform(80, 200)  # a false echo off a folded bag
        temp = 22.0 + self.rng.gauss(0, 0.3)
        if self.fire_since is not None:
            temp += min(250.0, 4.0 * max(0.0, t - self.fire_since) / 60.0)
        return {
            "fill_distance": round(max(30.0, dist)),
            "tilt": round(self.tilt + abs(self.rng.gauss(0, 1.0)), 1),
            "temperature": round(temp, 2),
            "battery": self.battery,
        }


class CurtainWallNode(ProfileNode):
    profile_id = "bthome-curtain-wall"

    def __init__(self, radio: VirtualRadio, mac: str, **kw: Any) -> None:
        super().__init__(radio, mac, **kw)
        self.wind_ms = 4.0
        self.loose = False
        self.offset = 0.0

    def wind(self, ms: float) -> None:
        self.wind_ms = ms

    def loosen(self) -> None:
        self.loose = True

    def slip(self, deg: float) -> None:
        self.offset += deg

    def values(self, t: float) -> dict[str, Value]:
        v = self.wind_ms * (1 + abs(self.rng.gauss(0, 0.15)))
        tilt = self.offset + 0.0003 * v * v + self.rng.gauss(0, 0.02)
        peak = 0.0015 * (1.4 * v) ** 2 * math.exp(self.rng.gauss(0, 0.25)) * (6.0 if self.loose else 1.0)
        return {
            "tilt": round(tilt, 1),
            "vibration_peak": round(peak, 3),
            "vibration": peak > 3.0,
            "battery": self.battery,
        }


class EntranceNode(ProfileNode):
    profile_id = "bthome-entrance-door"

    def __init__(self, radio: VirtualRadio, mac: str, **kw: Any) -> None:
        super().__init__(radio, mac, **kw)
        self.door_open = False
        self.unlocked = False
        self.forced = False

    def release_lock(self, released: bool = True) -> None:
        self.unlocked = released

    def open_door(self) -> None:
        self.door_open = True
        self.forced = not self.unlocked  # the access controller's forced-door output

    def close_door(self) -> None:
        self.door_open = self.forced = False

    def values(self, t: float) -> dict[str, Value]:
        return {
            "door_open": self.door_open,
            "unlocked": self.unlocked,
            "forced_open": self.forced,
            "tamper": False,
            "battery": self.battery,
        }
