"""What a bus owner checks in every batch before the pipeline: plausibility and the meter's clock.

`Screening.screen` marks readings outside their physical bounds SUSPECT (the rules of
`plausibility.check`, which stays the reference) and reads the meter's own clock where the batch has
one (`MeterClocks`). What both need from a point table (bounds after scale and offset; whether the
table has a clock point at all) is worked out once per table (`TableCache`: the devices of one
profile share their point configs): at 100 transactions a second looking it up sample by sample
was a measurable share of the owner's CPU (docs/benchmarks.md, "Gateway footprint").
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import tzinfo

from citynerve.gateway.api import PointConfig, Quality, Sample, TableCache
from citynerve.gateway.bus.plausibility import bounds_of
from citynerve.gateway.timecheck import (
    DLT645_DATE_POINT,
    DLT645_TIME_POINT,
    METER_CLOCK_POINTS,
    SITE_ZONE,
    MeterClocks,
)

_CLOCK_POINTS = frozenset((*METER_CLOCK_POINTS, DLT645_DATE_POINT, DLT645_TIME_POINT))
_GOOD, _SUSPECT = Quality.GOOD, Quality.SUSPECT


@dataclass(frozen=True, slots=True)
class _Table:
    bounds: dict[str, tuple[float, float, float, float]]  # point -> scale, offset, low, high
    clocked: bool  # a point that carries the meter's clock


def _table(points: Mapping[str, PointConfig]) -> _Table:
    bounds = {}
    for name, point in points.items():
        limits = bounds_of(point)
        if limits is not None:
            bounds[name] = (point.scale, point.offset, limits[0], limits[1])
    return _Table(bounds, any(name in _CLOCK_POINTS for name in points))


class Screening:
    """Plausibility and meter clocks for the batches of one bus (the owner's, one task); `tz`: the
    site's zone, which the meters' clocks keep."""

    def __init__(self, tz: tzinfo = SITE_ZONE) -> None:
        self.clocks = MeterClocks(tz)
        self._tables: TableCache[_Table] = TableCache(_table)

    def screen(
        self, device_id: str, points: Mapping[str, PointConfig], samples: tuple[Sample, ...]
    ) -> tuple[tuple[Sample, ...], list[str], float | None]:
        """The samples (those outside their bounds marked SUSPECT), the names of those points, and
        the meter clock's skew when the batch tells it."""
        table = self._tables.get(device_id, points)
        suspect: list[str] = []
        bounds = table.bounds
        if bounds:
            out: list[Sample] | None = None
            for i, sample in enumerate(samples):
                limits = bounds.get(sample.point)
                if limits is None:
                    continue
                v = sample.value
                t = type(v)
                if (t is not int and t is not float) or sample.quality is not _GOOD:
                    continue
                try:
                    x = float(v) * limits[0] + limits[1]  # type: ignore[arg-type]
                except OverflowError:  # an int beyond floats: the pipeline's BAD
                    continue
                if limits[2] <= x <= limits[3] or not math.isfinite(x):
                    continue  # NaN and infinities are the pipeline's BAD, not a plausibility question
                if out is None:
                    out = list(samples)
                out[i] = Sample(sample.point, v, _SUSPECT)
                suspect.append(sample.point)
            if out is not None:
                samples = tuple(out)
        skew = self.clocks.observe(device_id, samples) if table.clocked else None
        return samples, suspect, skew
