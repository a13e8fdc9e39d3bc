"""Five days of RS-485 smoke detectors polled every 30 s, and a fire panel's printer port.

Detectors report smoke, tamper (head off its base) and fault (dirty chamber) bits; a fault bit
flickers for a few seconds now and then (not a fault: the hold filters it); polls fail now and
then (the value arrives unusable). Injected: smoke alarms (burnt food, a real fire), tampering,
lasting faults; the panel reports first fire alarms and resets.
"""

from __future__ import annotations

import random

from citynerve.gateway.api import Quality, Sample, SampleBatch
from citynerve.hil.eval.model import START, Episode, Scenario, device

DAY = 86400
POLL_S = 30.0


def build(seed: int = 7, detectors: int = 12, days: int = 5) -> Scenario:
    """The smoke scenario for the smoke-fire pack."""
    rng = random.Random(seed)
    devices = [
        device(f"smoke-{d:02d}", "modbus-smoke-detector", {"smoke": "", "tamper": "", "fault": ""}, d)
        for d in range(detectors)
    ]
    panel = device("fire-panel", "firepanel-gst", {"fire_alarm": ""}, 99)
    end = START + days * DAY
    batches: list[SampleBatch] = []
    episodes: list[Episode] = []
    for d, dev in enumerate(devices):
        spans: dict[str, list[tuple[float, float]]] = {"smoke": [], "tamper": [], "fault": []}
        if d % 2 == 0:
            t0 = START + rng.uniform(0.3, days - 0.3) * DAY
            spans["smoke"].append((t0, t0 + rng.uniform(60, 900)))
        if d % 4 == 1:
            t0 = START + rng.uniform(0.3, days - 0.3) * DAY
            spans["tamper"].append((t0, t0 + rng.uniform(600, 7200)))
        if d % 4 == 3:
            t0 = START + rng.uniform(0.3, days - 0.5) * DAY
            spans["fault"].append((t0, t0 + rng.uniform(1800, 10800)))
        flickers = [START + rng.uniform(0, days) * DAY for _ in range(rng.randint(1, 4))]
        flickers_to = [f + rng.uniform(5, 35) for f in flickers]
        for point, kind in (("smoke", "smoke"), ("tamper", "tamper"), ("fault", "detector_fault")):
            for a, b in spans[point]:
                # The gateway sees the bit at the next poll; the fault rule then holds 60 s.
                start = a + (60.0 if point == "fault" else 0.0)
                episodes.append(Episode(dev.id, (kind,), start, b, point))
        t = START + rng.uniform(0, POLL_S)
        while t < end:
            if rng.random() < 0.005:  # a failed poll: nothing usable
                s: tuple[Sample, ...] = tuple(
                    Sample(p, None, Quality.BAD) for p in ("smoke", "tamper", "fault")
                )
            else:
                flick = any(f <= t < g for f, g in zip(flickers, flickers_to, strict=True))
                s = (
                    Sample("smoke", int(any(a <= t < b for a, b in spans["smoke"]))),
                    Sample("tamper", int(any(a <= t < b for a, b in spans["tamper"]))),
                    Sample("fault", int(flick or any(a <= t < b for a, b in spans["fault"]))),
                )
            batches.append(SampleBatch(dev.id, round(t, 3), s))
            t += POLL_S + rng.uniform(-0.5, 0.5)
    # The panel's printer port: one record per change (listen-only parser).
    for _ in range(2):
        t0 = START + rng.uniform(0.3, days - 0.3) * DAY
        t1 = t0 + rng.uniform(300, 1800)
        batches.append(SampleBatch(panel.id, t0, (Sample("fire_alarm", True),)))
        batches.append(SampleBatch(panel.id, t1, (Sample("fire_alarm", False),)))
        episodes.append(Episode(panel.id, ("fire",), t0, t1, "first fire alarm"))
    batches.sort(key=lambda b: b.ts)
    episodes.sort(key=lambda e: e.start)
    return Scenario("smoke-fire", [*devices, panel], batches, episodes, before_s=POLL_S, after_s=POLL_S)
