"""Rules whose state holds wall times or absolute bin/slot indexes (a daily routine, a sliding window of
use, slots in a row, a learned profile of slot use), on the running gateway's time: a step of the wall
clock counts neither as time passing nor as time going back."""

from __future__ import annotations

from typing import Any

import pytest

from citynerve.gateway.api import EventState
from citynerve.gateway.rules import RuleEngine
from tests.clock.clocks import SteppedClock
from tests.clock.test_rules_clock import live_engine, reading

DAY = 86400.0
R, C = EventState.RAISED, EventState.CLEARED


def run(e: RuleEngine, clock: SteppedClock, seconds: int, step: int = 1) -> list[Any]:
    out: list[Any] = []
    for _ in range(seconds // step):
        clock.advance(step)
        out += e.tick(e.now())
    return out


@pytest.mark.parametrize("step", [0.0, 3600.0])
def test_routine_a_forward_step_is_no_time_out_of_bed(step: float) -> None:
    clock = SteppedClock()  # Monday 22:13 +08:00: night
    rule = {"id": "back", "kind": "routine", "point": "value", "mode": "back_within", "away_s": 2400,
            "stale_s": 1800}  # fmt: skip
    e = live_engine([rule], clock)
    e.tick(e.now())
    e.evaluate([reading(clock, True)])  # in bed
    run(e, clock, 60)
    e.evaluate([reading(clock, False)])  # up at night
    out = run(e, clock, 300)
    clock.step(step)
    out += run(e, clock, 60)
    out += e.evaluate([reading(clock, False)])  # 6 min up: far from 40
    out += run(e, clock, 10)
    assert out == []


@pytest.mark.parametrize("step", [DAY, -3 * 3600.0])
def test_sliding_window_keeps_its_contents_across_a_step(step: float) -> None:
    clock = SteppedClock()
    e = live_engine(
        [{"id": "nouse", "kind": "consumption", "point": "value", "window": "sliding", "window_s": 43200,
          "bin_s": 900, "below": 0.01},
         {"id": "high", "kind": "consumption", "point": "value", "window": "sliding", "window_s": 3600,
          "bin_s": 300, "above": 0.5}],
        clock,
    )  # fmt: skip
    total, out = 100.0, []
    for i in range(13 * 6):  # 13 h, a reading every 10 min; 0.05 used once 30 min before the end
        total += 0.05 if i == 75 else 0.0
        out += e.evaluate([reading(clock, total)])
        out += run(e, clock, 600, step=60)
    assert [(x.rule, x.state) for x in out] == [("nouse", R), ("nouse", C)]
    clock.step(step)
    for _ in range(3):  # 30 more minutes, the meter unchanged, then a steady 0.2 m3/h for 3 h
        out = e.evaluate([reading(clock, total)]) + run(e, clock, 600, step=60)
        assert out == []  # a forward step emptied the window: "no use" raised falsely
    for _ in range(18):
        total += 0.2 / 6
        out = e.evaluate([reading(clock, total)]) + run(e, clock, 600, step=60)
        assert out == []  # a backward step froze the hour's window: "above 0.5 m3/h" raised falsely
    assert 0.19 < e.instances["high|d1"].cond.value < 0.22  # type: ignore[operator]  # 1 h .. 1 h 05


@pytest.mark.parametrize(("step", "at"), [(DAY, 20), (-6 * 3600.0, 2)])
def test_slots_in_a_row_neither_closed_by_a_step_nor_delayed(step: float, at: int) -> None:
    clock = SteppedClock()
    rule = {"id": "leak", "kind": "consumption", "point": "value", "window": "slots", "slot_s": 1800,
            "slots": 4, "min_per_slot": 0.001}  # fmt: skip
    e = live_engine([rule], clock)
    total, log = 100.0, []
    for i in range(6 * 8):  # 8 h of a steady leak, a reading every 10 min
        total += 0.01
        for x in e.evaluate([reading(clock, total)]) + run(e, clock, 600, step=60):
            log.append((i, x.state))
        if i == at:
            clock.step(step)
    # Raised once after four whole slots (at most 2.5 h in), never cleared by the step.
    assert len(log) == 1 and log[0][1] is R and log[0][0] <= 15


def test_a_learned_profile_learns_no_empty_slots_from_a_forward_step() -> None:
    clock = SteppedClock()
    rule = {"id": "odd", "kind": "anomaly", "point": "value", "cumulative": True, "slot_s": 1800,
            "warmup": 5}  # fmt: skip
    e = live_engine([rule], clock)
    total, out = 100.0, []
    for i in range(6 * 6):  # 6 h, the same 0.06 m3 in every half hour
        total += 0.02
        out += e.evaluate([reading(clock, total)]) + run(e, clock, 600, step=60)
        if i == 12:
            clock.step(2 * DAY)
    est = e.instances["odd|d1"].cond.est[0]  # type: ignore[attr-defined]
    assert out == [] and est.n == 12 and abs(est.loc - 0.06) < 0.005
