"""Days the clock changes (DST): times of day are read off the local clock, not a day scaled to 24 h.

On the 23 h day the skipped hour never reads; on the 25 h day the repeated hour reads twice. A time
of day taken as a moment (a household's `up_by`, the night's start and end) is the first instant the
clock reads it or later: in the skipped hour, the first instant after it; a repeated one, its first
pass (gateway/rules/meter.py LocalDays). Europe/Zurich: 2026-03-29 (02:00 -> 03:00, 23 h) and
2026-10-25 (03:00 -> 02:00, 25 h).
"""

from __future__ import annotations

from datetime import datetime
from zoneinfo import ZoneInfo

import pytest

from citynerve.gateway.api import Event, EventState, Quality, Reading
from citynerve.gateway.rules import RuleEngine, RulesConfig
from citynerve.gateway.rules.conditions import AnomalyCondition
from citynerve.gateway.rules.config import AnomalyRule
from citynerve.gateway.rules.meter import LocalDays
from tests.rules.conftest import dev

ZRH = ZoneInfo("Europe/Zurich")
BED, WM = "bed-1", "wm-1"


def at(mo: int, d: int, hh: int, mm: int, fold: int = 0) -> float:
    return datetime(2026, mo, d, hh, mm, tzinfo=ZRH, fold=fold).timestamp()


def shown(ts: float) -> str:
    return datetime.fromtimestamp(ts, ZRH).strftime("%H:%M %Z")


# -- LocalDays ---------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("ts", "hour"),
    [
        (at(3, 29, 1, 30), 1.5),
        (at(3, 29, 3, 0), 3.0),  # the first instant after the gap
        (at(3, 29, 6, 30), 6.5),
        (at(10, 25, 2, 30), 2.5),  # summer time
        (at(10, 25, 2, 30, fold=1), 2.5),  # the repeated hour, winter time
        (at(10, 25, 5, 30), 5.5),
        (at(10, 25, 23, 59), 23 + 59 / 60),
        (at(3, 22, 6, 30), 6.5),  # an ordinary day
    ],
)
def test_hour_reads_the_local_clock(ts: float, hour: float) -> None:
    assert LocalDays("Europe/Zurich").hour(ts) == pytest.approx(hour)


@pytest.mark.parametrize(
    ("day", "hhmm", "want"),
    [
        ((3, 29), "08:30", "08:30 CEST"),
        ((3, 29), "02:30", "03:00 CEST"),  # skipped: the first instant after the gap
        ((3, 29), "01:59", "01:59 CET"),
        ((10, 25), "08:30", "08:30 CET"),
        ((10, 25), "02:30", "02:30 CEST"),  # repeated: the first pass
        ((10, 25), "03:00", "03:00 CET"),
    ],
)
def test_a_time_of_day_as_a_moment(day: tuple[int, int], hhmm: str, want: str) -> None:
    h, m = (int(x) for x in hhmm.split(":"))
    days = LocalDays("Europe/Zurich")
    noon = at(*day, 12, 0)
    assert shown(days.at(noon, h * 60 + m)) == want
    # `last`: today's once it has come, else yesterday's (across the day the clock changed)
    assert days.last(noon, h * 60 + m) == days.at(noon, h * 60 + m)
    next_day = at(day[0], day[1] + 1, 0, 30)
    assert days.last(next_day, h * 60 + m) == days.at(noon, h * 60 + m)


def test_a_repeated_time_stays_passed_through_the_repeated_hour() -> None:
    days = LocalDays("Europe/Zurich")
    deadline = days.at(at(10, 25, 12, 0), 2 * 60 + 30)
    assert at(10, 25, 2, 15, fold=1) > deadline  # 02:15 winter time comes after 02:30 summer time


# -- the anomaly rule's hours and the electricity pack ----------------------------------------------


