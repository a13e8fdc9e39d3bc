"""A month of elderly people living alone, seen by a bed-foot sensor (issue 18).

Each resident keeps their own day: a bedtime and a wake time with day-to-day scatter, later at
weekends and on holidays, one or two short visits to the bathroom most nights, sitting on the bed's
edge now and then, an afternoon nap on some days, and on a few nights insomnia (up for half an hour
to two hours, then back to bed). Some go to their family for the National Day holiday (the operator
marks half of them away). The node debounces the strip for 20 s, sends every change and a heartbeat
every 600 s; 5 % of adverts are lost (a change is sent in a burst, lost only if three adverts in a
row are; the heartbeat repairs the state). One node goes silent.

Ground truth is the situation, not a rule: a resident who falls at night during a bathroom visit
and lies until found (the episode starts when they left the bed); a resident who is unwell and does
not get up (the episode starts one hour after their own usual wake time). Neither is derived from
the pack's 09:00 / 40 min: a late riser or a long sleepless night costs the pack a false alarm.
"""

from __future__ import annotations

import math
import random

from citynerve.gateway.api import Sample, SampleBatch
from citynerve.hil.eval.model import START, Episode, Scenario, device, is_holiday, is_weekend

DAY = 86400
HOUR = 3600
HEARTBEAT_S = 600
LOSS = 0.05
REPEATS = 3  # a change goes out in a burst (device_fw/bedfoot: 3 s at 50 ms); counted as 3 adverts
DEBOUNCE_S = 20


def poisson(rng: random.Random, lam: float) -> int:
    """A Poisson draw (Knuth): how many times something happens in one night / hour."""
    n, p, limit = 0, 1.0, math.exp(-lam)
    while True:
        p *= rng.random()
        if p < limit:
            return n
        n += 1


class _Resident:
    def __init__(self, rng: random.Random, days: int) -> None:
        self.rng = rng
        self.wake_h = rng.uniform(6.0, 7.5)  # older adults rise early (and go to bed early)
        self.bed_h = rng.uniform(20.8, 22.8)
        self.late_h = rng.uniform(0.0, 0.5)  # weekends and holidays
        self.naps = rng.uniform(0.0, 0.5)
        self.visiting = rng.random() < 0.3  # at the family's over the National Day holiday
        self.fall_day = rng.randrange(2, days - 1) if rng.random() < 0.25 else -1
        unwell = rng.randrange(2, days - 1) if rng.random() < 0.25 else -1
        self.unwell_day = unwell if unwell != self.fall_day else -1


def build(seed: int = 18, residents: int = 30, days: int = 30) -> Scenario:
    """The bed-foot scenario for the elderly-bed pack."""
    rng = random.Random(seed)
    devices = [device(f"bed-{i:02d}", "bthome-bed-occupancy", {"in_bed": ""}, i) for i in range(residents)]
    batches: list[SampleBatch] = []
    episodes: list[Episode] = []
    away: list[tuple[str, float, float]] = []
    end = START + days * DAY
    for i, dev in enumerate(devices):
        r = _Resident(rng, days)
        outs, eps = _life(r, dev.id, days)
        episodes += eps
        if r.visiting and i % 2 == 0:  # the operator marks half of the visitors away
            away.append((dev.id, START + 17 * DAY + 9 * HOUR, START + 21 * DAY + 20 * HOUR))
        dead: tuple[float, float] | None = None
        if i == 5:
            t0 = START + rng.uniform(3, days - 3) * DAY
            dead = (t0, t0 + rng.uniform(2, 5) * HOUR)
            episodes.append(Episode(dev.id, ("node_offline",), dead[0], dead[1], "node silent"))
        batches.extend(_adverts(rng, dev.id, outs, START, end, dead))
    batches.sort(key=lambda b: b.ts)
    episodes.sort(key=lambda e: e.start)
    return Scenario("elderly-bed", devices, batches, episodes, before_s=60, after_s=HEARTBEAT_S, away=away)


