"""The elderly-water pack on situations, not on its own rules (issue 18).

The same households as hil/eval/water.py (their days, holidays, meter reads, outages, rollover and
replacement), but the incidents are drawn from what happens to people and pipes, with durations
that know nothing of the pack's 12 h / 24 h / 2 m3:

- a resident falls or falls ill at home and uses no water until found: found after a log-normal
  time (median 10 h, 2-60 h), by a carer, a neighbour or a relative's call;
- a leak starts (a toilet flapper or a pipe joint, 2-40 L/h log-uniform; a dripping tap, 0.3-2 L/h)
  and runs until someone fixes it (1-10 days);
- a tap or hose is left running (6-15 L/min for 20 min-5 h).

Each incident is an episode from the moment it starts until it ends. A 12 h no-use rule cannot see
a resident found after 8 h, and a drip below the meter's 1 L per half-hour cannot be seen at all:
those are misses, on purpose.
"""

from __future__ import annotations

import math
import random
from collections.abc import Callable

from citynerve.gateway.api import SampleBatch
from citynerve.hil.eval.model import START, Episode, Scenario, device
from citynerve.hil.eval.water import MIN, READ_S, STALE_S, _day, _draw, _reads

NormalUse = Callable[[random.Random, int, int], list[float]]
"""(rng, household, days) -> the household's normal use, litres per minute for `days` days."""


def own_model(rng: random.Random, household: int, days: int) -> list[float]:
    """Normal use from this project's model of an elderly resident (hil/eval/water.py `_day`)."""
    p = {
        "wake": rng.uniform(360, 450),
        "sleep": rng.uniform(1260, 1335),
        "shower": rng.uniform(0.4, 0.9),
        "night": rng.uniform(0.5, 0.9),
    }
    flow = [0.0] * (days * 1440)
    for d in range(days):
        _day(rng, flow, d, p)
    return flow


def build(
    seed: int = 60, households: int = 24, days: int = 30, normal_use: NormalUse = own_model
) -> Scenario:
    """The situation-labelled water scenario for the elderly-water pack.

    `normal_use` gives each household's everyday use (default: our own model; hil/eval/water_simdeum.py
    passes a third-party one); the incidents and the meter reads are drawn the same way for either.
    """
    rng = random.Random(seed)
    devices = [
        device(f"water-{h:02d}", "cjt188-water-cold", {"flow_total": "m3"}, h) for h in range(households)
    ]
    n_min = days * 1440
    batches: list[SampleBatch] = []
    episodes: list[Episode] = []
    for h, dev in enumerate(devices):
        flow = normal_use(rng, h, days)
        if len(flow) != n_min:
            raise ValueError(f"normal use of household {h}: {len(flow)} minutes, not {n_min}")
        incident = ("fall", "leak", "tap", "none")[h % 4] if h > 1 else "none"
        t0 = int(rng.uniform(2, days - 12) * 1440)
        if incident == "fall":
            found = t0 + int(min(60.0, max(2.0, math.exp(rng.gauss(math.log(10), 0.7)))) * 60)
            flow[t0:found] = [0.0] * (found - t0)
            _draw(flow, found, 20.0, 10)  # the carer / paramedics use the tap
            episodes.append(
                Episode(
                    dev.id,
                    ("water_no_use", "water_no_use_day"),
                    START + t0 * MIN,
                    START + found * MIN,
                    f"fell, found after {(found - t0) / 60:.0f} h",
                )
            )
        elif incident == "leak":
            drip = rng.random() < 0.3
            lo, hi = (0.3, 2.0) if drip else (2.0, 40.0)
            rate = math.exp(rng.uniform(math.log(lo), math.log(hi))) / 60  # L/min
            t1 = min(n_min, t0 + int(rng.uniform(1, 10) * 1440))
            for m in range(t0, t1):
                flow[m] += rate
            episodes.append(
                Episode(
                    dev.id,
                    ("water_continuous_flow", "water_over_use"),
                    START + t0 * MIN,
                    START + t1 * MIN,
                    f"{'dripping tap' if drip else 'leak'} {rate * 60:.1f} L/h",
                )
            )
        elif incident == "tap":
            dur = int(rng.uniform(20, 300))
            _draw(flow, t0, rng.uniform(6, 15) * dur, dur)
            episodes.append(
                Episode(
                    dev.id,
                    ("water_over_use", "water_continuous_flow"),
                    START + t0 * MIN,
                    START + (t0 + dur) * MIN,
                    f"tap left running {dur} min",
                )
            )
        batches += _reads(rng, dev.id, flow, h, episodes)
    # The read helper labels a concentrator outage from when the pack's 2 h has passed; the
    # situation starts with the last read that arrived.
    episodes = [
        Episode(e.device_id, e.kinds, e.start - STALE_S, e.end, e.what) if e.kinds == ("meter_silent",) else e
        for e in episodes
    ]
    batches.sort(key=lambda b: b.ts)
    episodes.sort(key=lambda e: e.start)
    return Scenario("elderly-water", devices, batches, episodes, before_s=READ_S, after_s=2 * 3600)
