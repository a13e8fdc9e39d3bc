"""The pipeline's per-point state at 1,000 meters (issue 17, deliverable 2: peak RSS <= 50 MB).

Devices of one profile share one normalisation record per point (`_Norm`) and one name index;
each device keeps only its last value and what it last reported per point, as one flat list.
tracemalloc bounds what the pipeline retains per meter after every point has been read once (13
points like the TUF-2000M profile's).
"""

from __future__ import annotations

import gc
import tracemalloc
from collections.abc import Sequence

from citynerve.gateway.api import (
    DeviceConfig,
    Event,
    Location,
    PointConfig,
    Reading,
    Sample,
    SampleBatch,
)
from citynerve.gateway.pipeline import Pipeline

METERS = 500
POINTS = {
    f"p{i}": PointConfig(name=f"p{i}", unit="m3/h", scale=0.01 if i % 2 else 1.0, deadband=0.05)
    for i in range(13)
}
# measured 1,039 with one flat list of slots per meter; 1,668 with an object per point; 3,341 with
# a normalisation copy and a Reading per device and point
BYTES_PER_METER = 1_200


class Sink:
    def __init__(self) -> None:
        self.count = 0

    def put_readings(self, readings: Sequence[Reading]) -> None:
        self.count += len(readings)  # the outbox holds them, not the pipeline: count only

    def put_event(self, event: Event) -> None:
        pass


def _devices() -> dict[str, DeviceConfig]:
    return {
        f"m{n:04d}": DeviceConfig(
            id=f"m{n:04d}",
            bus="tcp-1",
            profile="modbus-water-meter",
            address=n % 247 + 1,
            location=Location(address_code="320508001"),
            points=POINTS,
        )
        for n in range(METERS)
    }


def test_per_meter_state_is_small_and_normalisation_is_shared() -> None:
    devices = _devices()
    batches = [
        SampleBatch(dev_id, 1000.0 + n, tuple(Sample(p, float(n + i)) for i, p in enumerate(POINTS)))
        for n, dev_id in enumerate(devices)
    ]
    gc.collect()
    tracemalloc.start()
    try:
        before = tracemalloc.get_traced_memory()[0]
        sink = Sink()
        pipeline = Pipeline(devices, sink)
        for b in batches:
            pipeline.submit(b)
        gc.collect()
        held = tracemalloc.get_traced_memory()[0] - before
    finally:
        tracemalloc.stop()
    assert sink.count == METERS * len(POINTS)
    per_meter = held / METERS
    assert per_meter <= BYTES_PER_METER, f"{per_meter:.0f} bytes per meter"
    # One normalisation record per profile point, not per device and point.
    assert len(pipeline._norms) == len(POINTS)
    # ... and one name index and norm table for the profile, not one per meter.
    assert len(pipeline._tables) == 1
    latest = pipeline.latest("m0007")
    assert latest["p1"] == Reading("m0007", "p1", (7 + 1) * 0.01, "m3/h", 1007.0)
    assert latest["p0"].value == 7.0


# measured 39 (its entry in the pipeline's dict: the state is its table's); 1,039 with the slots
# built up front
BYTES_PER_UNREAD_METER = 100


def test_meters_not_read_yet_share_their_fresh_slots() -> None:
    """Before its first batch a meter holds no slots of its own (the gateway's peak RSS is the
    inventory publish at the first connect, before most meters are read); its first batch gives it
    its own, and the others stay shared and untouched."""
    devices = _devices()
    gc.collect()
    tracemalloc.start()
    try:
        before = tracemalloc.get_traced_memory()[0]
        sink = Sink()
        pipeline = Pipeline(devices, sink)
        gc.collect()
        held = tracemalloc.get_traced_memory()[0] - before
    finally:
        tracemalloc.stop()
    per_meter = held / METERS
    assert per_meter <= BYTES_PER_UNREAD_METER, f"{per_meter:.0f} bytes per unread meter"
    # Never read: no stale readings, nothing in latest, and the shared slots stay fresh.
    pipeline.mark_offline("m0001", 2000.0)
    assert sink.count == 0 and pipeline.latest("m0001") == {}
    pipeline.submit(SampleBatch("m0001", 1000.0, (Sample("p0", 5.0), Sample("p1", 300.0))))
    assert sink.count == 2
    assert pipeline.latest("m0001") == {
        "p0": Reading("m0001", "p0", 5.0, "m3/h", 1000.0),
        "p1": Reading("m0001", "p1", 3.0, "m3/h", 1000.0),
    }
    assert pipeline.latest("m0002") == {}
    pipeline.mark_offline("m0002", 2000.0)
    assert sink.count == 2
    # The second meter's first batch is reported in full too (its slots were not the first's).
    pipeline.submit(SampleBatch("m0002", 1000.0, (Sample("p0", 5.0), Sample("p1", 300.0))))
    assert sink.count == 4
    # A reload keeps the read meter's state and leaves the unread ones shared.
    pipeline.update_devices(devices)
    pipeline.submit(SampleBatch("m0001", 1001.0, (Sample("p0", 5.0),)))
    assert sink.count == 4  # unchanged within the deadband: suppressed, so the state was kept
    pipeline.mark_offline("m0001", 2000.0)
    assert sink.count == 6  # both points read before the reload go STALE
    assert pipeline.latest("m0003") == {}
