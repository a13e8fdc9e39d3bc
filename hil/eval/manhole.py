"""Ten days of manhole-cover nodes on a busy street: vehicles, openings, storms, gas, batteries.

A node (BTHome over BLE) sends a heartbeat every 10 minutes with tilt, battery, distance to the
water and gas readings; its accelerometer wakes it on movement and it then sends tilt at 5 Hz for
two seconds, and every 10 s while the cover stays tilted. Passing vehicles rock a cover for well
under a second (heavy trucks up to ~25 deg); real openings ramp over one to three seconds to 15-45
deg (displaced) or 60-120 deg (lifted) and stay for minutes. Storms raise the water; a sewer
releases methane or hydrogen sulphide; one battery runs down; one node goes silent for hours.
"""

from __future__ import annotations

import math
import random

from citynerve.gateway.api import Sample, SampleBatch
from citynerve.hil.eval.model import START, Episode, Scenario, device

DAY = 86400
HEARTBEAT_S = 600
POINTS = {"tilt": "deg", "battery": "%", "water_level": "mm", "ch4": "%LEL", "h2s": "ppm"}


class _Cover:
    def __init__(self, rng: random.Random, days: int) -> None:
        self.rng = rng
        self.base = rng.uniform(0.5, 3.0)
        self.battery0 = rng.uniform(45, 100)
        self.drain = rng.uniform(0.05, 0.2)  # % per day
        self.dist = rng.uniform(1.5, 2.5)
        self.storms: list[tuple[float, float, float, float, float]] = []  # t0, t_low, t_rise, t1, low
        self.gas: list[
            tuple[str, float, float, float, float, float]
        ] = []  # point, t0, t_top, t_fall, t1, peak
        self.tilts: list[tuple[float, float, float, float]] = []  # t0 (start of ramp), ramp_s, hold_s, angle

    def battery(self, t: float) -> float:
        return self.battery0 - self.drain * (t - START) / DAY

    def distance(self, t: float) -> float:
        for t0, tl, tr, t1, low in self.storms:
            if t0 <= t < t1:
                if t < tl:
                    return self.dist + (low - self.dist) * (t - t0) / (tl - t0)
                if t < tr:
                    return low
                return low + (self.dist - low) * (t - tr) / (t1 - tr)
        return self.dist

    def gas_level(self, point: str, t: float) -> float:
        for p, t0, tt, tf, t1, peak in self.gas:
            if p == point and t0 <= t < t1:
                if t < tt:
                    return peak * (t - t0) / (tt - t0)
                if t < tf:
                    return peak
                return peak * (t1 - t) / (t1 - tf)
        return 0.0

    def tilt(self, t: float) -> float:
        for t0, ramp, hold, angle in self.tilts:
            if t0 <= t < t0 + 2 * ramp + hold:
                if t < t0 + ramp:
                    return self.base + (angle - self.base) * (t - t0) / ramp
                if t < t0 + ramp + hold:
                    return angle
                return angle + (self.base - angle) * (t - t0 - ramp - hold) / ramp
        return self.base


def _crossing(f: object, lo: float, hi: float, above: float, rising: bool = True) -> float:
    """First time in [lo, hi] where f(t) passes `above` (0.1 s resolution)."""
    fn = f  # type: ignore[assignment]
    t = lo
    while t <= hi:
        v = fn(t)  # type: ignore[operator]
        if (v > above) if rising else (v < above):
            return t
        t += 0.1
    return math.inf


