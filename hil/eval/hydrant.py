"""Two weeks of fire hydrants on a city water network (issue 18).

Four supply zones of hydrants. A zone's pressure follows the day's demand (lowest at the morning and
evening peaks), its booster pump switches stage every 15-40 min (a step of 0.02-0.035 MPa over half
a minute), and now and then a pump change-over or a large consumer opening a valve makes a short,
sharp dip (0.03-0.07 MPa for 1-4 min) that is nobody's fault. The transducer adds noise; passing
trucks shake the barrel (tilt < 1.5 deg for a second). The node samples every 10 s, sends a change
above 0.01 MPa at once and its state every 300 s; 5 % of adverts are lost.

Incidents, the ground truth: a zone's supply fails (a main repaired upstream; the pressure sinks
over 10-40 min and stays down for hours) - an episode on every hydrant of the zone for as long as
the true pressure is below the 0.14 MPa working minimum of GB 50974-2014 7.2.8 (a dip that bottoms
out above it is no episode); water drawn from a hydrant (street washing tankers, theft, fire
fighting: outlet opened, local pressure falls 0.10-0.20 MPa within seconds); a hydrant knocked
over by a vehicle (tilt 15-85 deg, half of them broken off and gushing: pressure near zero).
"""

from __future__ import annotations

import bisect
import math
import random

from citynerve.gateway.api import Sample, SampleBatch
from citynerve.hil.eval.model import START, Episode, Scenario, device
from citynerve.hil.sim.modbus._behaviour import daily_load

DAY = 86400
HOUR = 3600
SAMPLE_S = 10.0
HEARTBEAT_S = 300.0
LOSS = 0.05
WORK_MIN_MPA = 0.14  # GB 50974-2014 7.2.8: the label's line, the law's, not a pack parameter
POINTS = {"pressure": "MPa", "outlet_open": "", "tamper": "", "tilt": "°", "battery": "%"}


class _Zone:
    def __init__(self, rng: random.Random, days: int) -> None:
        self.base = rng.uniform(0.30, 0.42)
        self.steps: list[float] = []  # pump stage changes: times, alternating +/-
        t = START
        while t < START + days * DAY:
            t += rng.uniform(15, 40) * 60
            self.steps.append(t)
        self.step = rng.uniform(0.02, 0.035)
        self.dips = [
            (START + rng.uniform(0, days) * DAY, rng.uniform(60, 240), rng.uniform(0.03, 0.07))
            for _ in range(rng.randint(2, 6))
        ]
        self.outages: list[tuple[float, float, float, float]] = []  # t0, fall_s, hold_s, floor

    def pressure(self, t: float, hour: float) -> float:
        p = self.base - 0.08 * daily_load(hour)
        k = bisect.bisect_right(self.steps, t)
        if k % 2:  # the pump's upper stage, ramping in over 30 s
            p += self.step * min(1.0, (t - self.steps[k - 1]) / 30.0)
        elif k:
            p += self.step * max(0.0, 1.0 - (t - self.steps[k - 1]) / 30.0)
        for t0, dur, depth in self.dips:
            if t0 <= t < t0 + dur:
                p -= depth * math.sin(math.pi * (t - t0) / dur)
        for t0, fall, hold, floor in self.outages:
            if t0 <= t < t0 + 2 * fall + hold:
                x = min(1.0, (t - t0) / fall, (t0 + 2 * fall + hold - t) / fall)
                p = p + (floor - p) * x
        return p


class _Hydrant:
    def __init__(self, rng: random.Random, zone: _Zone) -> None:
        self.zone = zone
        self.head = rng.uniform(-0.03, 0.03)  # height above / below the zone's reference
        self.draws: list[tuple[float, float, float]] = []  # t0, t1, drop
        self.knock: tuple[float, float, float, bool] | None = None  # t0, t1, angle, broken
        self.battery = rng.uniform(60, 100)

    def state(self, t: float, hour: float, rng: random.Random) -> tuple[float, bool, float]:
        p = self.zone.pressure(t, hour) + self.head
        open_ = False
        for t0, t1, drop in self.draws:
            if t0 <= t < t1:
                p -= drop * min(1.0, (t - t0) / 15.0)
                open_ = True
        tilt = abs(rng.gauss(0, 0.3))
        if self.knock is not None and self.knock[0] <= t < self.knock[1]:
            tilt = self.knock[2] + rng.gauss(0, 0.5)
            if self.knock[3]:
                p = 0.01
        return max(0.0, p + rng.gauss(0, 0.004)), open_, tilt


