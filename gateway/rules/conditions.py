"""Per rule kind, the condition a rule instance computes from readings and time.

A condition returns True (alarm condition holds), False (it does not) or None (unknown: keep the
alarm as it is). Each keeps constant memory per device and point, and can be snapshot and restored.
"""

from __future__ import annotations

import math
from typing import Any

from citynerve.gateway.api import Value
from citynerve.gateway.rules.config import (
    AnomalyRule,
    BooleanRule,
    MissingRule,
    RateRule,
    ThresholdRule,
)
from citynerve.gateway.rules.meter import LocalDays, MeterTrack, Step, spread
from citynerve.gateway.rules.peers import PeerSlots
from citynerve.gateway.rules.snapdata import NEVER, NO_SLOT, latest, number, opt_number, whole
from citynerve.gateway.rules.stats import Estimator, SlotMin

_TRUE_WORDS = frozenset({"1", "true", "on", "yes", "alarm", "active", "open"})
_FALSE_WORDS = frozenset({"0", "false", "off", "no", "normal", "inactive", "closed"})


def as_float(v: Value) -> float | None:
    if type(v) is float:  # the common case first: normalized readings are floats
        return v if -math.inf < v < math.inf else None
    if isinstance(v, bool):
        return float(v)
    if isinstance(v, int | float):
        try:
            f = float(v)
        except OverflowError:  # an int beyond float range (10**400): as unusable as an infinity
            return None
        return f if math.isfinite(f) else None
    return None


def as_bool(v: Value) -> bool | None:
    if isinstance(v, bool):
        return v
    if isinstance(v, int | float):
        return v != 0
    if isinstance(v, str):
        w = v.strip().lower()
        if w in _TRUE_WORDS:
            return True
        if w in _FALSE_WORDS:
            return False
    return None


class Condition:
    """Base: `on_reading` for readings of the rule's point, `on_tick` for the passing of time."""

    __slots__ = ("value",)
    time_driven = False

    def __init__(self) -> None:
        self.value: Value = None  # what the event reports: the measured quantity behind the condition

    def on_reading(self, value: Value, ts: float) -> bool | None:
        return None

    def on_tick(self, now: float) -> bool | None:
        return None

    def on_alarm(self, active: bool) -> None:
        """The alarm was raised (True) or cleared (False): conditions with hysteresis switch limits."""
        return None

    def carry(self, running: Condition) -> None:
        """A reload rebuilt the engine (`reload.rebind_rules`): take from `running`, the same rule
        instance's condition in the engine it replaces, the state a restart deliberately does not
        restore (a grace period is for a start, not for a reload). Called after `restore`."""
        return None

    def snapshot(self) -> list[Any]:
        return []

    def restore(self, data: list[Any]) -> None:
        return None

    def shift(self, delta: float) -> None:
        """The wall clock stepped by `delta` s: move stored times with it (durations stay exact)."""
        return None

    def latest_time(self) -> float:
        """The latest of the restored times `shift` moves (NEVER if none): a restore takes one later
        than the snapshot's `saved_at` for damage (rules/restored.py)."""
        return NEVER


class ThresholdCondition(Condition):
    __slots__ = ("above", "below", "hyst", "state")

    def __init__(self, rule: ThresholdRule) -> None:
        super().__init__()
        self.above, self.below, self.hyst = rule.above, rule.below, rule.hysteresis
        self.state = False

    def on_reading(self, value: Value, ts: float) -> bool | None:
        x = value if type(value) is float and -math.inf < value < math.inf else as_float(value)
        if x is None:
            return None
        self.value = x
        above, below = self.above, self.below
        if self.state:
            # Raised: back in range only past the limit by `hyst`. Not while pending: the hold time
            # must see the plain limit, or one noisy value past it would be latched by the hysteresis.
            h = self.hyst
            return (above is not None and x > above - h) or (below is not None and x < below + h)
        return (above is not None and x > above) or (below is not None and x < below)

    def on_alarm(self, active: bool) -> None:
        self.state = active

    def snapshot(self) -> list[Any]:
        return [self.state]

    def restore(self, data: list[Any]) -> None:
        self.state = bool(data[0])


