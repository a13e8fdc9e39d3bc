"""One resident, two sensors: the bed-foot sensor and the flat's water meter driven by the same
simulated life, for the household "check on this person" alarm (issue 18).

Per resident, minute by minute for a month: their own bed and wake times (later at weekends and on
holidays, scatter of 0.4 h), night-time visits to the bathroom (~4 min, a flush most times),
sitting on the bed's edge, sleepless spells (1.5 % of nights, 30 min - 2 h, as in hil/eval/bed.py; a
visit to the kitchen or the bathroom on 60 % of them), a morning routine (toilet, wash, breakfast),
meals, dishes, showers, laundry, toilet and small uses by day, outings (the market most mornings,
the park some afternoons, now and then a whole day out), naps, visitors on holidays, a National
Day visit to the family (the community is told for half of them), hospital stays (marked away
1-8 h after admission). The bed node (hil/eval/bed.py: 20 s debounce, a change sent in a burst,
5 % of adverts lost, 600 s heartbeat) and the meter (hil/eval/water.py: reads every 15 min,
1 L resolution, failed reads, concentrator outages, a rollover, a replacement) report it.

Incidents, labelled from when they happen until someone comes, never from a rule's threshold:
a fall at night on the way to or from the bathroom (before or after the flush), found when a
carer calls in the morning; a fall by day, found after 2-60 h (log-normal, median 10 h; then a
hospital stay); unwell and staying in bed (from one hour after the usual wake time; a trip to the
toilet now and then); a basin tap left running at bedtime (3-9 L/min, GB 25501-2019 taps give
6-9 L/min fully open) until the resident next gets up. A tap left running while the resident is
out is the water pack's concern (hil/eval/water_situations.py), not a person to check on.
"""

from __future__ import annotations

import math
import random

from citynerve.gateway.rules import RulesConfig
from citynerve.gateway.rules.household_config import HouseholdConfig
from citynerve.hil.eval.bed import _adverts, poisson
from citynerve.hil.eval.model import START, Episode, Scenario, device, is_holiday, is_weekend
from citynerve.hil.eval.water import _reads

DAY_MIN = 1440
KIND = ("check_on_person",)


def _hhmm(hours: float) -> str:
    m = round(hours * 60) % DAY_MIN
    return f"{m // 60:02d}:{m % 60:02d}"


class _Flat:
    """Minute arrays of one flat: in bed (1) or not, and litres used in each minute."""

    def __init__(self, n: int) -> None:
        self.n = n
        self.bed = bytearray(n)
        self.flow = [0.0] * n
        # What the door and the PIR would see (hil/eval/household_nodes.py), in minutes; recorded
        # only, never drawn here, so the bed and the meter see the same life with or without them.
        self.outings: list[tuple[float, float]] = []  # out of the flat for the day's errands
        self.gone: list[tuple[float, float]] = []  # away for days (family, hospital)
        self.falls: list[tuple[float, float]] = []  # on the floor, from the fall until found
        self.spells: list[tuple[float, float]] = []  # sleepless, up at night

    def use(self, m: float, litres: float, dur: float = 1) -> None:
        a, k = int(m), max(1, int(dur))
        for i in range(a, min(a + k, self.n)):
            if i >= 0:
                self.flow[i] += litres / k

    def set_bed(self, a: float, b: float, v: int) -> None:
        self.bed[max(0, int(a)) : max(0, min(int(b), self.n))] = bytes([v]) * max(
            0, min(int(b), self.n) - max(0, int(a))
        )

    def quiet(self, a: float, b: float) -> None:
        """Nobody uses water in [a, b)."""
        for i in range(max(0, int(a)), min(int(b), self.n)):
            self.flow[i] = 0.0


def build(seed: int = 81, residents: int = 30, days: int = 30) -> Scenario:
    """The household scenario: one bed sensor and one water meter per resident."""
    return build_flats(seed, residents, days)[0]


