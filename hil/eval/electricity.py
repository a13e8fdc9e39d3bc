"""A month of household electricity read from DL/T 645 meters every minute.

Per household: fridge cycling and standby at night, kettle and rice cooker in the morning, cooking,
TV, water heater and air conditioning in the evening (some households run it all night, every
night: their normal), occasional night kettles and late washing cycles. Supply voltage follows the
feeder's daily swing with noise and short motor-start dips; current spikes for seconds when
compressors start. Injected: feeder sags and swells seen by every household, overloads above the
breaker rating, and night heaters far above a household's own pattern (after a week of learning).
"""

from __future__ import annotations

import random
from datetime import datetime

from citynerve.gateway.api import Sample, SampleBatch
from citynerve.hil.eval.model import START, TZ, Episode, Scenario, device

DAY = 86400
READ_S = 60
MIN_PER_DAY = 1440
POINTS = {"current": "A", "voltage": "V", "energy_import": "kWh"}


def _add(load: list[float], m0: float, minutes: float, watts: float) -> None:
    for m in range(max(0, int(m0)), min(len(load), int(m0 + max(1, minutes)))):
        load[m] += watts


def build(seed: int = 5, households: int = 8, days: int = 30) -> Scenario:
    """The electricity scenario for the electricity pack."""
    rng = random.Random(seed)
    devices = [device(f"elec-{h:02d}", "dlt645-single-phase", POINTS, h) for h in range(households)]
    n = days * MIN_PER_DAY
    # The feeder: one voltage for every household on it (sags and swells are not per house).
    volts = [0.0] * n
    for m in range(n):
        hour = (m % MIN_PER_DAY) / 60
        volts[m] = 222.0 - (4.0 if 18 <= hour < 22 else 0.0) + (3.0 if hour < 6 else 0.0)
    feeder: list[tuple[int, int, float]] = []
    for _ in range(4):
        m0 = rng.randrange(MIN_PER_DAY, n - MIN_PER_DAY)
        dur = int(rng.uniform(10, 90))
        level = rng.uniform(186, 194) if rng.random() < 0.5 else rng.uniform(238, 245)
        feeder.append((m0, m0 + dur, level))
        for m in range(m0, m0 + dur):
            volts[m] = level
    episodes: list[Episode] = []
    batches: list[SampleBatch] = []
    for h, dev in enumerate(devices):
        load = [0.0] * n
        night_ac = h % 4 == 0
        for d in range(days):
            base = d * MIN_PER_DAY
            for m in range(base, base + MIN_PER_DAY):
                load[m] += 30 + (110 if (m // 20) % 2 == 0 else 0)  # standby, fridge cycling
            wake = base + rng.gauss(400, 25)
            _add(load, wake + 5, 3, 1800)  # kettle
            _add(load, wake + 10, 30, 700)  # rice cooker
            _add(load, base + rng.gauss(700, 20), 5, 1000)  # microwave
            _add(load, base + rng.gauss(1050, 20), rng.uniform(20, 40), 2000)  # induction cooker
            _add(load, base + 1110, rng.uniform(120, 200), 150)  # TV, lights
            _add(load, base + rng.uniform(1140, 1290), rng.uniform(30, 60), 2500)  # water heater
            if night_ac:
                _add(load, base + 1290, 540, rng.uniform(500, 800))  # AC 21:30 to 06:30, every night
            elif rng.random() < 0.5:
                _add(load, base + 1200, rng.uniform(60, 200), 900)  # AC in the evening
            if rng.random() < 0.1:
                _add(load, base + rng.uniform(0, 300), 3, 1800)  # kettle at night
            if h % 3 == 1 and rng.random() < 0.15:
                _add(load, base + rng.uniform(0, 120), 60, 400)  # washing machine on a timer
            if rng.random() < 0.07:
                _add(load, base + rng.uniform(1100, 1250), rng.uniform(3, 20), 9000 + rng.uniform(0, 3000))
        over: list[tuple[int, int]] = []
        if h % 2 == 0:  # overload above the 40 A breaker rating for minutes, in the evening
            m0 = rng.randrange(1, days - 1) * MIN_PER_DAY + int(rng.uniform(1080, 1320))
            dur = int(rng.uniform(3, 20))
            _add(load, m0, dur, rng.uniform(9500, 12000))
            over.append((m0, m0 + dur))
        heaters: list[tuple[int, int]] = []
        if h % 4 != 3:
            for d in rng.sample(range(9, days - 1), rng.randint(1, 2)):  # on different nights
                m0 = d * MIN_PER_DAY + int(rng.uniform(0, 240))
                m1 = min(m0 + int(rng.uniform(60, 180)), d * MIN_PER_DAY + 360)
                _add(load, m0, m1 - m0, rng.uniform(1500, 2500))
                heaters.append((m0, m1))
        inrush = {rng.randrange(n) for _ in range(days * 2)}
        dips = {rng.randrange(n) for _ in range(days)}
        energy = rng.uniform(1000, 20000)
        for m in range(n):
            v = volts[m] + rng.gauss(0, 0.8) - (rng.uniform(25, 35) if m in dips else 0.0)
            amps = load[m] / volts[m] + rng.gauss(0, 0.05) + (rng.uniform(5, 15) if m in inrush else 0.0)
            energy += load[m] / 60_000
            ts = START + m * 60 + rng.uniform(0, 3)
            batches.append(
                SampleBatch(
                    dev.id,
                    ts,
                    (
                        Sample("current", round(max(0.0, amps), 2)),
                        Sample("voltage", round(v, 1)),
                        Sample("energy_import", round(energy, 2)),
                    ),
                )
            )
        # Labels: the rule's own definition (held a minute) from the true load and voltage.
        kinds = ("over_current",)
        for m in range(1, n):
            if load[m] / volts[m] > 40.0 and load[m - 1] / volts[m - 1] <= 40.0:
                m1 = next((k for k in range(m, n) if load[k] / volts[k] <= 40.0), n)
                if m1 - m >= 2:  # above the limit for at least two reads: held a minute
                    episodes.append(Episode(dev.id, kinds, START + m * 60 + 60, START + m1 * 60, "overload"))
        for m0, m1, level in feeder:
            what = "sag" if level < 220 else "swell"
            episodes.append(
                Episode(dev.id, ("voltage_out_of_band",), START + m0 * 60 + 60, START + m1 * 60, what)
            )
        for m0, m1 in heaters:
            # Judged when the first half-hour slot with the heater closes; the label starts with the heater.
            episodes.append(
                Episode(dev.id, ("night_consumption",), START + m0 * 60, START + m1 * 60, "heater")
            )
    batches.sort(key=lambda b: b.ts)
    episodes.sort(key=lambda e: e.start)
    return Scenario("electricity", devices, batches, episodes, before_s=READ_S, after_s=3600)


def local_hour(ts: float) -> float:
    d = datetime.fromtimestamp(ts, TZ)
    return d.hour + d.minute / 60
