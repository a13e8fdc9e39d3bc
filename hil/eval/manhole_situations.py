"""Manhole covers on a city street, labelled by what happened to them (issue 18).

Twelve covers in the carriageway, two weeks. Traffic follows the day (few vehicles at night, peaks
at 08:00 and 18:00) with an urban mix - cars (82 %), vans (9 %), buses (4 %), heavy trucks (5 %) -
and speeds of 15-60 km/h (log-normal, slower in the peaks). A few percent of the vehicles put a
wheel on a given cover; each axle rocks it by an angle that grows with the axle load (square root
of tonnes) and with how badly the cover sits in its frame: most covers are well seated (a fraction
of a degree per tonne), a worn seat lets a cover rock 3-6 times more. An axle rocks the cover for
0.1-0.3 s; the axles of one vehicle follow each other at wheelbase / speed. The node (device_fw
manhole: LIS3DH, heartbeat every 300 s in three adverts, 5 Hz sampling while it moves, every 10 s
while it stays tilted) sends each 5 Hz sample in one advert, 5 % of adverts lost; tilt noise 0.3 deg.

What happens (the ground truth, from the moment it starts until the cover is back or the hazard
has passed):
- a heavy axle kicks a badly seated cover out of its seat: it drops with one edge into the shaft
  (20-60 deg), slides onto the frame's lip (4-12 deg: the cover is off its seat but nearly flat) or
  is thrown over (150-180 deg); found and reset 30 min-6 h later;
- a maintenance crew hooks the cover out (dragged at 15-40 deg for 5-20 s), lays it flat on the
  road next to the hole (0-4 deg) for 30 min-3 h and drags it back: the hole is open all that time;
- thieves hook a cover out and carry it off: the node is out of range 20-120 s later (for good);
- a storm: the street's rain (two storms, one heavy) surcharges the sewers: the water rises above
  the pipe crown into the shaft (the sewer runs full under pressure, the engineering definition of
  surcharge; the crown's depth below the cover is the well's own, 0.8-2.5 m), labelled from when it
  rises above the crown until it falls back below it; in some wells it comes out onto the street;
- sewer gas builds up in a well (low flow, warm nights): an incident while hydrogen sulphide is
  above the 10 mg/m3 (7 ppm) maximum allowable concentration of GBZ 2.1-2019 or methane above 10 %
  of its lower explosive limit (the 'hazardous atmosphere' of OSHA 29 CFR 1910.146(b)); the sensors
  (electrochemical H2S +/-0.5 ppm, catalytic CH4 +/-1 %LEL) report at the heartbeat;
- a node dies (water in the housing): silent from then on.
None of these lines is the pack's (10 / 90 / 5 deg, 500 mm, 20 %LEL) - except H2S: the pack's line
was 10 ppm and is now GBZ 2.1's 7 ppm, the standard it cites. Where the pack's line differs from
what happened, the scores say so.
"""

from __future__ import annotations

import itertools
import math
import random
from collections.abc import Callable
from functools import partial

from citynerve.gateway.api import Sample, SampleBatch
from citynerve.hil.eval.model import START, Episode, Scenario, device

DAY = 86400
HOUR = 3600
HEARTBEAT_S = 300.0
SAMPLE_S = 0.2
LOSS = 0.05
H2S_MAC_PPM = 7.0  # GBZ 2.1-2019: MAC 10 mg/m3 of H2S = 7.0 ppm at 20 degC
CH4_HAZARD_LEL = 10.0  # OSHA 29 CFR 1910.146(b): flammable gas above 10 % of its LFL
POINTS = {"tilt": "deg", "battery": "%", "water_level": "mm", "ch4": "%LEL", "h2s": "ppm"}
VEHICLES = (  # share, axles, tonnes per axle (range), wheelbase m
    ("car", 0.82, 2, (0.5, 0.9), 2.6),
    ("van", 0.09, 2, (1.0, 2.2), 3.3),
    ("bus", 0.04, 2, (5.0, 10.0), 5.8),
    ("truck", 0.05, 4, (6.0, 10.0), 3.8),
)
OPENINGS = ("tipped", "slid", "thrown", "maintenance", "stolen")


def _traffic_per_hour(hour: float) -> float:
    """Share of the day's vehicles in this hour: quiet nights, peaks at 08:00 and 18:00."""
    peak = math.exp(-(((hour - 8) / 1.5) ** 2)) + math.exp(-(((hour - 18) / 2.0) ** 2))
    return 0.008 + (0.045 if 6 <= hour < 23 else 0.0) + 0.05 * peak