def build_flats(seed: int = 81, residents: int = 30, days: int = 30) -> tuple[Scenario, list[_Flat]]:
    """The household scenario and each resident's simulated flat (for the door and PIR model)."""
    rng = random.Random(seed)
    devices, batches, episodes, away, homes = [], [], [], [], []
    flats: list[_Flat] = []
    n = days * DAY_MIN
    end = START + days * 86400
    for i in range(residents):
        bed_dev = device(f"bed-{i:02d}", "bthome-bed-occupancy", {"in_bed": ""}, i)
        wm = device(f"water-{i:02d}", "cjt188-water-cold", {"flow_total": "m3"}, i)
        devices += [bed_dev, wm]
        wake_h, bed_h = rng.uniform(6.0, 7.5), rng.uniform(20.8, 22.8)
        flat, eps, aways = _life(rng, n, days, wake_h, bed_h, bed_dev.id)
        episodes += eps
        flats.append(flat)
        away += [(wm.id, a, b) for a, b in aways]
        homes.append(
            HouseholdConfig(
                id=f"flat-{i:02d}",
                bed=bed_dev.id,
                water=wm.id,
                night_start=_hhmm(bed_h + 1.0),  # the family knows the resident's habits
                night_end=_hhmm(wake_h - 1.0),
                up_by=_hhmm(wake_h + 2.0),
            )
        )
        dead = None
        if i == 7:  # one bed node goes silent for a few hours
            t0 = START + rng.uniform(3, days - 3) * 86400
            dead = (t0, t0 + rng.uniform(2, 5) * 3600)
        outs = _runs(rng, flat.bed)
        batches += _adverts(rng, bed_dev.id, outs, START, end, dead)
        batches += _reads(rng, wm.id, flat.flow, i, [])  # its own outage labels are not ours
    batches.sort(key=lambda b: b.ts)
    episodes.sort(key=lambda e: e.start)
    rules = RulesConfig(households=tuple(homes))
    scn = Scenario("household", devices, batches, episodes, before_s=60, after_s=900, away=away, rules=rules)
    return scn, flats


def build_packs(seed: int = 81, residents: int = 30, days: int = 30) -> Scenario:
    """The same households judged by the per-device packs (elderly-bed, elderly-water) joined by the
    existing household composite (`household = true`, any of their alarms): the baseline."""
    scn = build(seed, residents, days)
    devices = [d.model_copy(update={"tags": (f"household:{d.id.split('-')[1]}",)}) for d in scn.devices]
    of = [
        "elderly-bed.not_up",
        "elderly-bed.not_back",
        "elderly-water.water_no_use_12h",
        "elderly-water.water_no_use_day",
        "elderly-water.water_leak",
        "elderly-water.water_over_use_day",
    ]
    anyof = {
        "id": "household-packs.any",
        "kind": "composite",
        "mode": "any",
        "household": True,
        "of": of,
        "event": KIND[0],
        "select": {"profiles": ["bthome-bed-occupancy"]},
        "suppress_when_away": True,
    }
    rules = RulesConfig.model_validate(
        {"packs": [{"name": "elderly-bed"}, {"name": "elderly-water"}], "rules": [anyof]}
    )
    away = [(f"bed-{dev.split('-')[1]}", a, b) for dev, a, b in scn.away] + scn.away
    return Scenario(
        "household-packs",
        devices,
        scn.batches,
        scn.episodes,
        scn.before_s,
        scn.after_s,
        away=away,
        rules=rules,
    )


def _runs(rng: random.Random, bed: bytearray) -> list[tuple[float, float]]:
    """Out-of-bed intervals in seconds (a minute's array, jittered within the minute)."""
    outs: list[tuple[float, float]] = []
    m, n = 0, len(bed)
    while m < n:
        if bed[m]:
            m += 1
            continue
        a = m
        while m < n and not bed[m]:
            m += 1
        outs.append((START + a * 60 + rng.uniform(0, 59), START + m * 60 + rng.uniform(0, 59)))
    return outs


