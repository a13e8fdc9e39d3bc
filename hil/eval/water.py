"""A month of water use of elderly people living alone, read by CJ/T 188 meters every 15 minutes.

Per household: its own wake-up and bedtime, morning wash, meals, dishes, showers, laundry, toilet
flushes by day and (often) at night, later mornings at weekends and holidays, visitors. Meters
register whole litres, reads fail now and then (single misses, concentrator outages of hours),
a few values arrive garbled. One meter rolls over, one is replaced mid-month, one household is
marked away by its carer for a holiday trip. Injected: no-use episodes (a fall, a hospital stay),
continuous flow (a leaking cistern, a tap left open) and over-use days (a hose left running).
"""

from __future__ import annotations

import itertools
import math
import random

from citynerve.gateway.api import Quality, Sample, SampleBatch
from citynerve.hil.eval.model import START, Episode, Scenario, device, is_holiday, is_weekend

READ_S = 900
MIN = 60
DAY = 86400
NO_USE_L = 10.0  # the published 0.01 m3
NO_USE_S = 12 * 3600
OVER_USE_L = 2000.0
STALE_S = 7200


def _draw(flow: list[float], t_min: int, litres: float, minutes: int) -> None:
    minutes = max(1, minutes)
    for m in range(t_min, min(t_min + minutes, len(flow))):
        flow[m] += litres / minutes


def _day(rng: random.Random, flow: list[float], d: int, p: dict[str, float]) -> None:
    base = d * 1440
    day_ts = START + d * DAY
    late = is_weekend(day_ts) or is_holiday(day_ts)
    wake = min(max(p["wake"] + rng.gauss(0, 20) + (40 if late else 0), 330), 495)  # 5:30 .. 8:15
    sleep = min(max(p["sleep"] + rng.gauss(0, 20), 1245), 1365)  # 20:45 .. 22:45

    def at(minute: float, litres: float, dur: int) -> None:
        _draw(flow, base + int(minute), litres, dur)

    at(wake, 6, 1)  # toilet
    at(wake + rng.uniform(2, 20), rng.uniform(8, 22), int(rng.uniform(4, 12)))  # wash
    at(wake + rng.uniform(30, 60), rng.uniform(2, 5), 2)  # breakfast
    at(rng.gauss(690, 25), rng.uniform(5, 15), int(rng.uniform(5, 15)))  # lunch
    at(rng.gauss(1050, 30), rng.uniform(5, 15), int(rng.uniform(5, 15)))  # dinner
    at(rng.gauss(1120, 25), rng.uniform(5, 15), int(rng.uniform(5, 12)))  # dishes
    if rng.random() < p["shower"]:
        at(rng.uniform(1140, max(1141, sleep - 20)), rng.uniform(30, 60), int(rng.uniform(8, 15)))
    if rng.random() < 0.3:
        at(rng.uniform(wake + 90, 720), rng.uniform(40, 60), int(rng.uniform(30, 50)))  # laundry
    for _ in range(rng.randint(5, 8)):  # older people go more often
        at(rng.uniform(wake + 30, sleep - 10), 6, 1)  # toilet by day
    at(sleep - rng.uniform(0, 10), rng.uniform(6, 10), 2)  # toilet and teeth at bedtime
    for _ in range(rng.randint(8, 16)):  # hands, kettle, face, mopping: small uses all day
        at(rng.uniform(wake + 15, sleep - 5), rng.uniform(0.8, 3.0), 1)
    if rng.random() < 0.7:
        at(rng.uniform(max(wake + 60, sleep - 90), sleep - 5), rng.uniform(3, 6), 3)  # washing feet
    if rng.random() < p["night"]:
        at(rng.uniform(60, 270), 6, 1)  # at night
    if rng.random() < (0.6 if is_holiday(day_ts) else 0.3 if late else 0.05):
        for _ in range(rng.randint(3, 10)):  # visitors
            at(rng.uniform(600, 1200), rng.uniform(5, 25), int(rng.uniform(2, 10)))


