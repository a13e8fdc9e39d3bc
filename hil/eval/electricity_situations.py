"""Households' electricity, labelled by what happened to the supply and in the home (issue 18).

Ten households on one low-voltage feeder, five weeks from Monday 14 September 2026 (Mid-Autumn and
the National Day week included), DL/T 645 single-phase meters read every minute. Household kinds:
working couples (out 08:00-18:00), retired early risers (up at 04:45-05:45: kettle, rice cooker,
radio), families, a night-shift worker (cooks at 01:00-02:00 on work days) and an e-bike charged
every night (250-400 W for 3-6 h). Appliances: fridge cycling, standby, kettle (1.8 kW), rice
cooker, microwave, induction hob (2 kW), oven, a tumble dryer (2.2 kW), TV and lights, a 2.5-3 kW
water heater, air conditioning (0.9-1.4 kW), a washing machine on a timer. A heat spell of five
nights (27-29 degC) makes most households run their AC all night; at Mid-Autumn families cook and
sit up late; in the National Day week some households travel and come home around midnight (water
heater, kettle). The breaker of each household is 32, 40 or 63 A (the installer sets the pack's
`current_max_a` to it, as the pack says). Supply: the feeder's voltage follows its load (the far end
drops up to 16 V in the evening peak, more on the hot evenings), noise 0.8 V, motor-start dips.

What happens (the ground truth, from when it starts until it ends):
- overload: appliances stacked above the breaker's rated current for more than a minute (current
  that a breaker lets through for minutes to an hour, IEC 60898-1's 1.13-1.45 In; inrush of a
  second or two is not an overload); the breaker trips (above 1.45 In for 10 min) and is reset;
- the supply outside the GB/T 12325-2008 band (198-235.4 V) for more than a minute: the far end of
  the feeder on hot evenings, a broken neutral in the building (the phase's households see
  245-265 V or 170-190 V for 30-120 min);
- something left on or broken at night: a heater left on (1-2 kW), a water heater's thermostat
  stuck (2.5 kW until someone notices next day), an iron left on (500 W).
The heat spell, the festival, the travellers, the early risers, the shift worker and the e-bike
are normal life: an alarm on them is a false alarm. So is a dehumidifier or an electric blanket
running all night (150-400 W, drawn like the incidents above): IEC 60335-2-40 / -17 appliances made
to run unattended, with their own humidistat / thermostat and overheat protection (`NORMAL_AT_NIGHT`).
"""

from __future__ import annotations

import random
from dataclasses import replace
from datetime import datetime

from citynerve.gateway.api import Sample, SampleBatch
from citynerve.gateway.rules import PackRef, RulesConfig, Selector
from citynerve.hil.eval.electricity import POINTS, _add
from citynerve.hil.eval.model import START, TZ, Episode, Scenario, device, is_holiday

DAY = 86400
MIN_PER_DAY = 1440
BAND = (198.0, 235.4)  # GB/T 12325-2008, 220 V single phase: +7 % / -10 %
KINDS = ("couple", "early riser", "family", "shift worker", "e-bike", "early riser", "family", "couple")
NORMAL_AT_NIGHT = frozenset({"dehumidifier left on", "electric blanket left on high"})
"""Appliances made to run unattended through the night (IEC 60335-2-40 dehumidifiers, IEC 60335-2-17
electric blankets, both with their own thermostat / humidistat and overheat protection): a night of
use is what they are for, so it is labelled normal, and an alarm on it is false."""
HEAT_DAYS = range(10, 15)  # a late heat spell: 24-29 Sep
MID_AUTUMN = 11  # 25 Sep


