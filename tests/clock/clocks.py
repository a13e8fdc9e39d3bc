"""A clock for tests: the real `Clock` interface, time moved by hand, the wall clock stepped at will."""

from __future__ import annotations

from citynerve.gateway.api import Clock


class SteppedClock(Clock):
    """Manual time: `advance(s)` lets s seconds pass (both clocks); `step(s)` sets the wall clock
    s seconds forward (negative: back) the way NTP or an operator would, the monotonic clock untouched."""

    def __init__(self, wall: float = 1_790_000_000.0, mono: float = 5_000.0) -> None:
        self._mono = mono
        self._offset = wall - mono

    def monotonic(self) -> float:
        return self._mono

    def wall(self) -> float:
        return self._mono + self._offset

    def advance(self, seconds: float) -> None:
        self._mono += seconds

    def step(self, seconds: float) -> None:
        self._offset += seconds
