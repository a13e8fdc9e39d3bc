"""Points the gateway derives from a device's own readings and an installation figure (issue 18).

A manhole cover's node measures the distance from the cover down to the water (`water_level`, mm).
Whether the sewer is surcharged - running full, the water above the pipe's crown - depends on how
deep the crown lies below that cover, a figure of each well measured at installation (the device
option `crown_mm`). With it the pipeline adds to every batch carrying `water_level` a reading

    water_over_crown = crown_mm - water_level   (mm; > 0: the water is above the crown)

with the source reading's timestamp and quality, so a rule can judge every well against its own
depth instead of one distance for all. A device without the option gets no derived point.

A street lamp controller reports its relay (`lamp_on`) and the lamp current (`current`, A); its own
open-circuit bit compares the two, but not every controller has one or sets it right. Every device
with both points gets a reading with each `current`

    lamp_dark = lamp_on and current < no-load limit   (the lamp is switched on and draws nothing)

against the last `lamp_on` seen: a Modbus controller's coil and registers come in separate batches
of one poll, so at a switching moment the two may be one poll apart (the street-lamp pack's hold
covers that). The limit is `NO_LOAD_SHARE` of the device option `rated_current_a`, or
`DEFAULT_NO_LOAD_A` without it, times the dimming level when the batch carries `dimming`: a lamp
dimmed to 30 % draws about 30 % of its current, not nothing. Both figures are local defaults the
installer confirms (no standard gives a no-load current); docs/rules.md.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from citynerve.gateway.api import DeviceConfig, PointConfig, Quality, Sample, SampleBatch

WATER_OVER_CROWN = "water_over_crown"
LAMP_DARK = "lamp_dark"

NO_LOAD_SHARE = 0.1
"""A lit lamp draws its rated current (an HPS lamp more while it warms up); a failed lamp or driver
draws the controller's measuring noise and a driver's input filter, a few mA. A tenth of the rated
current lies far from both: local default."""
DEFAULT_NO_LOAD_A = 0.02
"""The no-load limit without `rated_current_a`: a tenth of 0.2 A, a 40 W LED lamp at 230 V, the
smallest common street lamp (local default; set the option for the lamp's own figure)."""

MAX_INT = 2**64
"""An int reading of this magnitude or more is BAD: no register holds more than 64 bits (an unsigned
64-bit counter stays below it). The pipeline's bound, here because `derive` reads samples first."""


@dataclass(frozen=True, slots=True)
class Derivation:
    """One derived point of one device: `point` = `offset` - `source` (a depth against a distance).

    `scale` and `source_offset` are the source point's: samples are raw, the depth is in its units."""

    point: str
    source: str
    offset: float
    unit: str
    scale: float = 1.0
    source_offset: float = 0.0


@dataclass(frozen=True, slots=True)
class LampDark:
    """`point` = relay on and `source` (current) below `limit_a` (times the dimming level, when read).

    The scales and offsets turn the raw samples of `current` and `dimming` into A and %."""

    point: str
    source: str
    limit_a: float
    scale: float = 1.0
    source_offset: float = 0.0
    relay: str = "lamp_on"
    dimming: str = "dimming"
    dimming_scale: float = 1.0
    dimming_offset: float = 0.0


AnyDerivation = Derivation | LampDark


def no_load_limit_a(device: DeviceConfig) -> float:
    """The lamp current below which a switched-on lamp is dark (A, at full power)."""
    if device.rated_current_a is None:
        return DEFAULT_NO_LOAD_A
    return NO_LOAD_SHARE * device.rated_current_a


def derivations(device: DeviceConfig) -> tuple[AnyDerivation, ...]:
    """What the device's points and options derive (empty for most devices)."""
    out: list[AnyDerivation] = []
    if device.crown_mm is not None and "water_level" in device.points:
        src = device.points["water_level"]
        out.append(
            Derivation(
                WATER_OVER_CROWN, "water_level", device.crown_mm, src.unit or "mm", src.scale, src.offset
            )
        )
    if "lamp_on" in device.points and "current" in device.points:
        cur, dim = device.points["current"], device.points.get("dimming")
        out.append(
            LampDark(
                LAMP_DARK,
                "current",
                no_load_limit_a(device),
                cur.scale,
                cur.offset,
                dimming_scale=dim.scale if dim else 1.0,
                dimming_offset=dim.offset if dim else 0.0,
            )
        )
    return tuple(out)


def derived_points(device: DeviceConfig) -> dict[str, PointConfig]:
    """The derived points' configs: a depth with its source's unit and deadband; a flag reported on
    change, at least as often as the relay's state."""
    out: dict[str, PointConfig] = {}
    for d in derivations(device):
        src = device.points[d.source]
        if isinstance(d, LampDark):
            out[d.point] = PointConfig(
                name=d.point,
                description=f"switched on and drawing under {d.limit_a:g} A (no-load limit), "
                "derived by the gateway",
                max_interval_s=device.points[d.relay].max_interval_s,
            )
            continue
        out[d.point] = PointConfig(
            name=d.point,
            description=f"{d.offset:g} {d.unit} (installation) - {d.source}, derived by the gateway",
            unit=d.unit,
            deadband=src.deadband,
            max_interval_s=src.max_interval_s,
        )
    return out


def point_names(device: DeviceConfig) -> set[str]:
    """The device's points with the derived ones: what a rule may read."""
    return set(device.points) | {d.point for d in derivations(device)}


def derive(
    batch: SampleBatch, table: tuple[AnyDerivation, ...], seen: dict[str, Sample] | None = None
) -> SampleBatch:
    """The batch with its derived samples appended (the batch itself when none applies).

    `seen`: the device's last samples of points a derivation reads from another batch (the relay
    of a lamp), kept by the caller between batches; without it only this batch counts."""
    extra: list[Sample] = []
    for d in table:
        if isinstance(d, LampDark):
            extra += _lamp_dark(batch, d, {} if seen is None else seen)
            continue
        for s in batch.samples:
            if s.point != d.source:
                continue
            x = _finite(s.value) if s.quality is Quality.GOOD else None
            if x is not None and math.isfinite(level := x * d.scale + d.source_offset):
                extra.append(Sample(d.point, round(d.offset - level, 6), s.quality))
            else:  # unknown source (or NaN, infinite, beyond 64 bits): unknown derived value
                extra.append(Sample(d.point, None, _unknown(s.quality)))
    if not extra:
        return batch
    return SampleBatch(batch.device_id, batch.ts, (*batch.samples, *extra))


def _lamp_dark(batch: SampleBatch, d: LampDark, seen: dict[str, Sample]) -> list[Sample]:
    """A `lamp_dark` sample for each `current` of the batch (none when it carries no current)."""
    out: list[Sample] = []
    dimming = None
    for s in batch.samples:
        if s.point == d.relay:
            seen[d.relay] = s
        elif s.point == d.dimming and s.quality is Quality.GOOD and (x := _finite(s.value)) is not None:
            level = x * d.dimming_scale + d.dimming_offset
            dimming = level if math.isfinite(level) else None  # NaN or infinite: not known
    for s in batch.samples:
        if s.point != d.source:
            continue
        relay = seen.get(d.relay)
        if relay is None or relay.quality is not Quality.GOOD or type(relay.value) not in (bool, int):
            out.append(Sample(d.point, None, _unknown(relay.quality if relay else Quality.BAD)))
        elif not relay.value:  # a coil's bool, or a register's 0 / 1
            out.append(Sample(d.point, False, Quality.GOOD))  # switched off: not dark while on
        elif (
            s.quality is Quality.GOOD
            and (x := _finite(s.value)) is not None
            and math.isfinite(amps := x * d.scale + d.source_offset)
        ):
            share = 1.0 if dimming is None else min(1.0, max(0.0, dimming / 100.0))
            out.append(Sample(d.point, amps < d.limit_a * share, Quality.GOOD))
        else:  # switched on, current unknown (or NaN, infinite): whether it is lit is unknown
            out.append(Sample(d.point, None, _unknown(s.quality)))
    return out


def _finite(v: object) -> float | None:
    """A number sample's value as a finite float; None for anything else (not a number, NaN, an
    infinity, an int of `MAX_INT` or more: the pipeline stores those BAD)."""
    if type(v) is float:
        return v if math.isfinite(v) else None
    if type(v) is int and -MAX_INT < v < MAX_INT:
        return float(v)
    return None


def _unknown(q: Quality) -> Quality:
    return Quality.BAD if q is Quality.GOOD else q
