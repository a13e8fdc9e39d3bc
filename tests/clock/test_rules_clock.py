"""Rules on the running gateway's time (SteadyWall over a stepped clock): a step of the wall clock by
days, either way, raises no false alarm and delays none beyond its hold time."""

from __future__ import annotations

from typing import Any

import pytest

from citynerve.gateway.api import EventState, Reading, SteadyWall
from citynerve.gateway.rules import RuleEngine, RulesConfig
from tests.clock.clocks import SteppedClock
from tests.rules.conftest import dev

DAYS2 = 2 * 86400.0
R, C = EventState.RAISED, EventState.CLEARED


def live_engine(rules: list[dict[str, Any]], clock: SteppedClock, **kw: Any) -> RuleEngine:
    cfg = RulesConfig.model_validate({"rules": rules, **kw})
    return RuleEngine(cfg, [dev(points=("value", "valve"))], clock=clock.wall, steady=SteadyWall(clock))


def reading(clock: SteppedClock, value: float | bool, point: str = "value") -> Reading:
    return Reading("d1", point, value, "", clock.wall())  # stamped like a bus owner stamps


def run(e: RuleEngine, clock: SteppedClock, seconds: int) -> list[Any]:
    """Let `seconds` pass, ticking once a second like the runtime."""
    out: list[Any] = []
    for _ in range(seconds):
        clock.advance(1.0)
        out += e.tick(e.now())
    return out


@pytest.mark.parametrize("step", [DAYS2, -DAYS2])
def test_hold_time_runs_its_real_length_across_a_step(step: float) -> None:
    clock = SteppedClock()
    e = live_engine([{"id": "tilt", "kind": "threshold", "point": "value", "above": 10, "hold_s": 30}], clock)
    assert e.evaluate([reading(clock, 45.0)]) == []  # the cover opens: 30 s hold starts
    assert run(e, clock, 10) == []
    clock.step(step)  # NTP steps the wall clock by two days
    assert run(e, clock, 19) == []  # 29 s held: not yet (a forward step does not raise it early)
    (ev,) = run(e, clock, 1)  # 30 s held: raised now (a backward step does not delay it)
    assert ev.state is R and ev.rule == "tilt"
    assert abs(ev.ts - clock.wall()) < 1e-6  # stamped on the new wall clock


@pytest.mark.parametrize("step", [DAYS2, -DAYS2])
def test_missing_rule_neither_false_nor_late(step: float) -> None:
    clock = SteppedClock()
    e = live_engine([{"id": "silent", "kind": "missing", "point": "value", "after_s": 120}], clock)
    e.tick(e.now())
    for i in range(5):  # data every 20 s, with a step in the middle
        assert e.evaluate([reading(clock, 1.0)]) == []
        if i == 2:
            clock.step(step)
        assert run(e, clock, 20) == []
    # Now silence: raised after 120 s of real silence, not earlier, not two days later.
    silence = run(e, clock, 100)  # 20 + 100 s since the last reading
    assert silence == []
    (ev,) = run(e, clock, 1)
    assert ev.state is R and ev.rule == "silent"


def test_rate_window_spans_a_forward_step() -> None:
    clock = SteppedClock()
    e = live_engine(
        [{"id": "jump", "kind": "rate", "point": "value", "max_change": 5, "window_s": 60}],
        clock,
    )
    e.evaluate([reading(clock, 1.0)])
    run(e, clock, 30)
    clock.step(DAYS2)  # not two days of data gap: 40 s of real time
    run(e, clock, 10)
    raised = [x for x in e.evaluate([reading(clock, 20.0)]) if x.state is R]
    assert [x.rule for x in raised] == ["jump"]


def test_events_are_stamped_on_the_new_wall_clock_after_a_step() -> None:
    clock = SteppedClock()
    e = live_engine([{"id": "hot", "kind": "threshold", "point": "value", "above": 10, "hold_s": 5}], clock)
    clock.step(DAYS2)
    e.evaluate([reading(clock, 50.0)])
    (ev,) = run(e, clock, 5)
    # Stamped on the stepped (new) wall clock, so the platform sees the calendar time.
    assert abs(ev.ts - clock.wall()) < 1e-6
    assert e.steady is not None and e.steady.steps == 1


async def test_action_rate_limit_is_not_reset_by_a_forward_step() -> None:
    from tests.rules.test_actions import LEAK_RULES, FakeValves

    clock = SteppedClock()
    valves = FakeValves()
    # close_valve: at most every 600 s; the valve opens when dry, so the second close would move it
    opener = {**LEAK_RULES["actions"][0], "id": "open_valve", "when": "cleared", "value": True}
    cfg = RulesConfig.model_validate({**LEAK_RULES, "actions": [LEAK_RULES["actions"][0], opener]})
    e = RuleEngine(
        cfg, [dev(points=("leak", "valve"))], target=valves, clock=clock.wall, steady=SteadyWall(clock)
    )
    e.evaluate([reading(clock, True, "leak")])
    await e.actions.wait_idle()
    assert valves.writes == [("d1", "valve", False)]
    run(e, clock, 5)
    e.evaluate([reading(clock, False, "leak")])
    run(e, clock, 5)
    clock.step(DAYS2)  # two days "pass" on the wall clock, ten seconds really did
    again = e.evaluate([reading(clock, True, "leak")])
    await e.actions.wait_idle()
    # still within 600 s: no second actuation (the close waits for the limit)
    assert valves.writes == [("d1", "valve", False), ("d1", "valve", True)]
    assert [x.attrs.get("outcome") for x in again if x.rule == "close_valve"] == ["rate_limited"]