class _Cover:
    def __init__(self, rng: random.Random) -> None:
        self.seat = math.exp(rng.gauss(math.log(0.5), 0.3))  # deg of rock per sqrt(tonne)
        self.rest = rng.uniform(0.0, 1.5)  # resting tilt: settled since the node was zeroed at installation
        self.crown = rng.uniform(0.8, 2.5)  # depth of the pipe crown below the cover, m
        self.normal = self.crown + rng.uniform(0.2, 0.5)  # the dry-weather water surface, m
        self.response = rng.uniform(0.5, 1.6)  # how hard a storm surcharges this well
        self.hits_per_day = rng.uniform(80, 260)
        # (t_start, [(t, angle) knots]), the cover's pose over an incident; None = out of range.
        self.poses: list[tuple[float, list[tuple[float, float]]]] = []
        self.gone_at = math.inf  # node out of range or dead
        self.gas: list[tuple[str, float, float, float, float]] = []  # gas, t0, rise_s, hold_s, peak

    def pose(self, t: float) -> float | None:
        for _t0, knots in self.poses:
            if knots[0][0] <= t <= knots[-1][0]:
                for (ta, a), (tb, b) in itertools.pairwise(knots):
                    if ta <= t <= tb:
                        return a + (b - a) * (t - ta) / (tb - ta) if tb > ta else b
        return None

    def moving(self, t: float) -> bool:
        return any(knots[0][0] - 1 <= t <= knots[-1][0] + 3 for _, knots in self.poses)

    def gas_level(self, gas: str, t: float) -> float:
        base = 0.6 if gas == "h2s" else 1.0
        v = base * (1 + 0.5 * math.sin(2 * math.pi * ((t - START) / DAY - 0.1)))
        for g, t0, rise, hold, peak in self.gas:
            if g == gas and t0 <= t < t0 + 2 * rise + hold:
                v += peak * min(1.0, (t - t0) / rise, (t0 + 2 * rise + hold - t) / rise)
        return v


def _storms(rng: random.Random, days: int) -> list[tuple[float, float, float, float, float]]:
    """The street's storms: start, rise_s, peak_s, fall_s, intensity (m of surcharge head)."""
    out = []
    for k, head in enumerate((rng.uniform(1.6, 2.6), rng.uniform(0.6, 1.2))):
        t0 = START + rng.uniform(1 + k * days / 2, (k + 1) * days / 2 - 1) * DAY
        out.append((t0, rng.uniform(20, 60) * 60, rng.uniform(30, 120) * 60, rng.uniform(1, 3) * HOUR, head))
    return out


def _water(cv: _Cover, storms: list[tuple[float, float, float, float, float]], t: float) -> float:
    """Distance from the cover to the water (m): the surcharge head lifts it above the crown."""
    d = cv.normal
    for t0, rise, peak, fall, head in storms:
        if t0 <= t < t0 + rise + peak + fall:
            x = min(1.0, (t - t0) / rise, (t0 + rise + peak + fall - t) / fall)
            surcharge = head * cv.response * x  # m above the dry-weather level
            d = min(d, max(0.0, cv.normal - surcharge))
    return d


def _opening(rng: random.Random, cv: _Cover, kind: str, t0: float) -> tuple[float, str]:
    """Add the cover's pose for one incident; returns when it ends and what it was."""
    r = cv.rest
    if kind == "maintenance":
        drag, work = rng.uniform(5, 20), rng.uniform(0.5, 3) * HOUR
        flat = rng.uniform(0, 4)
        knots = [(t0, r), (t0 + 1.5, rng.uniform(15, 40)), (t0 + drag, rng.uniform(15, 40))]
        knots += [(t0 + drag + 1, flat), (t0 + drag + work, flat), (t0 + drag + work + 1.5, 25.0)]
        knots += [(t0 + 2 * drag + work, 25.0), (t0 + 2 * drag + work + 1, r)]
        cv.poses.append((t0, knots))
        return knots[-1][0], "opened for maintenance"
    if kind == "stolen":
        lift = rng.uniform(3, 10)
        carried = rng.uniform(20, 120)
        knots = [(t0, r), (t0 + lift, rng.uniform(60, 110)), (t0 + lift + carried, rng.uniform(30, 150))]
        cv.poses.append((t0, knots))
        cv.gone_at = t0 + lift + carried
        return math.inf, "stolen"
    angle = {"tipped": rng.uniform(20, 60), "slid": rng.uniform(4, 12), "thrown": rng.uniform(150, 180)}[kind]
    found = rng.uniform(0.5, 6) * HOUR
    knots = [(t0, r), (t0 + rng.uniform(0.3, 1.0), angle), (t0 + found, angle), (t0 + found + 2, r)]
    cv.poses.append((t0, knots))
    return t0 + found + 2, f"displaced by traffic ({kind}, {angle:.0f} deg)"


