"""Two weeks of community entrance doors with a door contact and the lock's feedback (issue 18).

A pedestrian gate with an electric lock and a door closer. Residents pass all day (peaks before
work and in the evening, a few at night): a card or the exit button releases the lock for 5 s, the
door opens for a few seconds and the closer shuts it; passages close together keep it open longer.
Couriers and take-away riders hold the door while they wheel a trolley through (median 40 s,
log-normal). Situations the operations centre must hear about, the ground truth:
- the door left open: propped with a wedge or a bin by a resident airing the hall or a removal
  crew (10 min to 4 h, until someone takes the wedge away), or a door closer that failed and leaves
  the door ajar after a passage until the property manager has it repaired (2-24 h);
- the door forced: opened with the lock locked (a kick, a pried latch, a pulled magnet), for
  5-60 s; the access controller's 'door forced open' output follows the door contact.

The node sends every change in three adverts carrying one BTHome packet id (the driver keeps one;
a change is lost only if all three are, 5 % each) and its state every 600 s in one advert.
Labels come from what happened: an episode starts when the door was left open or forced, and no
threshold of the entrance pack (180 s) is used to draw them.
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
REPEATS = 3  # adverts per change, one packet id
RELEASE_S = 5.0  # the lock stays released this long after a card or the exit button
POINTS = {"door_open": "", "unlocked": "", "forced_open": "", "tamper": "", "battery": "%"}


def _passages_per_hour(hour: int) -> float:
    if hour in (7, 8, 17, 18, 19):
        return 25.0
    return 10.0 if 9 <= hour < 22 else 1.0


def build(seed: int = 3100, doors: int = 8, days: int = 14) -> Scenario:
    """The entrance scenario for the entrance pack."""
    rng = random.Random(seed)
    devices = [device(f"gate-{i:02d}", "bthome-entrance-door", POINTS, i, "0705") for i in range(doors)]
    batches: list[SampleBatch] = []
    episodes: list[Episode] = []
    for i, dev in enumerate(devices):
        opens: list[tuple[float, float]] = []  # door open intervals
        releases: list[tuple[float, float]] = []  # lock released
        forced: list[tuple[float, float]] = []
        for h in range(days * 24):
            t_h = START + h * HOUR
            for _ in range(poisson(rng, _passages_per_hour(h % 24))):
                t = t_h + rng.uniform(0, HOUR)
                releases.append((t - 1.0, t - 1.0 + RELEASE_S))
                opens.append((t, t + math.exp(rng.gauss(math.log(6), 0.4))))
            if 9 <= h % 24 < 21:
                for _ in range(poisson(rng, 1.5)):  # a courier with a trolley
                    t = t_h + rng.uniform(0, HOUR)
                    releases.append((t - 1.0, t - 1.0 + RELEASE_S))
                    opens.append((t, t + math.exp(rng.gauss(math.log(40), 0.5))))
        left_open: list[tuple[float, float]] = []
        if i % 4 == 1:  # the closer fails after a passage
            t = START + rng.uniform(1, days - 1) * DAY
            b = t + rng.uniform(2, 24) * HOUR
            releases.append((t - 1.0, t - 1.0 + RELEASE_S))
            opens.append((t, b))
            left_open.append((t, b))
            episodes.append(Episode(dev.id, ("door_held_open",), t, b, "door closer failed, door ajar"))
        for _ in range(poisson(rng, 0.25 * days)):  # propped open
            t = START + rng.uniform(0.2, days - 0.2) * DAY
            b = t + math.exp(rng.uniform(math.log(600), math.log(4 * HOUR)))
            if any(a <= b and t <= z for a, z in left_open):
                continue  # the door already stands open: nobody props it
            left_open.append((t, b))
            releases.append((t - 1.0, t - 1.0 + RELEASE_S))
            opens.append((t, b))
            episodes.append(Episode(dev.id, ("door_held_open",), t, b, "propped open"))
        for _ in range(poisson(rng, 0.1 * days)):  # forced: the lock stays locked
            t = START + rng.uniform(0.2, days - 0.2) * DAY
            b = t + rng.uniform(5, 60)
            opens.append((t, b))
            forced.append((t, b))
            episodes.append(Episode(dev.id, ("door_forced",), t, b, "door forced open"))
        batches += _adverts(rng, dev.id, _merge(opens), _merge(releases), forced, days)
    batches.sort(key=lambda b: b.ts)
    episodes.sort(key=lambda e: e.start)
    return Scenario("entrance", devices, batches, episodes, before_s=5, after_s=HEARTBEAT_S)


def _merge(spans: list[tuple[float, float]]) -> list[tuple[float, float]]:
    """One door: overlapping openings are one opening."""
    out: list[tuple[float, float]] = []
    for a, b in sorted(spans):
        if out and a <= out[-1][1]:
            out[-1] = (out[-1][0], max(out[-1][1], b))
        else:
            out.append((a, b))
    return out


def _adverts(
    rng: random.Random,
    dev_id: str,
    opens: list[tuple[float, float]],
    releases: list[tuple[float, float]],
    forced: list[tuple[float, float]],
    days: int,
) -> list[SampleBatch]:
    changes: list[tuple[float, str, bool]] = []
    for point, spans in (("door_open", opens), ("unlocked", releases), ("forced_open", forced)):
        for a, b in spans:
            changes += [(a, point, True), (b, point, False)]
    changes.sort()
    state = {"door_open": False, "unlocked": False, "forced_open": False}
    battery = rng.uniform(60, 100)
    out: list[SampleBatch] = []
    end = START + days * DAY
    next_beat = START + rng.uniform(0, HEARTBEAT_S)
    k = 0
    while True:
        t_change = changes[k][0] if k < len(changes) else math.inf
        if t_change <= next_beat:
            t, point, value = changes[k]
            state[point] = value
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
        samples = (
            *(Sample(p, v) for p, v in state.items()),
            Sample("tamper", False),
            Sample("battery", round(battery - 0.02 * (t - START) / DAY)),
        )
        out.append(SampleBatch(dev_id, round(t, 3), samples))
