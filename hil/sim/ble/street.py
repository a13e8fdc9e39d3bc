"""Simulated BTHome nodes of the street (issue 18), driven by their profile files.

A `ProfileNode` reads config/profiles/<profile>.toml and advertises the profile's points as BTHome
objects (the first object id of each name in the BTHome table, values divided by the point's
`scale`, as a real node would send them). The node classes below keep a physical state with
realistic noise and can be put into their faults:

- `BedFootNode`: in bed / out of bed (its `in_bed` attribute); `drift(v_per_h, t)`: the strip's
  loaded reading sinks until the node reports an empty bed with the resident in it.
- `HydrantNode`: network pressure with a pump cycle and transducer noise; `open_outlet()`,
  `leak(mpa)`, `knock(deg, broken=)`, `tamper()` (housing opened).
- `FireLaneNode`: `park()` / `leave()`; radar range with noise; false detections: `blip(t, s)`, or
  at random with `false_per_h=` (5-15 s each, past the detector's debounce, no vehicle).
- `LitterBinNode`: `add_rubbish(share)`, `empty()`, `knock()`, `ignite()` (the lid heats ~4 degC/min);
  a false echo off a folded bag in 3 % of readings (always on, as before).
- `CurtainWallNode`: `wind(m/s)`, `loosen()` (six times the vibration), `slip(deg)`.
- `EntranceNode`: `release_lock()`, `open_door()` (forced open unless the lock was released first),
  `close_door()`, `tamper()` (housing opened).

Every node: `loss=` (the probability that one advert is lost; a change goes out as a burst and is
lost only if all of its adverts are, a heartbeat is one advert, see `ProfileNode`) and `reset(t)`
(a reboot: silent, then the state again with a new packet id sequence). Noise and faults are seeded
(`seed=`); loss and the faults are off unless asked for, so the demo's nodes behave as they did.

Each node's `values(t)` is its state at simulated time `t` (seconds); `report_at(t)` advertises it.
"""

from __future__ import annotations

import math
import random
import tomllib
from pathlib import Path
from typing import Any

from citynerve.drivers.bthome.objects import OBJECTS
from citynerve.hil.eval.bed import REPEATS
from citynerve.hil.sim.ble.advertiser import VirtualRadio
from citynerve.hil.sim.ble.nodes import BTHomeNode

PROFILES_DIR = Path(__file__).resolve().parents[3] / "config" / "profiles"
_FIRST_ID: dict[str, int] = {}
for _oid in sorted(OBJECTS):
    _FIRST_ID.setdefault(OBJECTS[_oid].name, _oid)

Value = bool | int | float

COUNTER_BLOCK = 64  # device_fw: counters reserved per flash write; a reset skips the rest of a block
# The bed-foot strip's divider: device_fw/bedfoot/config.py's thresholds (above OCCUPIED_V someone
# lies on the bed, below EMPTY_V it is empty, no change between); the loaded and unloaded readings are
# this simulator's assumption, with margin on both sides as an installer would set the thresholds.
OCCUPIED_V, EMPTY_V = 1.2, 0.8
LOADED_V, UNLOADED_V = 2.0, 0.3
# A fire-lane false detection lasts 5-15 s: past the detector's 5 s debounce (the profile's source),
# as hil/eval/firelane.py draws its slow vehicles and flickers (0.5 an hour by day there).
BLIP_S = (5.0, 15.0)


