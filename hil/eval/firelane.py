"""Two weeks of fire-lane detectors in residential compounds (issue 18).

Traffic through the lane passes over the detector (its own 5 s debounce hides most of it; a slow
vehicle now and then stands 5-15 s). Vehicles stop with the driver present: couriers, take-away
riders and taxis by day (median 100 s, log-normal, a long tail), the refuse truck every morning for
4-7 min. Vehicles are parked - the driver walks away - mostly in the evening when residents come
home and find no space, for 20 min to a night. Carts and bins left in the lane stand for hours.
The detector sends every change in a burst of adverts with one packet id (lost only if three in a
row are: 5 % each) and a heartbeat every 600 s in one (5 % lost); now and then
metal under a passing bicycle flickers it for a few seconds.

Ground truth: a lane is blocked while a parked (unattended) vehicle or goods stand in it - from
the moment it was left, since a fire engine arriving then finds it. A driver who stops and stays is
no episode, however long; the pack cannot tell them apart, so a long stop costs a false alarm.
"""

from __future__ import annotations

import math
import random

from citynerve.gateway.api import Sample, SampleBatch
from citynerve.hil.eval.bed import poisson
from citynerve.hil.eval.model import START, Episode, Scenario, device

DAY = 86400
HOUR = 3600
HEARTBEAT_S = 600
LOSS = 0.05
REPEATS = 3  # a change goes out in a burst of adverts (the firmware family: 3 s at 50 ms); counted as 3
POINTS = {"occupied": "", "distance": "mm", "battery": "%"}


def _stops_per_hour(hour: int) -> float:
    if 8 <= hour < 21:
        return 1.0 if hour in (11, 12, 17, 18, 19) else 0.6
    return 0.08


def _parks_per_hour(hour: int) -> float:
    return 0.12 if 19 <= hour < 23 else (0.03 if 7 <= hour < 19 else 0.01)


def build(seed: int = 50016, lanes: int = 12, days: int = 14) -> Scenario:
    """The fire-lane scenario for the fire-lane pack."""
    rng = random.Random(seed)
    devices = [device(f"lane-{i:02d}", "bthome-fire-lane", POINTS, i, "0702") for i in range(lanes)]
    batches: list[SampleBatch] = []
    episodes: list[Episode] = []
    for dev in devices:
        spans: list[tuple[float, float, bool]] = []  # start, end, unattended
        for h in range(days * 24):
            t_h = START + h * HOUR
            hour = h % 24
            for _ in range(poisson(rng, _stops_per_hour(hour))):
                t = t_h + rng.uniform(0, HOUR)
                spans.append((t, t + math.exp(rng.gauss(math.log(100), 0.6)), False))
            for _ in range(poisson(rng, _parks_per_hour(hour))):
                t = t_h + rng.uniform(0, HOUR)
                dur = math.exp(rng.uniform(math.log(20 * 60), math.log(10 * HOUR)))
                spans.append((t, t + dur, True))
            if hour == 6:  # the refuse truck
                t = t_h + rng.uniform(0.3, 0.9) * HOUR
                spans.append((t, t + rng.uniform(240, 420), False))
            for _ in range(poisson(rng, 0.5 if 7 <= hour < 22 else 0.05)):  # slow vehicles, flickers
                t = t_h + rng.uniform(0, HOUR)
                spans.append((t, t + rng.uniform(5, 15), False))
        if rng.random() < 0.3:  # goods left in the lane
            t = START + rng.uniform(1, days - 1) * DAY
            spans.append((t, t + rng.uniform(2, 8) * HOUR, True))
        spans = _merge_fifo(sorted(spans))
        for a, b, unattended in spans:
            if unattended:
                episodes.append(Episode(dev.id, ("fire_lane_blocked",), a, b, "left in the lane"))
        batches += _adverts(rng, dev.id, spans, days)
    batches.sort(key=lambda b: b.ts)
    episodes.sort(key=lambda e: e.start)
    # A parked car found by the fire engine after the driver left: allow the detector's debounce
    # before the start, and a heartbeat after the end.
    return Scenario("fire-lane", devices, batches, episodes, before_s=10, after_s=HEARTBEAT_S)


def _merge_fifo(spans: list[tuple[float, float, bool]]) -> list[tuple[float, float, bool]]:
    """One detector sees one object at a time: an overlapping arrival waits its turn (drops out)."""
    out: list[tuple[float, float, bool]] = []
    for a, b, u in spans:
        if out and a < out[-1][1]:
            if u and not out[-1][2] and b > out[-1][1] + 60:  # parked behind a stopped van
                out.append((out[-1][1], b, True))
            continue
        out.append((a, b, u))
    return [(a, b, u) for a, b, u in out if b > a]


def _adverts(
    rng: random.Random, dev_id: str, spans: list[tuple[float, float, bool]], days: int
) -> list[SampleBatch]:
    changes: list[tuple[float, bool]] = []
    for a, b, _ in spans:
        if b - a >= 5.0:  # the detector's own debounce
            changes += [(a + 5.0, True), (b + 2.0, False)]
    changes.sort()
    out: list[SampleBatch] = []
    end = START + days * DAY
    state, k = False, 0
    next_beat = START + rng.uniform(0, HEARTBEAT_S)
    battery = rng.uniform(60, 100)
    while True:
        t_change = changes[k][0] if k < len(changes) else math.inf
        if t_change <= next_beat:
            t, state = t_change, changes[k][1]
            k += 1
            lost = all(rng.random() < LOSS for _ in range(REPEATS))
        else:
            t = next_beat
            next_beat += HEARTBEAT_S
            lost = rng.random() < LOSS
        if t >= end:
            return out
        if lost:
            continue
        dist = rng.uniform(300, 900) if state else 4000
        samples = (
            Sample("occupied", state),
            Sample("distance", round(dist)),
            Sample("battery", round(battery - 0.02 * (t - START) / DAY)),
        )
        out.append(SampleBatch(dev_id, round(t, 3), samples))
