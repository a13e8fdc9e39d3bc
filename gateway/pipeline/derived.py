"""Points the gateway derives from a device's own readings and an installation measurement (issue 18).

A manhole cover's node measures the distance from the cover down to the water (`water_level`, mm).
Whether the sewer is surcharged - running full, the water above the pipe's crown - depends on how
deep the crown lies below that cover, a figure of each well measured at installation (the device
option `crown_mm`). With it the pipeline adds to every batch carrying `water_level` a reading

    water_over_crown = crown_mm - water_level   (mm; > 0: the water is above the crown)

with the source reading's timestamp and quality, so a rule can judge every well against its own
depth instead of one distance for all. A device without the option gets no derived point.
"""

from __future__ import annotations

from dataclasses import dataclass

from citynerve.gateway.api import DeviceConfig, PointConfig, Quality, Sample, SampleBatch

WATER_OVER_CROWN = "water_over_crown"


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


def derivations(device: DeviceConfig) -> tuple[Derivation, ...]:
    """What the device's options derive (empty for most devices)."""
    if device.crown_mm is None or "water_level" not in device.points:
        return ()
    src = device.points["water_level"]
    return (
        Derivation(WATER_OVER_CROWN, "water_level", device.crown_mm, src.unit or "mm", src.scale, src.offset),
    )


def derived_points(device: DeviceConfig) -> dict[str, PointConfig]:
    """The derived points' configs: same unit and deadband as their source."""
    out: dict[str, PointConfig] = {}
    for d in derivations(device):
        src = device.points[d.source]
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


def derive(batch: SampleBatch, table: tuple[Derivation, ...]) -> SampleBatch:
    """The batch with its derived samples appended (the batch itself when none applies)."""
    extra: list[Sample] = []
    for d in table:
        for s in batch.samples:
            if s.point != d.source:
                continue
            v = s.value
            if (type(v) is float or type(v) is int) and s.quality is Quality.GOOD:
                level = v * d.scale + d.source_offset
                extra.append(Sample(d.point, round(d.offset - level, 6), s.quality))
            else:  # unknown source: unknown derived value
                extra.append(Sample(d.point, None, Quality.BAD if s.quality is Quality.GOOD else s.quality))
    if not extra:
        return batch
    return SampleBatch(batch.device_id, batch.ts, (*batch.samples, *extra))
