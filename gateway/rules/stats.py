"""Streaming estimators with constant memory: EWMA mean/deviation and a robust median/MAD."""

from __future__ import annotations

import math
from typing import Any

from citynerve.gateway.rules.snapdata import NO_SLOT, number, whole

_MAD_TO_SIGMA = 1.2533  # mean absolute deviation of a normal distribution times this is its sigma


class Estimator:
    """Location and scale of a stream, learned one value at a time.

    `score(x)` is the signed distance in scale units; `learn(x)` updates, clamping outliers so one
    anomaly (a heater left on all night) does not teach the detector that it is normal. Early values
    use a 1/n step so the warm-up behaves like a plain average.
    """

    __slots__ = ("_floor", "_s", "alpha", "loc", "min_scale", "n", "robust", "spread")

    def __init__(self, alpha: float, min_scale: float, robust: bool) -> None:
        self.alpha = alpha
        self.min_scale = min_scale
        self.robust = robust
        self.n = 0
        self.loc = 0.0
        self.spread = 0.0  # robust: mean absolute deviation; ewma: variance
        self._floor = max(min_scale, 1e-12)
        self._s = self._floor  # the scale, kept up to date by learn (score runs on every reading)

    def scale(self) -> float:
        return self._s

    def score(self, x: float) -> float:
        return (x - self.loc) / self._s

    def learn(self, x: float) -> None:
        if not -math.inf < x < math.inf:
            return
        n = self.n = self.n + 1
        if n == 1:
            self.loc = x
            return
        a = self.alpha
        if 1.0 / n > a:
            a = 1.0 / n
        r = x - self.loc
        if n > 3:  # winsorize: an outlier moves the estimate a bounded step
            lim = 3.0 * self._s
            if r > lim:
                r = lim
            elif r < -lim:
                r = -lim
        self.loc += a * r
        if self.robust:
            sp = self.spread = self.spread + a * ((r if r >= 0 else -r) - self.spread)
            s = _MAD_TO_SIGMA * sp
        else:
            sp = self.spread = (1 - a) * (self.spread + a * r * r)
            s = math.sqrt(sp)
        self._s = s if s > self._floor else self._floor

    def snapshot(self) -> list[Any]:
        return [self.n, self.loc, self.spread]

    def restore(self, data: list[Any]) -> None:
        self.n, self.loc, self.spread = whole(data[0]), number(data[1]), number(data[2])
        s = _MAD_TO_SIGMA * self.spread if self.robust else math.sqrt(max(self.spread, 0.0))
        self._s = max(s, self._floor)


class SlotMin:
    """The lowest of the last `slots` consecutive slot values: a load present in each of them.

    Something left on persists for hours; a kettle, a water heater's cycle or a late meal fill one
    or two half-hours. `push` returns the minimum once `slots` consecutive slots are known, else
    None (unknown). A slot that is not the next one (a gap) starts the run again.
    """

    __slots__ = ("last", "slots", "values")

    def __init__(self, slots: int) -> None:
        self.slots = max(1, slots)
        self.last = NO_SLOT
        self.values: list[float] = []

    def push(self, slot: int, value: float) -> float | None:
        if self.last != NO_SLOT and slot != self.last + 1:
            self.values = []
        self.last = slot
        self.values.append(value)
        if len(self.values) > self.slots:
            del self.values[0]
        return min(self.values) if len(self.values) == self.slots else None

    def snapshot(self) -> list[Any]:
        return [self.last, list(self.values)]

    def restore(self, data: list[Any]) -> None:
        self.last = whole(data[0])
        self.values = [number(v) for v in data[1]][-self.slots :]