def build(seed: int = 41401, covers: int = 12, days: int = 14) -> Scenario:
    """The situation-labelled scenario for the manhole pack."""
    rng = random.Random(seed)
    devices = [device(f"cover-{c:02d}", "bthome-manhole-cover", POINTS, c, "0101") for c in range(covers)]
    storms = _storms(rng, days)
    survey = random.Random(seed + 1)
    end = START + days * DAY
    batches: list[SampleBatch] = []
    episodes: list[Episode] = []
    vibration: list[tuple[str, float, float]] = []
    for c, dev in enumerate(devices):
        cv = _Cover(rng)
        # The installer measures the crown's depth below the cover (a tape down the shaft, +/- 20 mm):
        # the device option crown_mm (the gateway derives water_over_crown). Its own stream: the
        # situation is the same with or without it.
        devices[c] = dev = dev.model_copy(update={"crown_mm": round(1000 * cv.crown + survey.gauss(0, 20))})
        if c % 3 == 1:
            cv.seat *= rng.uniform(3, 6)  # a worn seat: the cover rocks and clunks
        incidents: list[tuple[str, float]] = []
        kind = OPENINGS[c % len(OPENINGS)]
        incidents.append((kind, START + rng.uniform(0.5, days - 1) * DAY))
        if c % 2 == 0 and kind != "stolen":
            other = rng.choice(("tipped", "maintenance", "slid"))
            incidents.append((other, START + rng.uniform(0.5, days - 1) * DAY))
        incidents.sort(key=lambda x: x[1])
        for kind, t0 in incidents:
            if cv.poses and t0 < cv.poses[-1][1][-1][0] + HOUR:
                continue  # overlapping incidents: keep the first
            if kind == "maintenance":
                t0 = START + math.floor((t0 - START) / DAY) * DAY + rng.uniform(9, 16) * HOUR  # working hours
            t1, what = _opening(rng, cv, kind, t0)
            kinds = ("manhole_tilt", "manhole_open", "manhole_ajar") + (
                ("node_offline",) if kind == "stolen" else ()
            )
            episodes.append(Episode(dev.id, kinds, t0, min(t1, end), what))
        if c % 6 == 4 and cv.gone_at == math.inf:
            cv.gone_at = START + rng.uniform(3, days - 2) * DAY  # water in the housing: the node dies
            episodes.append(Episode(dev.id, ("node_offline",), cv.gone_at, end, "node died"))
        if c % 4 == 2:
            for gas in ("h2s", "ch4"):
                t0 = START + rng.uniform(1, days - 1) * DAY
                peak = math.exp(rng.gauss(math.log(10 if gas == "h2s" else 14), 0.6))
                cv.gas.append((gas, t0, rng.uniform(30, 120) * 60, rng.uniform(1, 6) * HOUR, peak))
        batches += _node(rng, cv, dev.id, storms, days, vibration)
        episodes += _truth(cv, dev.id, storms, days)
    batches.sort(key=lambda b: b.ts)
    episodes.sort(key=lambda e: e.start)
    return Scenario(
        "manhole", devices, batches, episodes, before_s=SAMPLE_S, after_s=HEARTBEAT_S, vibration=vibration
    )


def _passes(rng: random.Random, cv: _Cover, days: int) -> dict[float, float]:
    """Tilt added by the wheels that hit this cover: {sample time: deg} at the node's 5 Hz."""
    out: dict[float, float] = {}
    shares = [v[1] for v in VEHICLES]
    for d in range(days):
        for h in range(24):
            n = rng.gauss(1, 0.15) * cv.hits_per_day * _traffic_per_hour(h) / 1.02
            for _ in range(max(0, round(n))):
                t = START + d * DAY + (h + rng.random()) * HOUR
                _, _, axles, (lo, hi), base = rng.choices(VEHICLES, weights=shares)[0]
                peak = 7 <= h < 9 or 17 <= h < 19
                speed = min(60.0, max(15.0, math.exp(rng.gauss(math.log(25 if peak else 38), 0.3)))) / 3.6
                t0 = math.floor(t / SAMPLE_S) * SAMPLE_S
                for a in range(axles):
                    ta = t + a * (base if a < 2 else 1.35) / speed
                    amp = cv.seat * math.sqrt(rng.uniform(lo, hi)) * math.exp(rng.gauss(0, 0.4))
                    width = rng.uniform(0.1, 0.3)
                    k = 0
                    while t0 + k * SAMPLE_S < ta + 3 * width + 2.0:  # sampled until still
                        tk = round(t0 + k * SAMPLE_S, 1)
                        out[tk] = max(
                            out.get(tk, 0.0), min(35.0, amp * math.exp(-(((tk - ta) / width) ** 2)))
                        )
                        k += 1
    return out