def _life(
    rng: random.Random, n: int, days: int, wake_h: float, bed_h: float, dev_id: str
) -> tuple[_Flat, list[Episode], list[tuple[float, float]]]:
    flat = _Flat(n)
    late_h = rng.uniform(0.0, 0.5)
    naps = rng.uniform(0.0, 0.5)
    shower = rng.uniform(0.4, 0.9)
    wakes, beds = [], []
    for i in range(days + 1):
        base = i * DAY_MIN
        late = late_h * 60 if is_weekend(START + i * 86400) or is_holiday(START + i * 86400) else 0.0
        wakes.append(base + wake_h * 60 + late + rng.gauss(0, 24))
        beds.append(base + bed_h * 60 + rng.gauss(0, 24))
    flat.set_bed(0, wakes[0], 1)
    for i in range(days):
        _night(rng, flat, beds[i - 1] if i else -60.0, wakes[i])
        _day(rng, flat, i, wakes[i], beds[i], naps, shower)
        flat.set_bed(beds[i], wakes[i + 1] if i + 1 < len(wakes) else n, 1)
    eps: list[Episode] = []
    aways: list[tuple[float, float]] = []

    def ts(m: float) -> float:
        return START + m * 60

    busy: set[int] = {17, 18, 19, 20, 21} if days >= 23 else set()
    if busy and rng.random() < 0.3:  # visits the family over the National Day holiday
        a, b = wakes[17] + 60, beds[21] - 120
        flat.set_bed(a, b, 0)
        flat.quiet(a, b)
        flat.use(b, 12, 5)  # back home: toilet, kettle
        flat.gone.append((a, b))
        if rng.random() < 0.5:
            aways.append((ts(a) - 1800, ts(b) + 1800))
    free = list(range(2, days - 2))
    rng.shuffle(free)

    def take(span: int) -> int | None:
        """A day for an incident whose consequences last `span` days, clear of the others."""
        for d in free:
            days_ = set(range(d - 1, d + span + 1))
            if not days_ & busy:
                busy.update(days_)
                return d
        return None

    if rng.random() < 0.25 and (d := take(1)) is not None:  # a fall at night, to or from the bathroom
        t = rng.uniform(beds[d - 1] + 90, wakes[d] - 40)
        fall = t + (3 if rng.random() < 0.5 else 0)
        if fall > t:
            flat.use(t + 2, 6)  # flushed, fell on the way back
        found = wakes[d] + rng.uniform(60, 180)  # the carer's morning call
        flat.set_bed(t, found, 0)
        flat.quiet(fall, found)
        flat.use(found, 20, 10)  # the carer
        flat.falls.append((fall, found))
        eps.append(Episode(dev_id, KIND, ts(t), ts(found), "fell at night, lay until found"))
    if rng.random() < 0.15 and (d := take(8)) is not None:  # a fall by day, found after hours, then hospital
        t = rng.uniform(wakes[d] + 120, beds[d] - 60)
        found = t + min(60.0, max(2.0, math.exp(rng.gauss(math.log(10), 0.7)))) * 60
        back = found + rng.uniform(2, 5) * DAY_MIN
        flat.set_bed(t, back, 0)
        flat.quiet(t, back)
        flat.use(found, 20, 10)
        flat.use(back, 12, 5)
        flat.falls.append((t, found))
        flat.gone.append((found + 30, back))  # the ambulance
        what = f"fell by day, found after {(found - t) / 60:.0f} h"
        eps.append(Episode(dev_id, KIND, ts(t), ts(found), what))
        aways.append((ts(found + rng.uniform(30, 120)), ts(back) + 1800))
    if rng.random() < 0.25 and (d := take(1)) is not None:  # unwell, stays in bed
        got_up = d * DAY_MIN + rng.uniform(11, 15) * 60
        flat.set_bed(wakes[d], got_up, 1)
        flat.quiet(wakes[d] - 30, got_up)
        if rng.random() < 0.6:  # to the toilet and back to bed
            v = rng.uniform(wakes[d] - 30, got_up - 30)
            flat.set_bed(v, v + 4, 0)
            flat.use(v + 2, 6)
        start = ts(d * DAY_MIN + (wake_h + 1) * 60)
        eps.append(Episode(dev_id, KIND, start, ts(got_up), "unwell, stayed in bed"))
    if rng.random() < 0.15 and (d := take(1)) is not None:  # a basin tap left running at bedtime
        a = beds[d] - rng.uniform(2, 8)
        m = int(beds[d]) + 10
        while m < n and flat.bed[m]:
            m += 1
        off = m + rng.uniform(1, 3)
        flat.use(a, rng.uniform(3, 9) * (off - a), off - a)
        eps.append(Episode(dev_id, KIND, ts(a), ts(off), "tap left running at bedtime"))
    if (
        rng.random() < 0.08 and (d := take(7)) is not None
    ):  # taken to hospital (an illness), the community told later
        t = rng.uniform(wakes[d] + 60, beds[d] - 60)
        back = t + rng.uniform(2, 6) * DAY_MIN
        flat.set_bed(t, back, 0)
        flat.quiet(t, back)
        flat.use(back, 12, 5)  # home again: toilet, kettle
        flat.gone.append((t, back))
        aways.append((ts(t + rng.uniform(60, 480)), ts(back) + 1800))
    return flat, eps, aways


