"""A week of street lamps on single-lamp controllers polled every 60 s (issue 18).

Lamps switch on at dusk (18:20-18:40) and off at dawn (05:40-06:00). Half are LED (lit within 2 s),
half high-pressure sodium (HPS: the ignitor strikes them within 2-10 s, after which they draw current
while they warm up; the controller's open-circuit bit is set only until the strike). Every third
controller is an older model without open-circuit detection: its fault bit never sets, only the
relay and the current tell. The supply dips towards 200 V at the evening peak. Polls fail 1 % of
the time.

Incidents, the ground truth: a lamp fails (an LED driver or an HPS burner dies at some time of the
night) and stays dark until the crew replaces it 1-4 days later - from the failure to the repair,
seen by the controller's bit (lamp_out) or by the gateway's relay-on-no-current check
(lamp_no_current), either is a detection; a feeder fault drops the supply below 190 V for 10-60 min.
"""

from __future__ import annotations

import random

from citynerve.gateway.api import Quality, Sample, SampleBatch
from citynerve.hil.eval.model import START, Episode, Scenario, device

DAY = 86400
HOUR = 3600
POLL_S = 60.0
POINTS = {
    "lamp_on": "",
    "current": "A",
    "voltage": "V",
    "lamp_fault": "",
    "driver_fault": "",
    "relay_fault": "",
}


def build(seed: int = 227, lamps: int = 20, days: int = 7) -> Scenario:
    """The street-lamp scenario for the street-lamp pack."""
    rng = random.Random(seed)
    devices = [device(f"lamp-{i:02d}", "modbus-lamp-controller", POINTS, i, "0706") for i in range(lamps)]
    on_at = [rng.uniform(18.33, 18.67) for _ in range(days + 1)]
    off_at = [rng.uniform(5.67, 6.0) for _ in range(days + 1)]
    feeder = (START + rng.uniform(1, days - 1) * DAY, rng.uniform(600, 3600))
    batches: list[SampleBatch] = []
    episodes: list[Episode] = []
    end = START + days * DAY
    for i, dev in enumerate(devices):
        hps = i % 2 == 1
        diagnoses = i % 3 != 0  # the older controllers have no open-circuit detection
        warm_s = rng.uniform(2, 10) if hps else 2.0
        fail = None
        if i % 4 == 0:
            d = rng.randrange(0, days - 2)
            fail = START + d * DAY + (on_at[d] + rng.uniform(0.5, 10.0)) * HOUR
            fixed = fail + rng.uniform(1, 4) * DAY
            kinds = ("lamp_out", "lamp_no_current")
            episodes.append(Episode(dev.id, kinds, fail, min(fixed, end), "lamp failed"))
        if i < lamps // 2:  # the feeder with the fault feeds half the street
            episodes.append(
                Episode(dev.id, ("supply_voltage",), feeder[0], feeder[0] + feeder[1], "feeder fault")
            )
        t = START + rng.uniform(0, POLL_S)
        while t < end:
            d = int((t - START) // DAY)
            hour = ((t - START) / HOUR) % 24
            on = hour >= on_at[d] or hour < off_at[d]
            since_on = ((hour - on_at[d]) % 24) * HOUR
            dead = fail is not None and fail <= t < fixed
            lit = on and not dead and since_on >= warm_s
            current = (0.45 if not hps else 1.0) + rng.gauss(0, 0.01) if lit else abs(rng.gauss(0.002, 0.001))
            volts = 229 - 25 * max(0.0, 1 - abs(hour - 19.5) / 1.5) * 0.3 + rng.gauss(0, 1.0)
            if feeder[0] <= t < feeder[0] + feeder[1] and i < lamps // 2:
                volts = rng.uniform(175, 189)
            if rng.random() < 0.01:
                samples: tuple[Sample, ...] = tuple(Sample(p, None, Quality.BAD) for p in POINTS)
            else:
                samples = (
                    Sample("lamp_on", on),
                    Sample("current", round(current, 3)),
                    Sample("voltage", round(volts, 1)),
                    Sample("lamp_fault", diagnoses and on and not lit),  # relay on, no current
                    Sample("driver_fault", False),
                    Sample("relay_fault", False),
                )
            batches.append(SampleBatch(dev.id, round(t, 3), samples))
            t += POLL_S
    batches.sort(key=lambda b: b.ts)
    episodes.sort(key=lambda e: e.start)
    return Scenario("street-lamp", devices, batches, episodes, before_s=POLL_S, after_s=POLL_S)