class BooleanCondition(Condition):
    __slots__ = ("active",)

    def __init__(self, rule: BooleanRule) -> None:
        super().__init__()
        self.active = rule.active

    def on_reading(self, value: Value, ts: float) -> bool | None:
        b = as_bool(value)
        if b is None:
            return None
        self.value = b
        return b == self.active


class RateCondition(Condition):
    """Change against a reference value that is renewed every `window_s` (constant memory)."""

    __slots__ = ("direction", "max_change", "ref", "ref_ts", "window_s")

    def __init__(self, rule: RateRule) -> None:
        super().__init__()
        self.max_change, self.window_s, self.direction = rule.max_change, rule.window_s, rule.direction
        self.ref: float | None = None
        self.ref_ts = 0.0

    def on_reading(self, value: Value, ts: float) -> bool | None:
        x = as_float(value)
        if x is None:
            return None
        if self.ref is None or ts - self.ref_ts > 2 * self.window_s:
            self.ref, self.ref_ts = x, ts  # first value or after a gap: no rate known
            return None
        change = x - self.ref
        if ts - self.ref_ts >= self.window_s:
            self.ref, self.ref_ts = x, ts
        self.value = change
        if self.direction == "rising":
            return change > self.max_change
        if self.direction == "falling":
            return -change > self.max_change
        return abs(change) > self.max_change

    def snapshot(self) -> list[Any]:
        return [self.ref, self.ref_ts]

    def restore(self, data: list[Any]) -> None:
        self.ref, self.ref_ts = opt_number(data[0]), number(data[1])

    def shift(self, delta: float) -> None:
        self.ref_ts += delta

    def latest_time(self) -> float:
        return self.ref_ts


class MissingCondition(Condition):
    """No reading for `after_s`. The gateway's start is a grace period, also after a restart: the
    time of the last reading before the stop is not restored (a restored alarm stays raised until
    a reading clears it or the grace period ends with none). A reload is not a start: the engine it
    rebuilds takes the running one's time of the last reading (`carry`), or a dead meter's alarm
    waited after_s more at every reload, and never came while reloads kept coming."""

    __slots__ = ("after_s", "heard", "last_ts")
    time_driven = True

    def __init__(self, rule: MissingRule) -> None:
        super().__init__()
        self.after_s = rule.after_s
        self.last_ts: float | None = None  # set at the first tick: the gateway's start is a grace period
        self.heard = False  # a reading came since the start

    def on_reading(self, value: Value, ts: float) -> bool | None:
        if self.last_ts is None or ts > self.last_ts:
            self.last_ts = ts
        self.heard = True
        self.value = 0.0
        return False

    def on_tick(self, now: float) -> bool | None:
        if self.last_ts is None:
            self.last_ts = now
        age = now - self.last_ts
        self.value = age
        if age > self.after_s:
            return True
        return False if self.heard else None  # in the grace period nothing is known yet

    def carry(self, running: Condition) -> None:
        if isinstance(running, MissingCondition):  # a reload is no start: no new grace period
            self.last_ts, self.heard, self.value = running.last_ts, running.heard, running.value

    def snapshot(self) -> list[Any]:
        return [self.last_ts]

    def shift(self, delta: float) -> None:
        if self.last_ts is not None:
            self.last_ts += delta


class OfflineCondition(Condition):
    """Driven by the bus owner's device_offline / device_online events, not by readings."""

    __slots__ = ()