def build(seed: int = 8, covers: int = 10, days: int = 10) -> Scenario:
    """The manhole scenario for the manhole pack."""
    rng = random.Random(seed)
    devices = [device(f"cover-{c:02d}", "bthome-manhole-cover", POINTS, c, "0101") for c in range(covers)]
    batches: list[SampleBatch] = []
    episodes: list[Episode] = []
    vibration: list[tuple[str, float, float]] = []
    end = START + days * DAY
    for c, dev in enumerate(devices):
        cv = _Cover(rng, days)
        if c == 3:
            cv.battery0, cv.drain = 22.0, 1.0  # crosses 20 % on day 2
        for _ in range(rng.randint(1, 2)):  # openings
            t0 = START + rng.uniform(0.5, days - 0.5) * DAY
            lifted = rng.random() < 0.5
            angle = rng.uniform(60, 120) if lifted else rng.uniform(15, 45)
            cv.tilts.append((t0, rng.uniform(1.0, 3.0), rng.uniform(120, 1800), angle))
        if c in (1, 5, 8):  # storm
            t0 = START + rng.uniform(1, days - 1) * DAY
            tl = t0 + rng.uniform(1, 3) * 3600
            tr = tl + rng.uniform(1, 4) * 3600
            cv.storms.append((t0, tl, tr, tr + rng.uniform(1, 3) * 3600, rng.uniform(0.2, 0.4)))
        if c in (2, 6):
            t0 = START + rng.uniform(1, days - 1) * DAY
            tt = t0 + rng.uniform(5, 20) * 60
            tf = tt + rng.uniform(20, 60) * 60
            point, peak = ("ch4", rng.uniform(25, 50)) if c == 2 else ("h2s", rng.uniform(15, 40))
            cv.gas.append((point, t0, tt, tf, tf + rng.uniform(5, 20) * 60, peak))
        silent = (START + 4.3 * DAY, START + 4.3 * DAY + 5 * 3600) if c == 9 else None

        times: set[float] = set()
        t = START + rng.uniform(0, HEARTBEAT_S)
        while t < end:
            times.add(round(t, 2))
            t += HEARTBEAT_S + rng.uniform(-5, 5)
        for t0, ramp, hold, _ in cv.tilts:  # movement wakes the node: 5 Hz for the ramps, 10 s while open
            for k in range(int((ramp + 2) * 5)):
                times.add(round(t0 + k * 0.2, 2))
                times.add(round(t0 + ramp + hold + k * 0.2, 2))
            k = 0
            while k * 10 < hold:
                times.add(round(t0 + ramp + k * 10, 2))
                k += 1
        for p, t0, _, _, t1, _ in cv.gas:  # gas above 5 %LEL / ppm: the node reports every 30 s
            tt = t0
            while tt < t1:
                if cv.gas_level(p, tt) > 5:
                    times.add(round(tt, 2))
                tt += 30
        passes: list[tuple[float, float, float, float]] = []  # t, amplitude, width, second axle delay
        per_day = rng.uniform(50, 300)
        for d in range(days):
            for _ in range(int(per_day)):
                tp = START + d * DAY + rng.uniform(6, 23) * 3600
                amp = min(30.0, math.exp(rng.gauss(math.log(4), 0.8)))
                passes.append((tp, amp, rng.uniform(0.15, 0.4), rng.uniform(0.5, 1.2)))
        hb = set(times)
        vib_times: dict[float, float] = {}
        for tp, amp, width, axle in passes:
            vibration.append((dev.id, tp, tp + 2.0))
            for k in range(15):  # the node samples until the cover is still again
                tk = round(tp + k * 0.2, 2)
                bump = amp * math.exp(-(((tk - tp - 0.2) / width) ** 2))
                bump += 0.7 * amp * math.exp(-(((tk - tp - 0.2 - axle) / width) ** 2))
                vib_times[tk] = max(vib_times.get(tk, 0.0), bump)
        for tk in sorted(hb | set(vib_times)):
            if silent and silent[0] <= tk < silent[1]:
                continue
            tilt = cv.tilt(tk) + vib_times.get(tk, 0.0) + rng.gauss(0, 0.3)
            if tk in hb and tk not in vib_times and not _moving(cv, tk):
                s: tuple[Sample, ...] = (
                    Sample("tilt", round(tilt, 2)),
                    Sample("battery", round(cv.battery(tk) + rng.gauss(0, 0.3), 1)),
                    Sample("water_level", round(1000 * (cv.distance(tk) + rng.gauss(0, 0.02)))),
                    Sample("ch4", round(max(0.0, cv.gas_level("ch4", tk) + abs(rng.gauss(0, 0.8))), 1)),
                    Sample("h2s", round(max(0.0, cv.gas_level("h2s", tk) + abs(rng.gauss(0, 0.3))), 1)),
                )
            else:
                s = (Sample("tilt", round(tilt, 2)),)
            batches.append(SampleBatch(dev.id, tk, s))
        episodes += _labels(cv, dev.id, end)
        if silent:
            last = max(t for t in hb | set(vib_times) if t < silent[0])
            nxt = min(t for t in hb | set(vib_times) if t >= silent[1])
            episodes.append(Episode(dev.id, ("node_offline",), last + 3600, nxt, "node silent"))
    batches.sort(key=lambda b: b.ts)
    episodes.sort(key=lambda e: e.start)
    return Scenario("manhole", devices, batches, episodes, before_s=3.0, after_s=60.0, vibration=vibration)


def _moving(cv: _Cover, t: float) -> bool:
    return any(t0 <= t < t0 + 2 * ramp + hold + 2 for t0, ramp, hold, _ in cv.tilts)


def _labels(cv: _Cover, dev_id: str, end: float) -> list[Episode]:
    out: list[Episode] = []
    for t0, ramp, hold, angle in cv.tilts:
        cross = _crossing(cv.tilt, t0, t0 + ramp, 10.0)
        out.append(
            Episode(
                dev_id,
                ("manhole_tilt", "manhole_open", "manhole_ajar"),
                cross + 2.0,
                t0 + ramp + hold + ramp,
                f"{angle:.0f} deg",
            )
        )
    for t0, tl, tr, t1, _ in cv.storms:
        down = _crossing(cv.distance, t0, tl, 0.5, rising=False)
        up = _crossing(cv.distance, tr, t1, 0.5)
        # Seen at the next heartbeat, then held 30 s: the gateway cannot know earlier.
        out.append(Episode(dev_id, ("manhole_high_water",), down, up, "storm", slack_s=300))
    for p, t0, tt, tf, t1, _ in cv.gas:
        limit = 20.0 if p == "ch4" else 7.0  # the pack's published lines
        up = _crossing(lambda t, p=p: cv.gas_level(p, t), t0, tt, limit)
        down = _crossing(lambda t, p=p: cv.gas_level(p, t), tf, t1, limit, rising=False)
        out.append(Episode(dev_id, ("manhole_gas",), up + 5.0, down, p, slack_s=60))
        if p == "ch4":  # the warning stage's published line (10 %LEL, issue 18)
            up = _crossing(lambda t: cv.gas_level("ch4", t), t0, tt, 10.0)
            down = _crossing(lambda t: cv.gas_level("ch4", t), tf, t1, 10.0, rising=False)
            out.append(Episode(dev_id, ("manhole_gas_warning",), up + 5.0, down, "ch4 warning", slack_s=60))
    if cv.battery(end) < 20:
        t20 = START + (cv.battery0 - 20) / cv.drain * DAY
        # Reading noise (0.3 %) against a drain of 1 %/day blurs the crossing by half a day.
        out.append(Episode(dev_id, ("low_battery",), t20, end, "battery run down", slack_s=43200))
    return out