def _life(r: _Resident, dev_id: str, days: int) -> tuple[list[tuple[float, float]], list[Episode]]:
    """Out-of-bed intervals over the days (in bed the rest of the time), and the incidents."""
    rng = r.rng
    outs: list[tuple[float, float]] = []
    eps: list[Episode] = []
    up = START - DAY + r.wake_h * HOUR
    for d in range(days + 1):
        t_day = START + d * DAY
        late = r.late_h * HOUR if is_weekend(t_day) or is_holiday(t_day) else 0.0
        wake = t_day + r.wake_h * HOUR + late + rng.gauss(0, 0.4) * HOUR
        bedtime = t_day - DAY + r.bed_h * HOUR + rng.gauss(0, 0.4) * HOUR
        if r.visiting and 17 <= d <= 21:
            continue  # away from the morning of day 17 to the evening of day 21: the bed stays empty
        outs.append((up, bedtime))
        night: list[tuple[float, float]] = []
        for _ in range(poisson(rng, 1.3)):  # to the bathroom: about 4 min
            t = rng.uniform(bedtime + 0.5 * HOUR, wake - 0.3 * HOUR)
            night.append((t, t + math.exp(rng.gauss(math.log(240), 0.5))))
        if rng.random() < 0.015:  # a sleepless spell
            t = rng.uniform(bedtime + 1 * HOUR, wake - 2.5 * HOUR)
            night.append((t, t + rng.uniform(0.5, 2.0) * HOUR))
        for _ in range(poisson(rng, 0.4)):  # sitting on the bed's edge
            t = rng.uniform(bedtime, wake)
            night.append((t, t + rng.uniform(10, 60)))
        if d == r.fall_day:
            t = rng.uniform(bedtime + 1.5 * HOUR, wake - 1.5 * HOUR)
            found = wake + rng.uniform(1.0, 3.0) * HOUR  # a carer or a neighbour comes
            night = [(a, b) for a, b in night if b < t] + [(t, found)]
            eps.append(Episode(dev_id, ("not_back_in_bed",), t, found, "fell at night, lay until found"))
            wake = found
        elif d == r.unwell_day:
            got_up = t_day + rng.uniform(11.0, 15.0) * HOUR
            start = t_day + (r.wake_h + 1.0) * HOUR
            eps.append(Episode(dev_id, ("not_up",), start, got_up, "unwell, stayed in bed"))
            wake = got_up
        night.sort()
        outs.extend((a, min(b, wake)) for a, b in night if a < wake)
        up = wake
        if rng.random() < r.naps:
            t = t_day + rng.uniform(12.5, 14.0) * HOUR
            if t > wake:
                outs.append((up, t))
                up = t + rng.uniform(0.5, 1.5) * HOUR
    return sorted(outs), eps


def _adverts(
    rng: random.Random,
    dev_id: str,
    outs: list[tuple[float, float]],
    start: float,
    end: float,
    dead: tuple[float, float] | None,
) -> list[SampleBatch]:
    """The node: a change is sent once it has held for the debounce, the state every 600 s."""
    changes: list[tuple[float, bool]] = []
    for a, b in outs:
        if b - a < DEBOUNCE_S:  # shorter than the debounce: the node never sends it
            continue
        changes += [(a + DEBOUNCE_S, False), (b + DEBOUNCE_S, True)]
    changes.sort()
    return node_adverts(rng, dev_id, "in_bed", changes, start, end, dead, state=True)


def node_adverts(
    rng: random.Random,
    dev_id: str,
    point: str,
    changes: list[tuple[float, bool]],
    start: float,
    end: float,
    dead: tuple[float, float] | None,
    *,
    state: bool,
) -> list[SampleBatch]:
    """A BTHome node's adverts: each change (sorted) as a burst of REPEATS, the state every
    HEARTBEAT_S; each advert lost with probability LOSS, nothing sent while `dead`."""
    out: list[SampleBatch] = []
    k = 0
    next_beat = start + rng.uniform(0, HEARTBEAT_S)
    while True:
        t_change = changes[k][0] if k < len(changes) else math.inf
        if t_change <= next_beat:
            t, state = t_change, changes[k][1]
            k += 1
            repeats = REPEATS
        else:
            t = next_beat
            next_beat += HEARTBEAT_S
            repeats = 1
        if t >= end:
            return out
        if t < start or (dead is not None and dead[0] <= t < dead[1]):
            continue
        if all(rng.random() < LOSS for _ in range(repeats)):
            continue
        out.append(SampleBatch(dev_id, round(t, 3), (Sample(point, state),)))
