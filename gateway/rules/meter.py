"""Cumulative meters: turn totals into use, handling rollover, replacement and gaps; local days."""

from __future__ import annotations

import enum
import math
import zoneinfo
from datetime import date, datetime, time, timedelta
from typing import Any

from citynerve.gateway.rules.snapdata import NEVER, number, opt_number


class Step(enum.Enum):
    USE = "use"  # a plausible difference between two totals
    ROLLOVER = "rollover"  # the register wrapped at rollover_at
    REBASE = "rebase"  # first reading, meter replaced or reset: nothing counted


class MeterTrack:
    """Differences a meter's totals. Constant memory: the last total and its time.

    A drop is a rollover if the previous total was in the top tenth of the register (`rollover_at`),
    otherwise the meter was replaced or reset; a rise above `max_step` is a replacement with a
    meter that started higher. Either way the new total becomes the baseline and no use is counted:
    a replaced meter must not look like a burst pipe nor like a household that stopped using water.
    """

    __slots__ = ("last_total", "last_ts", "max_step", "rollover_at", "t0", "use")

    def __init__(self, rollover_at: float | None, max_step: float | None) -> None:
        self.rollover_at = rollover_at
        self.max_step = max_step
        self.last_total: float | None = None
        self.last_ts = 0.0
        self.use = 0.0  # of the last step: use over [t0, last_ts]
        self.t0 = 0.0

    @property
    def gap_s(self) -> float:
        """Time the last step spans."""
        return self.last_ts - self.t0

    def feed(self, total: float, ts: float) -> Step | None:
        """What the reading means; `use` and `t0` describe the step. None: out of order, not finite.

        (Attributes, not a returned record: this runs for every meter reading of every rule.)
        """
        if not -math.inf < total < math.inf:
            return None
        prev = self.last_total
        prev_ts = self.last_ts
        if prev is None:
            self.last_total = total
            self.last_ts = self.t0 = ts
            self.use = 0.0
            return Step.REBASE
        if ts <= prev_ts:
            return None
        self.last_total = total
        self.last_ts = ts
        use = total - prev
        kind = Step.USE
        if use < 0:
            if self.rollover_at is not None and prev >= 0.9 * self.rollover_at:
                use += self.rollover_at
                kind = Step.ROLLOVER
            else:
                use = -1.0  # replaced or reset
        if use < 0 or (self.max_step is not None and use > self.max_step):
            self.use, self.t0 = 0.0, ts
            return Step.REBASE
        self.use = use
        self.t0 = prev_ts
        return kind

    def shift(self, delta: float) -> None:
        """The wall clock stepped by `delta` s: the last reading's time moves with it."""
        self.last_ts += delta
        self.t0 += delta

    def latest_time(self) -> float:
        """The last reading's time (NEVER before the first)."""
        return NEVER if self.last_total is None else self.last_ts

    def snapshot(self) -> list[Any]:
        return [self.last_total, self.last_ts]

    def restore(self, data: list[Any]) -> None:
        self.last_total = opt_number(data[0])
        self.last_ts = number(data[1])


class LocalDays:
    """Local days and times of day in a time zone, read off the local wall clock, cached so a
    reading costs a comparison, not a tz lookup (on a day the clock changes, `seconds` costs one).

    On a day the clock changes (DST) the local clock is what counts, not a day scaled to 24 h: on
    the 23 h day the skipped hour reads never (01:59:59 is followed by 03:00), on the 25 h day the
    repeated hour reads twice. A time of day taken as a moment (`at`, `last`: a deadline, the
    start of a night) is the first instant the clock reads it or later: one the clock skips is the
    first instant after the gap (02:30 on the 23 h day in Europe: 03:00), a repeated one is its
    first pass (02:30 summer time).
    """

    __slots__ = ("_at", "date", "end", "off0", "plain", "start", "tz")

    def __init__(self, tz: str) -> None:
        self.tz = zoneinfo.ZoneInfo(tz)
        self.start = 0.0
        self.end = 0.0
        self.date = date.min
        self.off0 = 0.0  # UTC offset (s) at the day's start
        self.plain = True  # a day of 24 h on one UTC offset
        self._at: dict[tuple[int, int], float] = {}

    def locate(self, ts: float) -> tuple[float, float]:
        """(start, end) of the local day containing ts."""
        if not self.start <= ts < self.end:
            d = datetime.fromtimestamp(ts, self.tz)
            midnight = d.replace(hour=0, minute=0, second=0, microsecond=0)
            nxt = (midnight + timedelta(days=1, hours=2)).replace(hour=0)  # DST-safe next midnight
            self.start, self.end = midnight.timestamp(), nxt.timestamp()
            self.date = midnight.date()
            off = midnight.utcoffset()
            self.off0 = off.total_seconds() if off is not None else 0.0
            self.plain = self.end - self.start == 86400.0 and nxt.utcoffset() == off
        return self.start, self.end

    def seconds(self, ts: float) -> float:
        """Seconds after local midnight the local clock reads at ts."""
        start, _ = self.locate(ts)
        if self.plain:
            return ts - start
        off = datetime.fromtimestamp(ts, self.tz).utcoffset()
        return ts - start + (off.total_seconds() if off is not None else 0.0) - self.off0

    def hour(self, ts: float) -> float:
        """Local hour of day the clock reads, as a float, 0 <= h < 24."""
        return self.seconds(ts) / 3600.0

    def at(self, ts: float, minute: int) -> float:
        """The first instant of ts's local day at which the clock reads `minute` minutes after
        midnight or later (see the class for the skipped and the repeated hour)."""
        self.locate(ts)
        return self._instant(self.date, minute)

    def last(self, ts: float, minute: int) -> float:
        """The latest such instant at or before ts: today's, else yesterday's."""
        t = self.at(ts, minute)
        return t if ts >= t else self._instant(self.date - timedelta(days=1), minute)

    def _instant(self, day: date, minute: int) -> float:
        key = (day.toordinal(), minute)
        t = self._at.get(key)
        if t is None:
            if len(self._at) >= 64:  # a few times of day, today's and yesterday's
                self._at.clear()
            t = self._at[key] = self._first_at(day, minute)
        return t

    def _first_at(self, day: date, minute: int) -> float:
        h, m = divmod(minute, 60)
        wall = datetime.combine(day, time(h, m), self.tz)  # fold 0: a repeated time's first pass
        t = wall.timestamp()
        if datetime.fromtimestamp(t, self.tz).replace(tzinfo=None) == wall.replace(tzinfo=None):
            return t
        # The clock skips it: fold 0 reads it on the offset before the gap (after the gap), fold 1 on
        # the one after it (before the gap). The first instant on the new offset lies between.
        lo = datetime.combine(day, time(h, m, fold=1), self.tz).timestamp()
        hi, off = t, datetime.fromtimestamp(t, self.tz).utcoffset()
        while hi - lo > 1.0:
            mid = (lo + hi) // 2
            if datetime.fromtimestamp(mid, self.tz).utcoffset() == off:
                hi = mid
            else:
                lo = mid
        return hi


def spread(use: float, t0: float, t1: float, a: float, b: float) -> float:
    """The part of `use` (spread evenly over [t0, t1]) that falls in [a, b)."""
    if t1 <= t0:
        return use if a <= t1 < b else 0.0
    lo, hi = max(t0, a), min(t1, b)
    return use * (hi - lo) / (t1 - t0) if hi > lo else 0.0