def _day(rng: random.Random, load: list[float], d: int, kind: str, away: bool) -> None:
    b = d * MIN_PER_DAY
    for m in range(b, b + MIN_PER_DAY):
        load[m] += 30 + (110 if (m // 20) % 2 == 0 else 0)  # standby, fridge cycling
    if away:
        return
    free = datetime.fromtimestamp(START + b * 60, TZ).weekday() >= 5 or is_holiday(START + b * 60)
    wake = {"early riser": rng.uniform(285, 345), "shift worker": rng.uniform(600, 720)}.get(
        kind, rng.gauss(450 if free else 400, 25)
    )
    _add(load, b + wake + 5, 3, 1800)  # kettle
    _add(load, b + wake + 10, 30, 700)  # rice cooker / breakfast
    if kind == "early riser":
        _add(load, b + wake, 90, 60)  # radio, lights
    if kind in ("early riser", "family") or free:
        _add(load, b + rng.gauss(700, 20), 5, 1000)  # microwave at lunch
    _add(load, b + rng.gauss(1050, 25), rng.uniform(20, 40), 2000)  # induction hob
    if rng.random() < 0.2:
        _add(load, b + rng.gauss(1040, 20), rng.uniform(30, 60), 2000)  # oven
    _add(load, b + 1110, rng.uniform(120, 220), 150)  # TV, lights
    _add(load, b + rng.uniform(1140, 1290), rng.uniform(30, 60), rng.uniform(2500, 3000))  # water heater
    hot = d in HEAT_DAYS
    if hot and rng.random() < 0.8:
        _add(load, b + rng.uniform(1260, 1350), rng.uniform(540, 600), rng.uniform(900, 1400))  # AC all night
    elif rng.random() < 0.4:
        _add(load, b + 1200, rng.uniform(60, 180), rng.uniform(900, 1400))  # AC in the evening
    if d == MID_AUTUMN and kind in ("family", "couple"):
        _add(load, b + rng.uniform(1230, 1290), rng.uniform(90, 180), rng.uniform(1500, 2500))  # up late
    if kind == "shift worker" and d % 7 < 5:
        _add(load, b + rng.uniform(60, 120), rng.uniform(20, 40), 2000)  # cooks after the shift
    if kind == "e-bike":
        _add(load, b + rng.uniform(1290, 1380), rng.uniform(180, 360), rng.uniform(250, 400))
    if kind in ("family", "couple") and rng.random() < 0.15:
        _add(load, b + rng.uniform(1080, 1200), rng.uniform(60, 120), 2200)  # tumble dryer after dinner
    if rng.random() < 0.1:
        _add(load, b + rng.uniform(0, 300), 3, 1800)  # kettle at night
    if kind == "family" and rng.random() < 0.2:
        _add(load, b + rng.uniform(0, 120), 60, 400)  # washing machine on a timer
    if rng.random() < 0.15:
        _add(load, b + rng.gauss(1100, 40), rng.uniform(3, 6), 1800)  # kettle while cooking


def build(seed: int = 12325, households: int = 10, days: int = 35) -> Scenario:
    """The situation-labelled scenario for the electricity pack."""
    rng = random.Random(seed)
    devices = [
        device(f"elec-{h:02d}", "dlt645-single-phase", POINTS, h).model_copy(update={"tags": ("feeder:F1",)})
        for h in range(households)
    ]  # the installer tags each meter with its feeder: the night rule compares it with its neighbours
    breakers = [(32, 40, 63, 40, 32)[h % 5] for h in range(households)]
    n = days * MIN_PER_DAY
    loads = []
    travel = {h for h in range(households) if h % 3 == 2}  # away 1-4 Oct, home around midnight
    for h in range(households):
        load = [0.0] * n
        for d in range(days):
            _day(rng, load, d, KINDS[h % len(KINDS)], h in travel and 17 <= d <= 20)
        if h in travel and days > 21:
            b = 21 * MIN_PER_DAY
            _add(load, b + rng.uniform(0, 40), 45, 2800)  # home at midnight: water heater, kettle
            _add(load, b + rng.uniform(0, 40), 3, 1800)
        if (
            breakers[h] == 32 and days > 9
        ):  # a small supply: one evening the dryer and a heater run while dinner cooks
            m0 = rng.randrange(8, days - 1) * MIN_PER_DAY + int(rng.uniform(1040, 1060))
            _add(load, m0, rng.uniform(20, 60), 2200)
            _add(load, m0 + rng.uniform(0, 10), rng.uniform(30, 90), rng.uniform(1500, 2000))
        loads.append(load)
    episodes: list[Episode] = []
    for h, dev in enumerate(devices):  # night incidents, after the pack's 7-day warm-up
        if h % 5 in (0, 2, 3) and days > 9:  # after the warm-up week
            d = rng.randrange(8, days - 1)
            m0 = d * MIN_PER_DAY + int(rng.uniform(-120, 180))  # from 22:00 to 03:00
            what, watts, hours = rng.choice(
                (
                    ("heater left on", rng.uniform(1000, 2000), rng.uniform(4, 9)),
                    ("water heater thermostat stuck", 2500.0, rng.uniform(8, 20)),
                    ("iron left on", 500.0, rng.uniform(2, 6)),
                    ("dehumidifier left on", rng.uniform(250, 400), rng.uniform(6, 9)),
                    ("electric blanket left on high", rng.uniform(150, 250), rng.uniform(6, 9)),
                )
            )
            _add(loads[h], m0, hours * 60, watts)
            if what in NORMAL_AT_NIGHT:
                continue  # made to run unattended through the night: normal use, not an incident
            episodes.append(
                Episode(dev.id, ("night_consumption",), START + m0 * 60, START + (m0 + hours * 60) * 60, what)
            )
    volts = _feeder(rng, loads, n)
    neutral = _broken_neutral(rng, volts, households, days)
    batches: list[SampleBatch] = []
    for h, dev in enumerate(devices):
        amps_true = _trips(rng, loads[h], volts[h], breakers[h])
        episodes += _spans(dev.id, ("over_current",), [a > breakers[h] for a in amps_true], "overload")
        bad = [not (BAND[0] <= v <= BAND[1]) for v in volts[h]]
        for ep in _spans(dev.id, ("voltage_out_of_band",), bad, "feeder end at the evening peak"):
            broken = ep.start < neutral[1] and neutral[0] < ep.end
            episodes.append(replace(ep, what="broken neutral") if broken else ep)
        inrush = {rng.randrange(n) for _ in range(days * 2)}
        dips = {rng.randrange(n) for _ in range(days)}
        energy = rng.uniform(1000, 20000)
        for m in range(n):
            v = volts[h][m] + rng.gauss(0, 0.8) - (rng.uniform(20, 35) if m in dips else 0.0)
            a = amps_true[m] + rng.gauss(0, 0.05) + (rng.uniform(5, 15) if m in inrush else 0.0)
            energy += amps_true[m] * volts[h][m] / 60_000
            samples = (
                Sample("current", round(max(0.0, a), 2)),
                Sample("voltage", round(v, 1)),
                Sample("energy_import", round(energy, 2)),
            )
            batches.append(SampleBatch(dev.id, START + m * 60 + rng.uniform(0, 3), samples))
    batches.sort(key=lambda b: b.ts)
    episodes.sort(key=lambda e: e.start)
    # The installer sets each household's breaker rating (the pack says: per site).
    per_rating = []
    for rating in sorted(set(breakers)):
        members = tuple(d.id for d, b in zip(devices, breakers, strict=True) if b == rating)
        ref = PackRef(
            name="electricity", select=Selector(devices=members), params={"current_max_a": float(rating)}
        )
        (oc,) = [r for r in ref.rules if r.id == "electricity.over_current"]
        per_rating.append(oc.model_copy(update={"id": f"electricity.over_current-{rating}"}))
    rules = RulesConfig(
        packs=(PackRef(name="electricity", disable=("over_current",)),), rules=tuple(per_rating)
    )
    return Scenario("electricity", devices, batches, episodes, before_s=60.0, after_s=3600.0, rules=rules)


def _feeder(rng: random.Random, loads: list[list[float]], n: int) -> list[list[float]]:
    """Each household's voltage: the transformer's 228 V less the drop of the feeder's load up to it."""
    out = []
    hh = len(loads)
    total = [sum(load[m] for load in loads) for m in range(n)]
    for h in range(hh):
        reach = (h + 1) / hh  # position along the feeder
        out.append([228.0 - reach * 1.1e-3 * total[m] for m in range(n)])
    return out


def _broken_neutral(rng: random.Random, volts: list[list[float]], hh: int, days: int) -> tuple[float, float]:
    m0 = int(rng.uniform(3, days - 3) * MIN_PER_DAY)
    dur = int(rng.uniform(30, 120))
    hit = set(range(0, hh, 2))
    for h in range(hh):
        shift = rng.uniform(25, 40) if h in hit else -rng.uniform(35, 50)
        for m in range(m0, m0 + dur):
            volts[h][m] += shift
    return START + m0 * 60, START + (m0 + dur) * 60


def _trips(rng: random.Random, load: list[float], volts: list[float], rating: int) -> list[float]:
    """The current actually drawn: the breaker trips after 10 min above 1.45 In; reset in 5-30 min."""
    amps = [w / v for w, v in zip(load, volts, strict=True)]
    over = 0
    m = 0
    while m < len(amps):
        over = over + 1 if amps[m] > 1.45 * rating else 0
        if over >= 10:
            off = int(rng.uniform(5, 30))
            for k in range(m + 1, min(len(amps), m + 1 + off)):
                amps[k] = 0.0
            m += off
            over = 0
        m += 1
    return amps


def _spans(dev_id: str, kinds: tuple[str, ...], flags: list[bool], what: str) -> list[Episode]:
    """Episodes where a condition held for more than a minute (two reads or more)."""
    out = []
    m = 0
    while m < len(flags):
        if flags[m]:
            m1 = m
            while m1 < len(flags) and flags[m1]:
                m1 += 1
            if m1 - m >= 2:
                out.append(Episode(dev_id, kinds, START + m * 60, START + m1 * 60, what))
            m = m1
        else:
            m += 1
    return out
