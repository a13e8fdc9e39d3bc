"""Plausibility of readings against physical bounds: values no device can mean are marked suspect.

A swapped word order or a register map for another model gives numbers like 8.08e+37 V: the device
answered, the frame was fine, but the value is impossible. Such readings get quality `suspect`
(rules ignore them, the platform sees the flag) and are counted for the verdict, which then names
the register map or the word order.

Bounds come from the point (`bounds = [min, max]` in the profile) or, by default, from the point's
unit (shared table below). They apply to the engineering value (after scale and offset), the same
value the pipeline reports. Points without a unit in the table and without bounds are not checked.
"""

from __future__ import annotations

import math
from collections.abc import Mapping

from citynerve.gateway.api import PointConfig, Quality, Sample

# Wide on purpose: they catch what no installation can produce, not what is merely unusual.
UNIT_BOUNDS: Mapping[str, tuple[float, float]] = {
    "V": (-1.0e3, 1.0e6),
    "kV": (-1.0, 1.0e3),
    "A": (-1.0e5, 1.0e5),
    "mA": (-1.0e5, 1.0e5),
    "W": (-1.0e9, 1.0e9),
    "kW": (-1.0e6, 1.0e6),
    "kVA": (-1.0e6, 1.0e6),
    "kvar": (-1.0e6, 1.0e6),
    "kWh": (-1.0e11, 1.0e11),
    "kvarh": (-1.0e11, 1.0e11),
    "MWh": (-1.0e8, 1.0e8),
    "Hz": (0.0, 100.0),
    "m3": (-1.0e10, 1.0e10),
    "m3/h": (-1.0e6, 1.0e6),
    "L": (-1.0e12, 1.0e12),
    "L/h": (-1.0e9, 1.0e9),
    "GJ": (-1.0e9, 1.0e9),
    "°C": (-80.0, 400.0),
    "degC": (-80.0, 400.0),
    "%": (-1.0, 101.0),
    "%RH": (-1.0, 101.0),
    "kPa": (-200.0, 1.0e5),
    "MPa": (-0.2, 100.0),
    "bar": (-2.0, 1.0e3),
    "Pa": (-2.0e5, 1.0e8),
    "ppm": (0.0, 1.0e6),
    "lx": (0.0, 2.0e5),
    "dBm": (-150.0, 30.0),
    "deg": (-360.0, 360.0),
    "mm": (-1.0e7, 1.0e7),
    "m": (-1.0e5, 1.0e5),
}


def bounds_of(point: PointConfig) -> tuple[float, float] | None:
    if point.bounds is not None:
        return point.bounds
    return UNIT_BOUNDS.get(point.unit)


def check(
    points: Mapping[str, PointConfig], samples: tuple[Sample, ...]
) -> tuple[tuple[Sample, ...], list[str]]:
    """The samples, those outside their point's bounds marked SUSPECT, and the names of those points."""
    out: list[Sample] | None = None
    suspect: list[str] = []
    for i, sample in enumerate(samples):
        v = sample.value
        if type(v) not in (int, float) or sample.quality is not Quality.GOOD:
            continue
        point = points.get(sample.point)
        if point is None:
            continue
        limits = bounds_of(point)
        if limits is None:
            continue
        try:
            x = float(v) * point.scale + point.offset  # type: ignore[arg-type]
        except OverflowError:  # an int beyond floats: the pipeline's BAD
            continue
        if math.isfinite(x) and limits[0] <= x <= limits[1]:
            continue
        if not math.isfinite(x):
            continue  # NaN and infinities are the pipeline's BAD, not a plausibility question
        if out is None:
            out = list(samples)
        out[i] = Sample(sample.point, sample.value, Quality.SUSPECT)
        suspect.append(sample.point)
    return (samples if out is None else tuple(out)), suspect


GENERIC_BOUNDS = (1.0e-3, 1.0e7)  # |x| of a believable reading when the point's unit is unknown


def plausible_orders(
    orders: Mapping[str, Mapping[str, object]], bounds: tuple[float, float] | None = None
) -> dict[str, list[str]]:
    """For each decoding type, the layouts (ABCD, CDAB, ...) whose value is believable: inside
    `bounds` (a point's physical bounds) or, without them, |x| <= 1e7; and zero or |x| >= 1e-3."""
    out: dict[str, list[str]] = {}
    for layout, values in orders.items():
        for type_, value in values.items():
            if type(value) not in (int, float):
                continue
            try:
                x = float(value)  # type: ignore[arg-type]
            except OverflowError:
                x = math.inf  # an int beyond floats: no believable value
            # a wrong order of a float gives huge or vanishingly small numbers: both are out
            sized = x == 0 or abs(x) >= GENERIC_BOUNDS[0]
            if not math.isfinite(x):
                ok = False
            elif bounds is not None:
                ok = sized and bounds[0] <= x <= bounds[1]
            else:
                ok = sized and abs(x) <= GENERIC_BOUNDS[1]
            if ok:
                out.setdefault(type_, []).append(layout)
    return out