def _node(
    rng: random.Random,
    cv: _Cover,
    dev_id: str,
    storms: list[tuple[float, float, float, float, float]],
    days: int,
    vibration: list[tuple[str, float, float]],
) -> list[SampleBatch]:
    end = START + days * DAY
    vib = _passes(rng, cv, days)
    times = sorted(vib)
    k0 = 0
    for k in range(1, len(times) + 1):  # one vibration window per run of samples
        if k == len(times) or times[k] - times[k - 1] > 0.3:
            vibration.append((dev_id, times[k0], times[k - 1]))
            k0 = k
    sends: dict[float, bool] = {round(t, 1): False for t in times}  # False: one advert
    t = START + rng.uniform(0, HEARTBEAT_S)
    while t < end:
        sends[round(t, 1)] = True  # heartbeat: three adverts, full state
        t += HEARTBEAT_S
    for _, knots in cv.poses:  # the cover moves: 5 Hz while moving, then every 10 s while tilted
        moves = [(ta - 0.5, tb + 3.0) for (ta, a), (tb, b) in itertools.pairwise(knots) if a != b]
        t = knots[0][0]
        while t <= knots[-1][0] + 3:
            if any(a <= t <= b for a, b in moves):
                sends.setdefault(round(t, 1), False)
                t += SAMPLE_S
                continue
            pose = cv.pose(t)
            if pose is not None and pose > 7.0:
                sends.setdefault(round(t, 1), False)
            t += 10.0
    out: list[SampleBatch] = []
    for tk in sorted(sends):
        if tk >= end or tk >= cv.gone_at:
            continue
        full = sends[tk] and not cv.moving(tk)
        if full:
            if all(rng.random() < LOSS for _ in range(3)):
                continue
        elif rng.random() < LOSS:
            continue
        pose = cv.pose(tk)
        tilt = (cv.rest if pose is None else pose) + vib.get(tk, 0.0) + rng.gauss(0, 0.3)
        samples: tuple[Sample, ...] = (Sample("tilt", round(abs(tilt), 1)),)
        if full:
            dist = _water(cv, storms, tk) + rng.gauss(
                0, 0.01 if _water(cv, storms, tk) == cv.normal else 0.03
            )
            samples += (
                Sample("battery", round(90 - 0.05 * (tk - START) / DAY + rng.gauss(0, 0.3))),
                Sample("water_level", round(1000 * max(0.0, dist))),
                Sample("ch4", round(max(0.0, cv.gas_level("ch4", tk) + rng.gauss(0, 1.0)), 1)),
                Sample("h2s", round(max(0.0, cv.gas_level("h2s", tk) + rng.gauss(0, 0.5)), 1)),
            )
        out.append(SampleBatch(dev_id, tk, samples))
    return out


def _spans(f: Callable[[float], bool], t0: float, t1: float, step: float) -> list[tuple[float, float]]:
    """Where the predicate f(t) holds in [t0, t1), sampled every `step`."""
    out: list[tuple[float, float]] = []
    start = None
    t = t0
    while t < t1:
        if f(t):
            start = t if start is None else start
        elif start is not None:
            out.append((start, t))
            start = None
        t += step
    if start is not None:
        out.append((start, t1))
    return out


def _truth(
    cv: _Cover, dev_id: str, storms: list[tuple[float, float, float, float, float]], days: int
) -> list[Episode]:
    eps: list[Episode] = []
    for t0, rise, peak, fall, _ in storms:
        t1 = t0 + rise + peak + fall
        if t0 >= cv.gone_at:
            continue  # no node to see it (its own loss is the incident)
        flood = _water(cv, storms, t0 + rise) == 0.0
        what = "surcharged, floods the street" if flood else "surcharged"
        for a, b in _spans(lambda t: _water(cv, storms, t) < cv.crown, t0, t1, 10.0):
            # slack: a level read once a heartbeat with +/-30 mm of noise (and the installer's +/-20 mm
            # on the crown) crosses the crown up to a heartbeat either side of the true moment
            kinds = ("manhole_high_water", "manhole_surcharge")
            eps.append(Episode(dev_id, kinds, a, b, what, slack_s=HEARTBEAT_S))
    limits = {"h2s": H2S_MAC_PPM, "ch4": CH4_HAZARD_LEL}
    for gas, t0, rise, hold, _ in cv.gas:
        if t0 >= cv.gone_at:
            continue
        hazard = partial(_above, cv, gas, limits[gas])
        for a, b in _spans(hazard, t0, t0 + 2 * rise + hold, 10.0):
            kinds = ("manhole_gas", "manhole_gas_warning")
            # slack: the sensors' +/-0.5 ppm / +/-1 %LEL noise near the line, read once a heartbeat
            eps.append(Episode(dev_id, kinds, a, b, f"{gas} above the hazard line", slack_s=HEARTBEAT_S))
    return eps


def _above(cv: _Cover, gas: str, limit: float, t: float) -> bool:
    return cv.gas_level(gas, t) > limit
