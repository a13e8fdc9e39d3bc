"""Three weeks of street litter bins with ultrasonic fill sensors (issue 18).

Bins of different sizes (600-1100 mm deep: the pack assumes one distance for all) fill bag by bag
with the street's day (lunch and evening peaks, busier at weekends), the rubbish settles, and the
collection round empties them every morning - or every second morning on quiet streets, and now and
then a round is missed. The truck lifts and tips each bin for 20-40 s. The range finder adds noise,
and a bag top folded near the lid gives a short false echo now and then. The lid warms in the
afternoon sun (up to about 60 degC on hot days). The sensor measures every 30 min and at once on
movement or a temperature rise; 5 % of adverts are lost.

Ground truth: a bin is full from when a bag no longer fits (90 % of its depth) until it is emptied;
a fire from the moment a cigarette end sets the rubbish smouldering until it is put out; knocked over
from when a vehicle or a vandal tips it until it is stood up. An alarm up to 12 h before a bin is
full counts as on time (the round is planned the evening before); earlier is a false alarm.
"""

from __future__ import annotations

import math
import random

from citynerve.gateway.api import Sample, SampleBatch
from citynerve.gateway.rules import PackRef, RulesConfig, Selector
from citynerve.hil.eval.bed import poisson
from citynerve.hil.eval.model import START, Episode, Scenario, device, is_weekend

DAY = 86400
HOUR = 3600
READ_S = 1800
LOSS = 0.05
POINTS = {"fill_distance": "mm", "tilt": "°", "temperature": "°C", "battery": "%"}
FULL = 0.90  # a bag no longer fits
BIN_DEPTH_MM = (650.0, 900.0, 1075.0)  # three bin models on the street (tags bin-650, ...)


def _bags_per_hour(hour: float, weekend: bool) -> float:
    lunch = math.exp(-(((hour - 12.5) / 1.5) ** 2))
    evening = 0.8 * math.exp(-(((hour - 18.5) / 2.0) ** 2))
    day = 0.25 if 7 <= hour < 22 else 0.02
    return (day + lunch + evening) * (1.3 if weekend else 1.0)


def build(seed: int = 4716, bins: int = 20, days: int = 21) -> Scenario:
    """The litter-bin scenario for the litter-bin pack."""
    rng = random.Random(seed)
    devices = [
        device(f"bin-{i:02d}", "bthome-litter-bin", POINTS, i, "0703").model_copy(
            update={"tags": (f"bin-{BIN_DEPTH_MM[i % 3]:.0f}",)}
        )
        for i in range(bins)
    ]
    batches: list[SampleBatch] = []
    episodes: list[Episode] = []
    end = START + days * DAY
    for i, dev in enumerate(devices):
        model = i % 3
        depth = BIN_DEPTH_MM[model]
        bag = rng.uniform(0.03, 0.06) * 900 / depth  # share of the bin one bag takes
        busy = rng.uniform(0.3, 1.6)
        every = 1 if busy > 0.9 else 2
        hot_days = {d for d in range(days) if rng.random() < 0.3}
        fire = START + rng.uniform(1, days - 1) * DAY if i % 5 == 2 else None
        knock = START + rng.uniform(1, days - 1) * DAY if i % 5 == 4 else None
        knock_end = knock + rng.uniform(1, 10) * HOUR if knock is not None else None
        fire_end = fire + rng.uniform(0.5, 2) * HOUR if fire is not None else None
        if fire is not None and fire_end is not None:
            episodes.append(
                Episode(dev.id, ("bin_fire", "bin_heating"), fire, fire_end, "rubbish smouldering")
            )
        if knock is not None and knock_end is not None:
            episodes.append(Episode(dev.id, ("bin_knocked",), knock, knock_end, "bin knocked over"))
        fill, full_since = rng.uniform(0.0, 0.3), None
        tipping: tuple[float, float] | None = None
        t = START
        next_read = START + rng.uniform(0, READ_S)
        last_temp, last_tilt = 20.0, 0.0
        step = 20.0
        collected = -1
        while t < end:
            hour = ((t - START) / HOUR) % 24
            for _ in range(poisson(rng, _bags_per_hour(hour, is_weekend(t)) * busy * step / HOUR)):
                fill = min(1.05, fill + bag * rng.uniform(0.5, 1.5))
            fill = max(0.0, fill - 0.002 * fill * step / HOUR)  # settling
            d = int((t - START) // DAY)
            emptied = False
            if hour >= 6.0 and d > collected and d % every == 0:
                collected = d
                emptied = rng.random() >= 0.05  # now and then the round misses a bin
            if emptied:
                tipping = (t, t + rng.uniform(20, 40))
                fill = rng.uniform(0.0, 0.04)
            if fill >= FULL and full_since is None:
                full_since = t
            if fill < 0.5 and full_since is not None:  # emptied (settling does not make room)
                episodes.append(Episode(dev.id, ("bin_full",), full_since, t, "a bag no longer fits"))
                full_since = None
            sun = 0.0
            if 12 <= hour < 17:
                sun = (22.0 if d in hot_days else 8.0) * math.sin(math.pi * (hour - 12) / 5)
            temp = 18 + 8 * math.sin(2 * math.pi * (hour - 9) / 24) + sun + rng.gauss(0, 0.3)
            if fire is not None and fire_end is not None and fire <= t < fire_end:
                temp += min(250.0, 4.0 * (t - fire) / 60)
            tilt = abs(rng.gauss(0, 1.0))
            if knock is not None and knock_end is not None and knock <= t < knock_end:
                tilt = rng.uniform(70, 90)
            if tipping is not None and tipping[0] <= t < tipping[1]:
                tilt = rng.uniform(100, 130)
            moved = abs(tilt - last_tilt) > 20 or temp - last_temp > 5
            if t >= next_read or moved:
                if t >= next_read:
                    next_read += READ_S
                last_temp, last_tilt = temp, tilt
                if rng.random() >= LOSS:
                    dist = depth * (1 - min(fill, 1.0)) + rng.gauss(0, 10)
                    if rng.random() < 0.03:
                        dist = rng.uniform(80, 200)  # a false echo off a folded bag
                    samples = (
                        Sample("fill_distance", round(max(30.0, dist))),
                        Sample("tilt", round(tilt, 1)),
                        Sample("temperature", round(temp, 2)),
                        Sample("battery", round(90 - 0.05 * (t - START) / DAY)),
                    )
                    batches.append(SampleBatch(dev.id, round(t, 3), samples))
            t += step
        if full_since is not None:
            episodes.append(Episode(dev.id, ("bin_full",), full_since, end, "a bag no longer fits"))
    batches.sort(key=lambda b: b.ts)
    episodes.sort(key=lambda e: e.start)
    # The installer sets full_mm per bin model (10 % of its depth: no room for another bag): the pack once,
    # its `full` rule once per model (a pack is used once per gateway).
    per_model = []
    for depth_mm in BIN_DEPTH_MM:
        ref = PackRef(
            name="litter-bin",
            select=Selector(tags=(f"bin-{depth_mm:.0f}",)),
            params={"full_mm": round(0.10 * depth_mm)},
        )
        (full,) = [r for r in ref.rules if r.id == "litter-bin.full"]
        per_model.append(full.model_copy(update={"id": f"litter-bin.full-{depth_mm:.0f}"}))
    rules = RulesConfig(packs=(PackRef(name="litter-bin", disable=("full",)),), rules=tuple(per_model))
    return Scenario("litter-bin", devices, batches, episodes, before_s=12 * HOUR, after_s=READ_S, rules=rules)
