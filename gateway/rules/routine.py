"""Time-of-day expectations on a two-state point: up by a time of day, back within a time at night.

Built for the bed-foot sensor of an elderly person living alone (in bed / out of bed), usable for
any boolean point with a daily routine. Constant memory: the current state, when it began, and the
end of the last long absence from the `active` state.
"""

from __future__ import annotations

from datetime import datetime, time
from typing import Any
from zoneinfo import ZoneInfo

from citynerve.gateway.api import Value
from citynerve.gateway.rules.conditions import Condition, as_bool
from citynerve.gateway.rules.config import RoutineRule
from citynerve.gateway.rules.meter import LocalDays
from citynerve.gateway.rules.snapdata import NEVER, latest, number


def _hhmm(text: str) -> time:
    h, m = text.split(":")
    return time(int(h), int(m))


class RoutineCondition(Condition):
    """See RoutineRule. Time driven: `up_by` becomes true at a time of day, with no reading."""

    __slots__ = (
        "by_t",
        "changed",
        "cur",
        "days",
        "end_t",
        "last_long_out",
        "last_ts",
        "rule",
        "since_t",
        "start_t",
        "tz",
    )
    time_driven = True

    def __init__(self, rule: RoutineRule) -> None:
        super().__init__()
        self.rule = rule
        self.tz = ZoneInfo(rule.tz)
        self.days = LocalDays(rule.tz)
        self.since_t, self.by_t = _hhmm(rule.since), _hhmm(rule.by)
        self.start_t, self.end_t = _hhmm(rule.start), _hhmm(rule.end)
        self.cur: bool | None = None  # the point is in its `active` state
        self.changed = 0.0  # when `cur` began
        self.last_ts = 0.0  # last reading of the point
        self.last_long_out = NEVER  # end of the last absence of at least up_s (now, while it lasts)

    def on_reading(self, value: Value, ts: float) -> bool | None:
        b = as_bool(value)
        if b is None:
            return None
        now_active = b == self.rule.active
        if self.cur is None:
            self.last_long_out = ts  # what came before the first reading is unknown: no alarm from it
        if now_active != self.cur:
            # An absence is as long as it was seen: from its first reading to the last one still
            # showing it. A lost "back" advert repaired by the next heartbeat does not stretch a
            # 4-minute visit to the bathroom into getting up.
            if self.cur is False and self.last_ts - self.changed >= self.rule.up_s:
                self.last_long_out = ts  # a long absence just ended
            self.cur, self.changed = now_active, ts
        self.last_ts = max(self.last_ts, ts)
        return self._judge(ts)

    def on_tick(self, now: float) -> bool | None:
        return self._judge(now)

    def _local(self, t: time, now: float) -> float:
        """When the local clock reaches t on now's local day (LocalDays: a time the clock skips is
        the first instant after the gap, a repeated one its first pass)."""
        return self.days.at(now, t.hour * 60 + t.minute)

    def _judge(self, now: float) -> bool | None:
        if self.cur is None or now - self.last_ts > self.rule.stale_s:
            return None
        self.value = now - self.changed  # seconds in the current state
        if self.rule.mode == "up_by":
            by = self._local(self.by_t, now)
            if now < by:
                return False
            since = self._local(self.since_t, now)
            # An absence still going on counts as up only once it is up_s long (then cur is False).
            return self.cur and self.last_long_out < since
        if self.cur:
            return False
        away = now - self.changed
        return away > self.rule.away_s and self._at_night(self.changed)

    def _at_night(self, ts: float) -> bool:
        t = datetime.fromtimestamp(ts, self.tz).time()
        if self.start_t <= self.end_t:
            return self.start_t <= t < self.end_t
        return t >= self.start_t or t < self.end_t

    def snapshot(self) -> list[Any]:
        return [self.cur, self.changed, self.last_ts, self.last_long_out]

    def restore(self, data: list[Any]) -> None:
        self.cur = None if data[0] is None else bool(data[0])
        self.changed, self.last_ts, self.last_long_out = number(data[1]), number(data[2]), number(data[3])

    def shift(self, delta: float) -> None:
        """The wall clock stepped: a step is no time in or out of bed (as HouseholdCondition.shift)."""
        self.changed += delta
        self.last_ts += delta
        if self.last_long_out != NEVER:
            self.last_long_out += delta

    def latest_time(self) -> float:
        return latest(self.changed, self.last_ts, self.last_long_out)