class AnomalyCondition(Condition):
    """Statistical score of a value, or of a meter's use per slot against a learned daily profile."""

    __slots__ = (
        "base",
        "cur",
        "cur_use",
        "days",
        "direction",
        "est",
        "gap_s",
        "hours",
        "member",
        "meter",
        "min_value",
        "peers",
        "rule",
        "warmup",
        "z",
    )

    def __init__(self, rule: AnomalyRule) -> None:
        super().__init__()
        self.rule = rule
        bins = int(86400 // rule.slot_s) if rule.profile else 1
        self.est = [Estimator(rule.alpha, rule.min_scale, rule.method == "robust") for _ in range(bins)]
        self.z, self.warmup, self.direction, self.min_value = (
            rule.z,
            rule.warmup,
            rule.direction,
            rule.min_value,
        )
        self.hours = rule.hours
        self.days = LocalDays(rule.tz)
        self.meter = MeterTrack(rule.rollover_at, rule.max_step) if rule.cumulative else None
        self.gap_s = rule.gap_s
        self.cur = NO_SLOT
        self.cur_use = 0.0
        self.peers: PeerSlots | None = None  # set by the engine for a device in a peer group
        self.member = ""
        # `base_s`: the lowest slot value over that span (a load present all along) is scored.
        self.base = SlotMin(round(rule.base_s / rule.slot_s)) if rule.base_s else None

    def join(self, peers: PeerSlots, member: str) -> None:
        """Score this device's slot use relative to its group's (gateway/rules/peers.py)."""
        self.peers, self.member = peers, member

    def _in_hours(self, ts: float) -> bool:
        if self.hours is None:
            return True
        h, (a, b) = self.days.hour(ts), self.hours
        return a <= h < b if a <= b else (h >= a or h < b)

    def _score(self, x: float, ts: float, bin_: int) -> bool | None:
        est = self.est[bin_]
        warm = est.n >= self.warmup
        z = est.score(x) if warm else 0.0
        est.learn(x)
        self.value = x
        if not warm:
            return None
        if not self._in_hours(ts):
            return False
        if self.direction == "high":
            hit = z > self.z and x >= self.min_value
        elif self.direction == "low":
            hit = -z > self.z
        else:
            hit = abs(z) > self.z and (z < 0 or x >= self.min_value)
        return hit

    def on_reading(self, value: Value, ts: float) -> bool | None:
        x = as_float(value)
        if x is None:
            return None
        if self.meter is None:
            return self._score(x, ts, 0)
        meter = self.meter
        step = meter.feed(x, ts)
        if step is None:
            return None
        s = self.rule.slot_s
        idx = int(ts // s)
        use, t0 = meter.use, meter.t0
        if step is Step.REBASE or self.cur == NO_SLOT or ts - t0 > self.gap_s:
            self.cur, self.cur_use = idx, 0.0
            return None
        result: bool | None = None
        while self.cur < idx:
            self.cur_use += spread(use, t0, ts, self.cur * s, (self.cur + 1) * s)
            result = self._close(self.cur, self.cur_use)
            self.cur += 1
            self.cur_use = 0.0
        self.cur_use += use if t0 >= idx * s else spread(use, t0, ts, idx * s, (idx + 1) * s)
        return result

    def _close(self, slot: int, use: float) -> bool | None:
        """A slot's use is known: score it, or with peers, score the slot before against the group."""
        if self.peers is not None:
            self.peers.put(slot, self.member, use)
            excess = self.peers.excess(slot - 1, self.member)
            if excess is None:
                return None
            slot, use = slot - 1, excess
        if self.base is not None:
            low = self.base.push(slot, use)
            if low is None:
                return None
            use = low
        s = self.rule.slot_s
        mid = (slot + 0.5) * s
        bin_ = int(self.days.hour(mid) * len(self.est) / 24) % len(self.est) if self.rule.profile else 0
        return self._score(use, mid, bin_)

    def snapshot(self) -> list[Any]:
        return [
            [e.snapshot() for e in self.est],
            self.meter.snapshot() if self.meter else None,
            self.cur,
            self.cur_use,
            self.base.snapshot() if self.base else None,
        ]

    def restore(self, data: list[Any]) -> None:
        if len(data[0]) == len(self.est):
            for e, d in zip(self.est, data[0], strict=True):
                e.restore(d)
        if self.meter is not None and data[1] is not None:
            self.meter.restore(data[1])
        self.cur, self.cur_use = whole(data[2]), number(data[3])
        if self.base is not None and len(data) > 4 and data[4] is not None:
            self.base.restore(data[4])

    def shift(self, delta: float) -> None:
        if self.meter is not None:
            self.meter.shift(delta)  # the next reading's use spans the real interval, not the step
        k = round(delta / self.rule.slot_s)
        if self.cur != NO_SLOT:
            self.cur += k  # the slots a step spans are neither closed nor learned (as no use)
        if self.base is not None and self.base.last != NO_SLOT:
            self.base.last += k  # the run of known slots goes on

    def latest_time(self) -> float:
        s = self.rule.slot_s
        slots = (self.cur, NO_SLOT if self.base is None else self.base.last)
        return latest(
            NEVER if self.meter is None else self.meter.latest_time(),
            *(i * s for i in slots if i != NO_SLOT),
        )