class ProfileNode(BTHomeNode):
    """A BTHome node sending the points of one profile (subclasses give the values).

    `loss` is the probability that one advert does not reach the gateway (0 = a perfect link, the
    default). A report whose state points (the booleans) changed since the last one is a change,
    sent like device_fw sends it, as a burst of adverts under one packet id (counted as
    `REPEATS`, as hil/eval/bed.py does): it is lost only if every advert of the burst is. Any
    other report is a heartbeat, one advert, lost with probability `loss`. A lost report still
    uses its packet id (or counter): the node sent it. The draws come from their own generator
    (seeded from `seed`), so turning loss on leaves the node's measurement noise as it was.
    """

    profile_id = ""

    def __init__(
        self,
        radio: VirtualRadio,
        mac: str,
        *,
        key: bytes | None = None,
        seed: int = 0,
        loss: float = 0.0,
        **kw: Any,
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
        self.loss = loss
        self.link_rng = random.Random(f"{seed}:link")  # advert loss
        self.fault_rng = random.Random(f"{seed}:faults")  # random faults (off unless a rate is set)
        self.reports_sent = self.reports_lost = 0  # reports that reached the radio / that the link lost
        self.last_lost = False
        self.down_until = -math.inf  # a node reset: silent until then (simulated time)
        self._last_state: dict[str, Value] | None = None

    def values(self, t: float) -> dict[str, Value]:
        raise NotImplementedError

    def objects_of(self, values: dict[str, Value]) -> list[tuple[int, Value]]:
        """BTHome objects in id order (as the spec asks), engineering values back to the object's unit."""
        out: list[tuple[int, Value]] = []
        for name, v in values.items():
            oid, scale = self.points[name]
            out.append((oid, v if isinstance(v, bool) or scale == 1.0 else v / scale))
        return sorted(out, key=lambda o: o[0])

    def is_change(self, values: dict[str, Value]) -> bool:
        """Whether the node sends `values` as a change (a burst): a state point differs from the
        last report (the first report after boot is one)."""
        last = self._last_state
        return last is None or any(last.get(k) != v for k, v in values.items() if isinstance(v, bool))

    def advert_lost(self, change: bool) -> bool:
        """Draw whether a report is lost: a heartbeat's one advert, or every advert of a change's burst."""
        if self.loss <= 0.0:
            return False
        return all(self.link_rng.random() < self.loss for _ in range(REPEATS if change else 1))

    async def report_at(self, t: float) -> dict[str, Value]:
        """Advertise the state at simulated time `t`; returns the node's values (`last_lost` says
        whether the link lost them; nothing is sent while the node is down after a reset)."""
        values = self.values(t)
        if t < self.down_until:
            self.last_lost = True
            return values
        change = self.is_change(values)
        self._last_state = values
        objects = self.objects_of(values)
        self.last_lost = self.advert_lost(change)
        if self.last_lost:
            self.payload(objects)  # type: ignore[arg-type]  # sent into the void: the packet id moves on
            self.reports_lost += 1
            return values
        await self.report(objects)  # type: ignore[arg-type]
        self.reports_sent += 1
        return values

    def reset(self, t: float, down_s: float = 600.0) -> None:
        """The node reboots at simulated time `t` (a brown-out, the watchdog): silent for `down_s`,
        then it boots and sends its state as a change. device_fw's default: a node that fails to
        start deep-sleeps 10 min before it tries again (device_fw/README.md, Faults), hence 600 s.
        A plaintext node's packet id starts over; an encrypted one skips the rest of its reserved
        counter block (64 counters, device_fw/README.md, Counter), so the gateway still accepts it."""
        self.down_until = t + down_s
        self._last_state = None
        self.packet_id = 0
        self.counter += COUNTER_BLOCK


class BedFootNode(ProfileNode):
    """`in_bed` is whether the resident lies on the bed; what the node reports is the pressure
    strip's reading of it. With `drift(v_per_h, t)` the loaded strip's divider voltage sinks from
    time `t` (the strip slipping from under the mattress foot, a mattress settling, the sensor's
    creep) and the node reads it with the firmware's thresholds and hysteresis: once the voltage is
    below EMPTY_V it reports an empty bed while the resident lies in it (a false 'out of bed'),
    and a sinking empty reading never looks occupied."""

    profile_id = "bthome-bed-occupancy"

    def __init__(self, radio: VirtualRadio, mac: str, **kw: Any) -> None:
        super().__init__(radio, mac, **kw)
        self.in_bed = True
        self.drift_v_per_h = 0.0
        self.drift_since = 0.0
        self._strip_in_bed = True  # the node's reading, with hysteresis (only used while drifting)

    def drift(self, v_per_h: float, t: float = 0.0) -> None:
        """The loaded strip's voltage sinks by `v_per_h` an hour from simulated time `t`. For scale:
        a force-sensing resistor's own creep is under 5 % per decade of time under a steady load
        (Interlink FSR 400 series datasheet, 'long term drift'), which never reaches EMPTY_V; a strip
        slipping out from under the mattress foot or a settling mattress does. The rate is the
        caller's: from LOADED_V to below EMPTY_V takes 1.2 V / `v_per_h` hours."""
        self.drift_v_per_h, self.drift_since = v_per_h, t
        self._strip_in_bed = self.in_bed

    def strip_v(self, t: float) -> float:
        """The strip's divider voltage as the node's ADC sees it."""
        sag = self.drift_v_per_h * max(0.0, t - self.drift_since) / 3600.0
        return max(0.0, (LOADED_V if self.in_bed else UNLOADED_V) - sag)

    def reading(self, t: float) -> bool:
        """In bed as the node reads it: the firmware's hysteresis between EMPTY_V and OCCUPIED_V."""
        if self.drift_v_per_h == 0.0:
            return self.in_bed
        v = self.strip_v(t)
        if self._strip_in_bed and v < EMPTY_V:
            self._strip_in_bed = False
        elif not self._strip_in_bed and v > OCCUPIED_V:
            self._strip_in_bed = True
        return self._strip_in_bed

    def values(self, t: float) -> dict[str, Value]:
        volts = round(2.9 + 0.004 * self.battery + self.rng.gauss(0, 0.005), 3)
        return {"in_bed": self.reading(t), "battery": self.battery, "battery_voltage": volts}


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
        self.tampered = False

    def open_outlet(self, is_open: bool = True) -> None:
        self.outlet_open = is_open

    def leak(self, mpa: float) -> None:
        self.leak_mpa = mpa

    def knock(self, deg: float = 40.0, *, broken: bool = False) -> None:
        self.tilt, self.broken = deg, broken

    def tamper(self, opened: bool = True) -> None:
        """The node's housing opened (its tamper reed switch, device_fw hydrant build) or closed again."""
        self.tampered = opened

    def is_change(self, values: dict[str, Value]) -> bool:
        """device_fw's hydrant build also sends at once on a pressure change above 0.01 MPa."""
        last = self._last_state
        moved = last is not None and abs(float(values["pressure"]) - float(last["pressure"])) > 0.01
        return moved or super().is_change(values)

    def values(self, t: float) -> dict[str, Value]:
        pump = 0.03 if math.sin(2 * math.pi * t / 1800.0) > 0 else 0.0  # booster stage every 15 min
        p = self.base + pump - self.leak_mpa - (0.15 if self.outlet_open else 0.0)
        p = 0.01 if self.broken else max(0.0, p + self.rng.gauss(0, 0.004))
        tilt = self.tilt + abs(self.rng.gauss(0, 0.3))
        return {
            "pressure": round(p, 4),
            "outlet_open": self.outlet_open,
            "tamper": self.tampered,
            "tilt": round(tilt, 1),
            "battery": self.battery,
        }


class FireLaneNode(ProfileNode):
    """`occupied` is whether a vehicle stands in the lane. False detections: `blip(t, s)` makes the
    detector report an object from simulated time `t` for `s` seconds (a slow bicycle's metal, a
    pedestrian lingering over it: past the detector's own debounce, yet no vehicle); with
    `false_per_h` > 0 such blips come at random (seeded), each BLIP_S long."""

    profile_id = "bthome-fire-lane"

    def __init__(self, radio: VirtualRadio, mac: str, *, false_per_h: float = 0.0, **kw: Any) -> None:
        super().__init__(radio, mac, **kw)
        self.occupied = False
        self.false_per_h = false_per_h
        self.blips: list[tuple[float, float]] = []
        self._next_blip: float | None = None

    def park(self) -> None:
        self.occupied = True

    def leave(self) -> None:
        self.occupied = False

    def blip(self, t: float, seconds: float = 8.0) -> None:
        """A false detection from simulated time `t` for `seconds`."""
        self.blips.append((t, t + seconds))

    def detects(self, t: float) -> bool:
        """What the detector reports at `t`: the vehicle, or a false detection."""
        if self.false_per_h > 0.0:
            rate = self.false_per_h / 3600.0
            if self._next_blip is None:
                self._next_blip = t + self.fault_rng.expovariate(rate)
            while self._next_blip <= t:
                self.blip(self._next_blip, self.fault_rng.uniform(*BLIP_S))
                self._next_blip += self.fault_rng.expovariate(rate)
        return self.occupied or any(a <= t < b for a, b in self.blips)

    def values(self, t: float) -> dict[str, Value]:
        seen = self.detects(t)
        # An object's range: a vehicle's underbody 300-900 mm (hil/eval/firelane.py); a false
        # target is drawn from the same range, the detector cannot tell them apart.
        dist = round(self.rng.uniform(300, 900)) if seen else 4000
        return {"occupied": seen, "distance": dist, "battery": self.battery}


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
        self.tampered = False

    def release_lock(self, released: bool = True) -> None:
        self.unlocked = released

    def open_door(self) -> None:
        self.door_open = True
        self.forced = not self.unlocked  # the access controller's forced-door output

    def close_door(self) -> None:
        self.door_open = self.forced = False

    def tamper(self, opened: bool = True) -> None:
        """The node's housing opened (the profile's 0x2B tamper switch) or closed again."""
        self.tampered = opened

    def values(self, t: float) -> dict[str, Value]:
        return {
            "door_open": self.door_open,
            "unlocked": self.unlocked,
            "forced_open": self.forced,
            "tamper": self.tampered,
            "battery": self.battery,
        }
