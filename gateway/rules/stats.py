"""Streaming estimators with constant memory: EWMA mean/deviation and a robust median/MAD."""

from __future__ import annotations

import math
from typing import Any

_MAD_TO_SIGMA = 1.2533  # mean absolute deviation of a normal distribution times this is its sigma


class Estimator:
    """Location and scale of a stream, learned one value at a time.

    `score(x)` is the signed distance in scale units; `learn(x)` updates, clamping outliers so one
    anomaly (a heater left on all night) does not teach the detector that it is normal. Early values
    use a 1/n step so the warm-up behaves like a plain average.
    """

    __slots__ = ("alpha", "loc", "min_scale", "n", "robust", "spread")

    def __init__(self, alpha: float, min_scale: float, robust: bool) -> None:
        self.alpha = alpha
        self.min_scale = min_scale
        self.robust = robust
        self.n = 0
        self.loc = 0.0
        self.spread = 0.0  # robust: mean absolute deviation; ewma: variance

    def scale(self) -> float:
        s = _MAD_TO_SIGMA * self.spread if self.robust else math.sqrt(self.spread)
        return max(s, self.min_scale, 1e-12)

    def score(self, x: float) -> float:
        return (x - self.loc) / self.scale()

    def learn(self, x: float) -> None:
        if not math.isfinite(x):
            return
        self.n += 1
        a = max(self.alpha, 1.0 / self.n)
        if self.n == 1:
            self.loc = x
            return
        s = self.scale()
        r = x - self.loc
        if self.n > 3:
            r = max(-3.0 * s, min(3.0 * s, r))  # winsorize: outliers move the estimate a bounded step
        if self.robust:
            self.loc += a * r
            self.spread += a * (abs(r) - self.spread)
        else:
            self.loc += a * r
            self.spread = (1 - a) * (self.spread + a * r * r)

    def snapshot(self) -> list[Any]:
        return [self.n, self.loc, self.spread]

    def restore(self, data: list[Any]) -> None:
        self.n, self.loc, self.spread = int(data[0]), float(data[1]), float(data[2])