@pytest.mark.parametrize(
    ("ts", "inside"),
    [
        (at(3, 29, 6, 30), False),  # 23 h day: 06:30 CEST is not in 0-6 (scaled: 5.96)
        (at(10, 25, 5, 30), True),  # 25 h day: 05:30 CET is in 0-6 (scaled: 6.24)
        (at(3, 22, 6, 30), False),
    ],
    ids=["dst-starts", "dst-ends", "ordinary"],
)
def test_anomaly_hours_are_local_clock_hours(ts: float, inside: bool) -> None:
    rule = AnomalyRule.model_validate(
        {"id": "n", "kind": "anomaly", "point": "p", "hours": [0, 6], "tz": "Europe/Zurich"}
    )
    assert AnomalyCondition(rule)._in_hours(ts) is inside


def test_the_electricity_packs_night_is_in_the_sites_zone() -> None:
    def night(params: dict[str, object]) -> AnomalyRule:
        cfg = RulesConfig.model_validate({"packs": [{"name": "electricity", "params": params}]})
        rule = next(r for r in cfg.packs[0].rules if r.id == "electricity.night_use")
        assert isinstance(rule, AnomalyRule)
        return rule

    assert night({}).tz == "Asia/Shanghai"
    assert night({"tz": "Europe/Zurich"}).tz == "Europe/Zurich"


# -- the household's times ---------------------------------------------------------------------------


def engine() -> RuleEngine:
    cfg = RulesConfig.model_validate(
        {"households": [{"id": "1", "bed": BED, "water": WM, "up_by": "08:30", "tz": "Europe/Zurich"}]}
    )
    devices = [
        dev(BED, points=("in_bed",), profile="bthome-bed-occupancy"),
        dev(WM, points=("flow_total",), profile="cjt188-water-cold"),
    ]
    return RuleEngine(cfg, devices)


def live(e: RuleEngine, start: float, until: float, up_at: float | None) -> list[tuple[str, EventState]]:
    """In bed from `start`; out of bed (and 30 L of water) at `up_at`. Bed heartbeat 600 s, meter
    every 900 s, a tick every 60 s. Returns (local time, state) of the household's events."""
    out: list[Event] = []
    t, last_bed, state = start, -1e18, None
    while t <= until:
        in_bed = up_at is None or t < up_at
        if in_bed != state or t - last_bed >= 600:
            out += e.evaluate([Reading(BED, "in_bed", in_bed, "", t, Quality.GOOD)])
            state, last_bed = in_bed, t
        if int(t - start) % 900 == 0:
            litres = 0 if (up_at is None or t < up_at + 600) else 30
            out += e.evaluate([Reading(WM, "flow_total", 512.0 + litres / 1000, "", t, Quality.GOOD)])
        out += e.tick(t)
        t += 60
    return [(shown(ev.ts), ev.state) for ev in out if ev.rule == "household.1"]


@pytest.mark.parametrize(
    "day", [(10, 18), (10, 25), (3, 29)], ids=["ordinary", "dst-ends-25h", "dst-starts-23h"]
)
def test_up_at_08_00_is_never_not_up_by_08_30(day: tuple[int, int]) -> None:
    """Before: on the 25 h day "not up" was raised at 07:51, the resident still asleep."""
    mo, d = day
    got = live(engine(), at(mo, d - 1, 21, 30), at(mo, d, 10, 0), up_at=at(mo, d, 8, 0))
    assert got == []


@pytest.mark.parametrize(
    "day", [(3, 22), (3, 29), (10, 25), (10, 26)], ids=["ordinary", "23h", "25h", "after-25h"]
)
def test_never_up_is_raised_at_08_30(day: tuple[int, int]) -> None:
    """Before: on the 23 h day "not up" was raised at 09:08, 38 min late."""
    mo, d = day
    got = live(engine(), at(mo, d - 1, 21, 30), at(mo, d, 10, 0), up_at=None)
    assert [g for g in got if g[1] is EventState.RAISED][:1] == [(shown(at(mo, d, 8, 30)), EventState.RAISED)]
