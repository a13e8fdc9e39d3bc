"""Records that flow through the gateway: samples from drivers, readings and events to the outbox."""

from __future__ import annotations

import enum
import math
import struct
import time
import uuid
from dataclasses import dataclass, field
from typing import Any

Value = bool | int | float | str | None
"""A point's value: numbers, booleans, strings (e.g. a meter serial), or None when unknown."""


_F32 = struct.Struct("<f")
_FLOAT32_MAX = 3.4028234663852886e38


def shortest_float32(x: float) -> float:
    """A float32 decoded from a device, as the float with the fewest decimal digits that reads
    back as the same float32: 230.1 stays 230.1 instead of its double widening 230.10000610351562.
    Drivers call it where they decode a float32 (the origin is known only there); NaN and
    infinities pass through. At most 9 significant digits always round-trip a float32.

    Found by bisection over the number of digits (3-4 tries instead of up to 9): for a float32
    that is not zero, a power of two or the largest float32, the reals that read back as it form an
    interval symmetric around it (double rounding included: its neighbours in the double grid are
    evenly spaced and it sits on an even one), and rounding to more digits lands no farther from
    it, so "reads back with d digits" holds for every d from the shortest on. The other values
    take `_shortest_float32_scan`, the digit-by-digit reference (tests compare the two).
    """
    if not math.isfinite(x):
        return x
    bits = _F32.pack(x)
    if _F32.unpack(bits)[0] != x or not x or abs(x) == _FLOAT32_MAX or abs(math.frexp(x)[0]) == 0.5:
        return _shortest_float32_scan(x, bits)
    pack = _F32.pack
    lo, hi = 1, 9  # 9 digits always read back
    found = None
    while lo < hi:
        digits = (lo + hi) // 2
        candidate = float(f"{x:.{digits}g}")
        try:
            same = pack(candidate) == bits
        except OverflowError:  # rounded past the largest float32
            same = False
        if same:
            hi, found = digits, candidate
        else:
            lo = digits + 1
    return found if found is not None else float(f"{x:.9g}")


def _shortest_float32_scan(x: float, bits: bytes) -> float:
    """The fewest digits that read back as the float32 `bits`, trying 1, 2, ... 9 in turn."""
    for digits in range(1, 10):
        candidate = float(f"{x:.{digits}g}")
        try:
            if _F32.pack(candidate) == bits:
                return candidate
        except OverflowError:  # rounded past the largest float32
            continue
    return x  # unreachable for a float32: 9 digits always round-trip


def utc_now() -> float:
    """Seconds since the epoch, UTC. All timestamps in the gateway are this."""
    return time.time()


class Quality(enum.StrEnum):
    GOOD = "good"
    BAD = "bad"  # the device answered with something unusable, or the read failed
    STALE = "stale"  # last known value, the device is offline
    SUSPECT = "suspect"  # outside the point's physical bounds: kept out of rules, flagged upstream


class EventState(enum.StrEnum):
    RAISED = "raised"
    CLEARED = "cleared"


class Severity(enum.IntEnum):
    """Event severity; higher is more urgent. Fire and smoke are CRITICAL."""

    INFO = 0
    WARNING = 1
    MINOR = 2
    MAJOR = 3
    CRITICAL = 4


@dataclass(frozen=True, slots=True)
class Sample:
    """One point's raw value as a driver decoded it (before scale, offset and unit)."""

    point: str
    value: Value
    quality: Quality = Quality.GOOD


@dataclass(frozen=True, slots=True)
class SampleBatch:
    """What one transaction with one device produced."""

    device_id: str
    ts: float
    samples: tuple[Sample, ...]


@dataclass(frozen=True, slots=True)
class Reading:
    """A normalized point value, ready for the outbox."""

    device_id: str
    point: str
    value: Value
    unit: str
    ts: float
    quality: Quality = Quality.GOOD


@dataclass(frozen=True, slots=True)
class Event:
    """Something happened that the platform must hear about: raised once, cleared once.

    `kind` is from the field (smoke, manhole_tilt, water_no_use, device_offline, ...); `attrs` carries
    the device's location and component code when the event leaves the gateway.

    An alarm is named by (device_id, kind, rule, subject): a RAISED event makes it active until the
    CLEARED event with the same name (citynerve.gateway.alarms). `subject` says what inside the device it is
    about when one rule raises several at once (a fire panel's loop-device); a CLEARED event with
    subject "*" clears every subject of its kind. A `one_shot` event is a report (an action's
    outcome, a panel reset) that is never active; with subject "*" it clears every alarm its rule
    raised on the device (a panel reset).
    """

    device_id: str
    kind: str
    state: EventState
    severity: Severity
    ts: float
    rule: str = ""
    value: Value = None
    message: str = ""
    attrs: dict[str, Any] = field(default_factory=dict)
    id: str = field(default_factory=lambda: uuid.uuid4().hex)
    subject: str = ""
    one_shot: bool = False
