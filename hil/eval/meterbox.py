"""Six days of stairwell meter boxes with electrical fire detectors, polled every 10 s (issue 18).

A box's circuits leak a few tens of mA to earth, more with the building's load and on humid
days; appliances switching on give one-poll spikes of 100-450 mA (the detector's 1 s RMS window
catches a switching transient now and then). Cable and terminal temperatures follow the load
(25-45 degC), the box air the day. Polls fail 0.5 % of the time.

Incidents, the ground truth (from when they start until repaired): an insulation fault (water in
a junction box, a nail through a cable: the leakage climbs to 350-900 mA within minutes and stays);
a loose terminal on one phase (it heats with the load: the episode starts when the joint passes
the 70 degC its PVC cable is rated for - a property of the cable, GB/T 5023 - which an evening
load reaches and a night load may not); smoke from a burning meter; the door left open by
someone who is not the electrician (2-6 h).
"""

from __future__ import annotations

import math
import random

from citynerve.gateway.api import Quality, Sample, SampleBatch
from citynerve.hil.eval.model import START, Episode, Scenario, device
from citynerve.hil.sim.modbus._behaviour import daily_load

DAY = 86400
HOUR = 3600
POLL_S = 10.0
CABLE_LIMIT_C = 70.0  # PVC conductor rating: the label's line (a property of the cable)
POINTS = {
    "residual_current": "mA",
    "cable_temp_a": "°C",
    "cable_temp_b": "°C",
    "cable_temp_c": "°C",
    "box_temperature": "°C",
    "smoke": "",
    "door_open": "",
}


def build(seed: int = 14287, boxes: int = 16, days: int = 6) -> Scenario:
    """The meter-box scenario for the meter-box pack."""
    rng = random.Random(seed)
    devices = [device(f"box-{i:02d}", "modbus-meter-box-efm", POINTS, i, "0705") for i in range(boxes)]
    humid = [rng.random() < 0.4 for _ in range(days + 1)]
    batches: list[SampleBatch] = []
    episodes: list[Episode] = []
    end = START + days * DAY
    for i, dev in enumerate(devices):
        base = rng.uniform(10, 40)
        size = rng.uniform(0.6, 1.4)
        kind = ("insulation", "terminal", "smoke", "door", "none", "none", "insulation", "terminal")[i % 8]
        t0 = START + rng.uniform(0.5, days - 3.2) * DAY
        t1 = t0 + rng.uniform(3, 10) * HOUR  # found and repaired
        if kind == "terminal":
            t1 = t0 + rng.uniform(1, 3) * DAY  # a loose terminal goes unnoticed for days
        fault_ma = rng.uniform(350, 900)
        hot_c = rng.uniform(30, 60)
        phase = rng.randrange(3)
        spikes = sorted(START + rng.uniform(0, days) * DAY for _ in range(rng.randint(20, 60)))
        over_since: float | None = None
        t = START + rng.uniform(0, POLL_S)
        while t < end:
            hour = ((t - START) / HOUR) % 24
            load = daily_load(hour) * size
            leak = base + 35 * load + (25 if humid[int((t - START) // DAY)] else 0) + rng.gauss(0, 3)
            if any(abs(t - s) < POLL_S / 2 for s in spikes):
                leak += rng.uniform(100, 450)  # a switching transient in the detector's window
            temps = [24 + 20 * load + rng.gauss(0, 0.3) for _ in range(3)]
            smoke = door = False
            if t0 <= t < t1:
                if kind == "insulation":
                    leak += fault_ma * min(1.0, (t - t0) / rng.uniform(60, 600))
                elif kind == "terminal":
                    temps[phase] += hot_c * load
                elif kind == "smoke":
                    smoke = t < t0 + 1800
                elif kind == "door":
                    door = True
            if kind == "terminal" and over_since is None and t0 <= t < t1 and temps[phase] > CABLE_LIMIT_C:
                over_since = t  # from the first time the joint passes its cable's rating until repaired
            if rng.random() < 0.005:
                samples: tuple[Sample, ...] = tuple(Sample(p, None, Quality.BAD) for p in POINTS)
            else:
                samples = (
                    Sample("residual_current", round(max(0.0, leak))),
                    Sample("cable_temp_a", round(temps[0], 1)),
                    Sample("cable_temp_b", round(temps[1], 1)),
                    Sample("cable_temp_c", round(temps[2], 1)),
                    Sample("box_temperature", round(21 + 6 * math.sin(2 * math.pi * (hour - 9) / 24), 1)),
                    Sample("smoke", smoke),
                    Sample("door_open", door),
                )
            batches.append(SampleBatch(dev.id, round(t, 3), samples))
            t += POLL_S
        if over_since is not None:
            episodes.append(Episode(dev.id, ("cable_overheat",), over_since, t1, "loose terminal"))
        if kind == "insulation":
            episodes.append(Episode(dev.id, ("residual_current",), t0, t1, "insulation fault"))
        elif kind == "smoke":
            episodes.append(Episode(dev.id, ("smoke",), t0, t0 + 1800, "meter burning"))
        elif kind == "door":
            episodes.append(Episode(dev.id, ("meter_box_open",), t0, t1, "door left open"))
    batches.sort(key=lambda b: b.ts)
    episodes.sort(key=lambda e: e.start)
    return Scenario("meter-box", devices, batches, episodes, before_s=POLL_S, after_s=60.0)
