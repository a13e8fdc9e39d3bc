"""Quiet hours (recurring local windows) and households marked away: rules that must not raise now."""

from __future__ import annotations

import zoneinfo
from datetime import datetime

from citynerve.gateway.rules.config import Schedule

_DAYS = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")


class QuietHours:
    """Is a schedule's window open at a time? Cached per minute: rules ask on every reading."""

    __slots__ = ("_minute", "_open", "days", "end", "start", "tz")

    def __init__(self, schedule: Schedule) -> None:
        self.tz = zoneinfo.ZoneInfo(schedule.tz)
        h, m = schedule.start.split(":")
        self.start = int(h) * 60 + int(m)
        h, m = schedule.end.split(":")
        self.end = int(h) * 60 + int(m)
        self.days = frozenset(_DAYS.index(d) for d in schedule.days)
        self._minute = -1
        self._open = False

    def open_at(self, ts: float) -> bool:
        minute = int(ts // 60)
        if minute != self._minute:
            self._minute = minute
            d = datetime.fromtimestamp(ts, self.tz)
            m = d.hour * 60 + d.minute
            if self.start <= self.end:
                self._open = d.weekday() in self.days and self.start <= m < self.end
            elif m >= self.start:  # spans midnight: the evening part belongs to the listed day
                self._open = d.weekday() in self.days
            else:
                self._open = m < self.end and (d.weekday() - 1) % 7 in self.days
        return self._open
