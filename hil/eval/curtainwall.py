"""A month of glass curtain wall panels under wind, sun and two storms (issue 18).

Wind: a daily mean of 2-8 m/s with gusts, and two storm days (a typhoon's edge: 18-28 m/s for about
twelve hours). A sound panel's frame tilts with the wind pressure (about 0.0003 deg per (m/s)^2 of the
10 s mean wind, i.e. a quarter of a degree in a storm) and with the sun's heating of the facade
(+/- 0.05 deg over the day); its peak acceleration grows with the square of the gust speed (about
1.3 m/s^2 at 30 m/s). The node reports its 10 s mean tilt (0.1 deg resolution: BTHome 0x3F) and the
peak acceleration every 300 s; 5 % of adverts are lost.

Faults, the ground truth (from the moment the panel's fixing starts to fail until it is repaired):
an anchor slipping (the tilt creeps 0.05-0.4 deg a day), a fixing breaking (a step of 0.8-3 deg),
a panel working loose (it rattles: six times the acceleration of a sound panel, seen only when the
wind blows). A slow creep or a loose panel in calm weather is physically invisible for days: the
delays say so.
"""

from __future__ import annotations

import math
import random

from citynerve.gateway.api import Sample, SampleBatch
from citynerve.hil.eval.model import START, Episode, Scenario, device

DAY = 86400
HOUR = 3600
REPORT_S = 300
LOSS = 0.05
POINTS = {"tilt": "°", "vibration_peak": "m/s²", "vibration": "", "battery": "%"}


def build(seed: int = 102, panels: int = 16, days: int = 30) -> Scenario:
    """The curtain-wall scenario for the curtain-wall pack."""
    rng = random.Random(seed)
    devices = [device(f"panel-{i:02d}", "bthome-curtain-wall", POINTS, i, "0704") for i in range(panels)]
    daily = [rng.uniform(2, 8) for _ in range(days + 1)]
    storms = [START + rng.uniform(3, 12) * DAY, START + rng.uniform(16, days - 3) * DAY]

    def wind(t: float) -> float:
        d = int((t - START) // DAY)
        v = daily[d] * (1 + 0.5 * math.sin(2 * math.pi * ((t - START) / HOUR - 15) / 24))
        for s in storms:
            if s <= t < s + 12 * HOUR:
                v = max(v, 18 + 10 * math.sin(math.pi * (t - s) / (12 * HOUR)))
        return v

    batches: list[SampleBatch] = []
    episodes: list[Episode] = []
    for i, dev in enumerate(devices):
        zero = rng.gauss(0, 0.03)
        fault = i % 4
        t_fault = START + rng.uniform(2, days - 8) * DAY
        creep = step = 0.0
        loose = False
        if fault == 1:
            creep = rng.uniform(0.05, 0.4) / DAY
            episodes.append(
                Episode(dev.id, ("panel_tilt", "panel_creep"), t_fault, START + days * DAY, "anchor slipping")
            )
        elif fault == 2:
            step = rng.uniform(0.8, 3.0)
            episodes.append(
                Episode(dev.id, ("panel_tilt", "panel_creep"), t_fault, START + days * DAY, "fixing broke")
            )
        elif fault == 3 and i % 8 == 3:
            loose = True
            t_fault = min(t_fault, storms[1] - rng.uniform(1, 4) * DAY)
            episodes.append(Episode(dev.id, ("panel_vibration",), t_fault, START + days * DAY, "panel loose"))
        t = START + rng.uniform(0, REPORT_S)
        while t < START + days * DAY:
            v = wind(t) * (1 + abs(rng.gauss(0, 0.15)))
            hour = ((t - START) / HOUR) % 24
            tilt = zero + 0.0003 * v * v + 0.05 * math.sin(2 * math.pi * (hour - 9) / 24) + rng.gauss(0, 0.02)
            broken = t >= t_fault
            if broken:
                tilt += creep * (t - t_fault) + step
            gust = v * 1.4
            peak = 0.0015 * gust * gust * math.exp(rng.gauss(0, 0.25)) + abs(rng.gauss(0, 0.01))
            if loose and broken:
                peak *= 6.0
            if rng.random() >= LOSS:
                samples = (
                    Sample("tilt", round(tilt, 1)),
                    Sample("vibration_peak", round(peak, 3)),
                    Sample("vibration", peak > 3.0),
                    Sample("battery", round(95 - 0.05 * (t - START) / DAY)),
                )
                batches.append(SampleBatch(dev.id, round(t, 3), samples))
            t += REPORT_S + rng.uniform(-1, 1)
    batches.sort(key=lambda b: b.ts)
    episodes.sort(key=lambda e: e.start)
    return Scenario("curtain-wall", devices, batches, episodes, before_s=REPORT_S, after_s=REPORT_S)