def build(seed: int = 50974, hydrants: int = 24, days: int = 14) -> Scenario:
    """The hydrant scenario for the fire-hydrant pack."""
    rng = random.Random(seed)
    zones = [_Zone(rng, days) for _ in range(4)]
    nodes = [_Hydrant(rng, zones[i % 4]) for i in range(hydrants)]
    devices = [device(f"hydrant-{i:02d}", "bthome-fire-hydrant", POINTS, i, "0701") for i in range(hydrants)]
    episodes: list[Episode] = []
    for z, zone in enumerate(zones[:3]):  # three supply failures, one deep, one shallow, one at the line
        t0 = START + rng.uniform(1, days - 1) * DAY
        floor = (0.06, 0.12, 0.15)[z]
        zone.outages.append((t0, rng.uniform(600, 2400), rng.uniform(2, 6) * HOUR, floor))
    for i, h in enumerate(nodes):
        if i % 3 == 0:
            t0 = START + rng.uniform(0.5, days - 0.5) * DAY
            h.draws.append((t0, t0 + rng.uniform(10, 60) * 60, rng.uniform(0.10, 0.20)))
        if i % 8 == 5:
            t0 = START + rng.uniform(0.5, days - 0.5) * DAY
            h.knock = (t0, t0 + rng.uniform(2, 12) * HOUR, rng.uniform(15, 85), rng.random() < 0.5)
    batches: list[SampleBatch] = []
    for h, dev in zip(nodes, devices, strict=True):
        batches += _node(rng, h, dev.id, days)
        episodes += _truth(h, dev.id, days)
    batches.sort(key=lambda b: b.ts)
    episodes.sort(key=lambda e: e.start)
    return Scenario("fire-hydrant", devices, batches, episodes, before_s=SAMPLE_S, after_s=HEARTBEAT_S)


def _hour(t: float) -> float:
    return ((t - START) / HOUR) % 24


def _node(rng: random.Random, h: _Hydrant, dev_id: str, days: int) -> list[SampleBatch]:
    out: list[SampleBatch] = []
    t = START + rng.uniform(0, SAMPLE_S)
    sent_p, sent_open, sent_at = -1.0, False, -math.inf
    tilted = False
    while t < START + days * DAY:
        p, open_, tilt = h.state(t, _hour(t), rng)
        knocked = tilt > 10.0
        change = abs(p - sent_p) > 0.01 or open_ != sent_open or knocked != tilted
        if change or t - sent_at >= HEARTBEAT_S:
            sent_p, sent_open, sent_at, tilted = p, open_, t, knocked
            if rng.random() >= LOSS:
                battery = round(h.battery - 0.02 * (t - START) / DAY)
                samples = (
                    Sample("pressure", round(p, 4)),
                    Sample("outlet_open", open_),
                    Sample("tamper", False),
                    Sample("tilt", round(tilt, 1)),
                    Sample("battery", battery),
                )
                out.append(SampleBatch(dev_id, round(t, 3), samples))
        t += SAMPLE_S
    return out


def _truth(h: _Hydrant, dev_id: str, days: int) -> list[Episode]:
    eps: list[Episode] = []
    kinds_p = ("hydrant_pressure_low", "hydrant_pressure_critical", "hydrant_pressure_drop")
    # Below the working minimum (noise-free pressure), sampled every 10 s.
    below, t0 = False, 0.0
    t = START
    while t < START + days * DAY:
        p = h.zone.pressure(t, _hour(t)) + h.head
        drawn = any(a <= t < b for a, b, _ in h.draws)
        knocked = h.knock is not None and h.knock[0] <= t < h.knock[1]
        low = p < WORK_MIN_MPA and not drawn and not knocked
        if low and not below:
            t0 = t
        if below and not low:
            eps.append(Episode(dev_id, kinds_p, t0, t, "zone pressure below 0.14 MPa"))
        below = low
        t += SAMPLE_S
    for a, e, _ in h.draws:
        eps.append(Episode(dev_id, ("hydrant_opened", *kinds_p), a, e, "water drawn from the hydrant"))
    if h.knock is not None:
        a, e, _, broken = h.knock
        kinds = ("hydrant_knocked", *kinds_p) if broken else ("hydrant_knocked",)
        eps.append(Episode(dev_id, kinds, a, e, "knocked over" + (", broken off" if broken else "")))
    return eps
