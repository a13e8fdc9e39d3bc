"""The gateway's clocks: monotonic for durations, wall for stamps, in one injectable object.

Every hold time, timeout, liveness check, rate limit and replay window is measured on `monotonic()`;
`wall()` only stamps records. Tests inject a subclass (a clock whose wall time steps) instead of
patching the `time` module.
"""

from __future__ import annotations

import time
from pathlib import Path

STEP_TOLERANCE_S = 1.0
"""A change of wall - monotonic larger than this between two looks is a step of the wall clock (NTP
slews at most 0.5 ms/s, so slewing never looks like a step between looks a few seconds apart)."""


class Clock:
    """The system clocks. Subclass to inject other times in tests; never patch `time`."""

    def monotonic(self) -> float:
        """Seconds on a clock that never steps (CLOCK_MONOTONIC): for every duration."""
        return time.monotonic()

    def wall(self) -> float:
        """Seconds since the epoch, UTC (CLOCK_REALTIME): only for stamping records."""
        return time.time()


SYSTEM_CLOCK = Clock()


class SteadyWall:
    """Wall-aligned time that advances only with the monotonic clock.

    For logic that needs both durations and the calendar (rules: hold times and quiet hours): `now()`
    is the wall time, except that a step of the wall clock is not seen as time passing. The step is
    returned once (seconds, signed) by the `now()` call that notices it, so that the caller can move
    its own stored times by it and keep every duration it measures exact.
    """

    def __init__(self, clock: Clock = SYSTEM_CLOCK, tolerance_s: float = STEP_TOLERANCE_S) -> None:
        self.clock = clock
        self.tolerance_s = tolerance_s
        self._offset = clock.wall() - clock.monotonic()
        self.steps = 0

    def now(self) -> tuple[float, float]:
        """(wall-aligned time, the wall clock's step since the last call or 0.0)."""
        mono = self.clock.monotonic()
        offset = self.clock.wall() - mono
        step = offset - self._offset
        if abs(step) <= self.tolerance_s:
            return mono + self._offset, 0.0
        self._offset = offset
        self.steps += 1
        return mono + offset, step


def boot_id() -> str:
    """This boot's id (the monotonic clock restarts at every boot), or "" where the kernel has none."""
    try:
        return Path("/proc/sys/kernel/random/boot_id").read_text().strip()
    except OSError:
        return ""