def _night(rng: random.Random, flat: _Flat, bed: float, wake: float) -> None:
    for _ in range(poisson(rng, 1.3)):  # to the bathroom
        t = rng.uniform(bed + 30, wake - 20)
        dur = math.exp(rng.gauss(math.log(4), 0.5))
        flat.set_bed(t, t + dur, 0)
        if rng.random() < 0.9:
            flat.use(t + dur * 0.6, 6)
        if rng.random() < 0.3:
            flat.use(t + dur * 0.8, 1)
    if rng.random() < 0.015:  # a sleepless spell (as in hil/eval/bed.py)
        t = rng.uniform(bed + 60, wake - 150)
        dur = rng.uniform(30, 120)
        flat.set_bed(t, t + dur, 0)
        flat.spells.append((t, t + dur))
        if rng.random() < 0.6:  # the kitchen or the bathroom
            k = t + rng.uniform(2, 15)
            flat.use(k, rng.uniform(0.8, 1.5))  # the kettle
            if rng.random() < 0.7:
                flat.use(k + 5, 6)
        if dur > 90 and rng.random() < 0.5:
            flat.use(t + dur - 5, 6)


def _day(
    rng: random.Random, flat: _Flat, d: int, wake: float, bed: float, naps: float, shower: float
) -> None:
    base = d * DAY_MIN
    holiday = is_holiday(START + d * 86400)
    outings: list[tuple[float, float]] = []
    if rng.random() < 0.02:  # a whole day out
        a = wake + rng.uniform(60, 120)
        outings.append((a, a + rng.uniform(6, 10) * 60))
    else:
        if rng.random() < 0.5:  # the market
            a = wake + rng.uniform(60, 150)
            outings.append((a, a + rng.uniform(40, 120)))
        if rng.random() < 0.35:  # the park, a neighbour
            a = base + rng.uniform(14.5, 16.5) * 60
            outings.append((a, a + rng.uniform(60, 180)))
    if rng.random() < naps:
        a = base + rng.uniform(12.5, 14.0) * 60
        flat.set_bed(a, a + rng.uniform(30, 90), 1)
    uses = [
        (wake + 1, 6, 1),
        (wake + rng.uniform(2, 20), rng.uniform(8, 22), rng.uniform(4, 12)),
        (wake + rng.uniform(30, 60), rng.uniform(2, 5), 2),
        (base + rng.gauss(690, 25), rng.uniform(5, 15), rng.uniform(5, 15)),
        (base + rng.gauss(1050, 30), rng.uniform(5, 15), rng.uniform(5, 15)),
        (base + rng.gauss(1120, 25), rng.uniform(5, 15), rng.uniform(5, 12)),
        (bed - rng.uniform(0, 10), rng.uniform(6, 10), 2),
    ]
    if rng.random() < shower:
        uses.append((rng.uniform(base + 1140, max(base + 1141, bed - 20)), rng.uniform(30, 60), 10))
    if rng.random() < 0.3:
        uses.append((rng.uniform(wake + 90, base + 720), rng.uniform(40, 60), rng.uniform(30, 50)))
    uses += [(rng.uniform(wake + 30, bed - 10), 6, 1) for _ in range(rng.randint(5, 8))]
    uses += [(rng.uniform(wake + 15, bed - 5), rng.uniform(0.8, 3.0), 1) for _ in range(rng.randint(8, 16))]
    if rng.random() < 0.7:
        uses.append((rng.uniform(max(wake + 60, bed - 90), bed - 5), rng.uniform(3, 6), 3))
    if rng.random() < (0.6 if holiday else 0.05):
        uses += [(base + rng.uniform(600, 1200), rng.uniform(5, 25), rng.uniform(2, 10)) for _ in range(5)]
    for m, litres, dur in uses:
        if not any(a <= m < b for a, b in outings):
            flat.use(m, litres, dur)
    for _, b in outings:
        flat.use(b + rng.uniform(1, 10), 6)  # back home: the toilet
    flat.outings += outings