def build(seed: int = 6, households: int = 24, days: int = 30) -> Scenario:
    """The water scenario for the elderly-water pack."""
    rng = random.Random(seed)
    points = {"flow_total": "m3"}
    devices = [device(f"water-{h:02d}", "cjt188-water-cold", points, h) for h in range(households)]
    n_min = days * 1440
    batches: list[SampleBatch] = []
    episodes: list[Episode] = []
    away: list[tuple[str, float, float]] = []
    for h, dev in enumerate(devices):
        p = {
            "wake": rng.uniform(360, 450),
            "sleep": rng.uniform(1260, 1335),
            "shower": rng.uniform(0.4, 0.9),
            "night": rng.uniform(0.5, 0.9),
        }
        flow = [0.0] * n_min
        for d in range(days):
            _day(rng, flow, d, p)
        free = list(range(2, days - 3))  # days where one injected episode may start
        kind = ["no_use", "leak", "over_use", "none"][h % 4] if h > 2 else "none"
        if h == 2 and days >= 23:  # marked away by the carer for a holiday trip: no use, no alarm
            a0 = 17 * 1440 + 540
            a1 = a0 + 4 * 1440 + 360
            flow[a0:a1] = [0.0] * (a1 - a0)
            _draw(flow, a1, 15.0, 5)  # back home: toilet, wash, kettle
            away.append((dev.id, START + a0 * MIN - 1800, START + (a1 + 30) * MIN))
        day0 = rng.choice(free)
        if kind == "no_use":
            g0 = day0 * 1440 + int(rng.uniform(480, 1200))
            g1 = g0 + int(rng.uniform(14, 48) * 60)
            flow[g0:g1] = [0.0] * (g1 - g0)
            first = next(m for m in range(g1, n_min) if flow[m] > 0)
            # The published condition on the true flow: under 10 L in the trailing 12 h.
            cum = [0.0, *itertools.accumulate(flow)]
            w = NO_USE_S // MIN
            t_true = next((m for m in range(g0, first) if cum[m] - cum[max(0, m - w)] < NO_USE_L), None)
            if t_true is not None and first - t_true > 30:
                episodes.append(
                    Episode(
                        dev.id,
                        ("water_no_use", "water_no_use_day"),
                        START + t_true * MIN,
                        START + first * MIN,
                        "no use (fall, hospital)",
                    )
                )
        elif kind == "leak":
            l0 = day0 * 1440 + int(rng.uniform(0, 1440))
            l1 = l0 + int(rng.uniform(30, 72) * 60)
            rate = math.exp(rng.uniform(math.log(4), math.log(60))) / 60  # 4..60 L/h, log-uniform
            for m in range(l0, min(l1, n_min)):
                flow[m] += rate
            # The published condition on the true flow: use in each of the last 48 half-hour slots
            # (daytime use before the leak may start the run early).
            slot_use = [sum(flow[k : k + 30]) for k in range(0, n_min, 30)]
            run, t_true = 0, None
            for k, u in enumerate(slot_use):
                run = run + 1 if u > 0.5 else 0
                if run >= 48 and (k + 1) * 30 > l0:
                    t_true = (k + 1) * 30
                    break
            if t_true is not None and t_true < min(l1, n_min):
                episodes.append(
                    Episode(
                        dev.id,
                        ("water_continuous_flow", "water_over_use"),
                        START + t_true * MIN,
                        START + min(l1, n_min) * MIN,
                        f"continuous flow {rate * 60:.0f} L/h",
                    )
                )
        elif kind == "over_use":
            o0 = day0 * 1440 + int(rng.uniform(600, 900))
            dur = int(rng.uniform(120, 360))
            _draw(flow, o0, rng.uniform(2200, 3500), dur)
            day_start = day0 * 1440
            used = list(itertools.accumulate(flow[day_start : day_start + 1440]))
            cross = next(i for i, u in enumerate(used) if u > OVER_USE_L)
            episodes.append(
                Episode(
                    dev.id,
                    ("water_over_use",),
                    START + (day_start + cross + 1) * MIN,
                    START + (day_start + 1440) * MIN,
                    "hose left running",
                )
            )
        batches += _reads(rng, dev.id, flow, h, episodes)
    batches.sort(key=lambda b: b.ts)
    episodes.sort(key=lambda e: e.start)
    return Scenario("elderly-water", devices, batches, episodes, before_s=READ_S, after_s=2 * 3600, away=away)


def _reads(
    rng: random.Random, dev_id: str, flow: list[float], h: int, episodes: list[Episode]
) -> list[SampleBatch]:
    """Meter reads every 15 min: whole litres in m3, misses, outages, garbled values, rollover, swap."""
    total0 = 99_997_000.0 if h == 0 else rng.uniform(100_000, 900_000)  # litres; household 0 rolls over
    replaced_at = 12 * 1440 + 613 if h == 1 else None
    outages: list[tuple[int, int]] = []
    for _ in range(rng.randint(0, 2)):
        o0 = rng.randrange(1440, len(flow) - 1440)
        long_gap = rng.random() < 0.5
        outages.append((o0, o0 + int(rng.uniform(160, 300) if long_gap else rng.uniform(30, 75))))
    cum = list(itertools.accumulate(flow))
    out: list[SampleBatch] = []
    last_ok: float | None = None
    for m in range(0, len(flow), READ_S // MIN):
        ts = START + m * MIN + rng.uniform(0, 20)
        if any(a <= m < b for a, b in outages) or rng.random() < 0.02:
            continue
        litres = total0 + cum[m]
        if replaced_at is not None and m >= replaced_at:
            litres = cum[m] - cum[replaced_at]  # the new meter starts at zero
        if rng.random() < 0.002:  # garbled: the pipeline gets no usable value
            out.append(SampleBatch(dev_id, ts, (Sample("flow_total", None, Quality.BAD),)))
            continue
        if last_ok is not None and ts - last_ok > STALE_S + 120:
            episodes.append(Episode(dev_id, ("meter_silent",), last_ok + STALE_S, ts, "concentrator outage"))
        last_ok = ts
        m3 = (math.floor(litres) % 100_000_000) / 1000.0  # 5-digit m3 register, 1 L resolution
        out.append(SampleBatch(dev_id, ts, (Sample("flow_total", m3),)))
    return out
