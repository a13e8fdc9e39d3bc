"""The elderly-water pack on households whose everyday life comes from SIMDEUM, a third-party model.

hil/eval/water_situations.py scores the pack's false alarms against normal use from this project's
own model (hil/eval/water.py `_day`). Here each household's normal use is SIMDEUM's instead (KWR's
published stochastic end-use model of residential water demand, the optional extra `simdeum`; see
hil/eval/simdeum_house.py): a senior living alone, one SIMDEUM day per day. Everything else is
water_situations' - the incidents (falls found after 2-60 h, leaks and drips until fixed, taps left
running) and the meter (15-min reads, 1 L resolution, failed reads, outages, rollover, a replaced
meter). Our own model's draws are still made and discarded, so with the same seed the incidents,
the outages and the failed reads are exactly the independent row's: the two rows differ only in
whose life the households lead.

The conversion from SIMDEUM's patterns (L/s, one value a second) to the per-minute litres the
meter model integrates is `add_flows`, plain Python (tested without the extra).
"""

from __future__ import annotations

import random
import statistics
from collections.abc import Callable, Sequence
from datetime import datetime

from citynerve.hil.eval import simdeum_house, water_situations
from citynerve.hil.eval.model import START, TZ, Scenario, is_holiday, is_weekend
from citynerve.hil.eval.simdeum_house import SimulatedHouse
from citynerve.hil.eval.water import DAY

HouseModel = Callable[[Sequence[int], Sequence[tuple[datetime, bool]]], SimulatedHouse]
"""(seed, [(day, is a working day)]) -> a house and its days (default: SIMDEUM's senior alone)."""


def add_flows(flow: list[float], start_min: int, flows: Sequence[tuple[int, float]]) -> None:
    """Add SIMDEUM's flows ((second, L/s): a litre count over that second) to per-minute litres.

    Second s lands in minute `start_min + s // 60`; seconds past the end of `flow` are dropped
    (SIMDEUM's day has 86,401 seconds: the last is the next midnight, the next day's first minute).
    """
    for s, litres_per_s in flows:
        m = start_min + s // 60
        if 0 <= m < len(flow):
            flow[m] += litres_per_s


def calendar(days: int) -> list[tuple[datetime, bool]]:
    """The scenario's days (local midnight) and whether each is a working day."""
    out = []
    for d in range(days):
        ts = START + d * DAY
        working = not (is_weekend(ts) or is_holiday(ts))
        out.append((datetime.fromtimestamp(ts, TZ).replace(tzinfo=None), working))
    return out


def build(
    seed: int = 60,
    households: int = 24,
    days: int = 30,
    house_model: HouseModel | None = None,
) -> Scenario:
    """water_situations' households and incidents, each household's normal use SIMDEUM's.

    Raises simdeum_house.SimdeumMissing when the extra is not installed (and no `house_model` given).
    """
    model: HouseModel = house_model or simdeum_house.senior_alone
    cal = calendar(days)
    houses: dict[int, SimulatedHouse] = {}

    def normal_use(rng: random.Random, h: int, n_days: int) -> list[float]:
        water_situations.own_model(rng, h, n_days)  # drawn and discarded: the same incidents as the row
        house = model((seed, h), cal)
        houses[h] = house
        flow = [0.0] * (n_days * 1440)
        for d, day in enumerate(house.days):
            add_flows(flow, d * 1440, day.flows)
        return flow

    scn = water_situations.build(seed=seed, households=households, days=days, normal_use=normal_use)
    daily = [sum(q for s, q in day.flows if s < 86400) for h in sorted(houses) for day in houses[h].days]
    scn.params.update(
        {
            "normal_use": "SIMDEUM (pysimdeum 1.0.1): one_person house, senior resident",
            "litres_per_day_median": round(statistics.median(daily), 1) if daily else 0.0,
            "litres_per_day_p10_p90": _p10_p90(daily),
            "houses": houses,
        }
    )
    return scn


def _p10_p90(xs: list[float]) -> tuple[float, float]:
    if len(xs) < 2:
        return (0.0, 0.0)
    q = statistics.quantiles(xs, n=10)
    return (round(q[0], 1), round(q[-1], 1))
