"""Writes an interlock holds back stand behind every trigger that asked for them: a valve shared by
two leak probes still closes after a fire when the probe that asked last dried first (also across a
restart), and a held opening is dropped when its leak comes back before the interlock lets go."""

from __future__ import annotations

import json
from dataclasses import replace
from typing import Any

import pytest

from citynerve.gateway.api import Event, EventState, Severity
from citynerve.gateway.rules import RuleEngine, RulesConfig

from .conftest import T0, dev
from .test_action_flapping import LEAK, SHARED, moves, probes, reports
from .test_action_safety import LOC_7, _loc, fire
from .test_actions import FakeValves

# p1, p2 and their valve in building 7, with the fire panel: the shipped interlock
# water_on_during_fire holds every valve close while the panel's fire stands.
BUILDING = [
    dev(d, points=(p,)).model_copy(update={"location": _loc(LOC_7)})
    for d, p in [("p1", "leak"), ("p2", "leak"), ("valve-1", "valve"), ("fp-main", "fire_alarm")]
]


def shared(**over: Any) -> RulesConfig:
    return RulesConfig.model_validate({**SHARED, **over})


@pytest.mark.parametrize("restart", [False, True], ids=["running", "restarted"])
async def test_a_held_close_stands_behind_every_probe_that_asked_for_it(restart: bool) -> None:
    """During a fire p1 leaks, then p2; p2 dries before the fire ends. The close held for p2 is also
    p1's: when the fire clears, the valve closes for p1, which still leaks."""
    valves = FakeValves()
    t = [T0]
    e = RuleEngine(shared(), BUILDING, target=valves, clock=lambda: t[0])
    out = e.on_event(fire(EventState.RAISED, T0))
    out += await probes(e, t, [(10, "p1", True), (20, "p2", True)])
    assert [r.attrs["outcome"] for r in reports(out, "close_valve")] == ["interlocked", "interlocked"]
    if restart:
        snap = json.loads(json.dumps(e.snapshot()))  # as the snapshot is stored
        assert len(snap["actions"]["held"]) == 2  # a row per trigger
        e = RuleEngine(shared(), BUILDING, target=valves, clock=lambda: t[0])
        e.restore(snap)
        registry = [
            ("p1", "leak", "leak", True),
            ("p2", "leak", "leak", True),
            ("fp-main", "fire", "firepanel", True),
        ]
        assert e.forget_cleared(registry) == 0
    out += await probes(e, t, [(30, "p2", False)])
    (kept,) = reports(out, "open_valve")  # p1 still leaks: nothing to open
    assert kept.attrs["outcome"] == "dropped"
    t[0] = T0 + 100
    out += e.on_event(fire(EventState.CLEARED, t[0]))
    await e.actions.wait_idle()
    out += e.tick(t[0])
    assert valves.writes == [("valve-1", "valve", False)]
    closed = reports(out, "close_valve")[-1]
    assert closed.attrs["outcome"] == "done" and closed.attrs["trigger_device"] == "p1"
    assert closed.attrs["held_by_interlock"] == "water_on_during_fire"


async def test_a_held_close_is_dropped_once_every_probe_behind_it_dried() -> None:
    valves = FakeValves()
    t = [T0]
    e = RuleEngine(shared(), BUILDING, target=valves, clock=lambda: t[0])
    e.on_event(fire(EventState.RAISED, T0))
    out = await probes(e, t, [(10, "p1", True), (20, "p2", True), (30, "p2", False), (40, "p1", False)])
    assert e.actions.snapshot()["held"] == []
    dropped = reports(out, "close_valve")[-1]
    assert dropped.attrs["outcome"] == "dropped" and dropped.attrs["trigger_device"] == "p1"
    assert dropped.attrs["error"] == "leak cleared on p1 before the interlock let it run"
    e.on_event(fire(EventState.CLEARED, T0 + 100))
    await e.actions.wait_idle()
    assert valves.writes == [("valve-1", "valve", True)]  # p1's opening at 40 s; never closed


@pytest.mark.parametrize("valve", ["own", "shared"])
async def test_a_held_opening_is_dropped_when_its_leak_comes_back(valve: str) -> None:
    """An interlock holds openings during maintenance; p1 dries (the opening is held), then leaks
    again before the maintenance ends: the held opening is dropped, the valve stays closed."""
    valves = FakeValves()
    t = [T0]
    lock = {"id": "no_open_in_maintenance", "actions": ["open_valve"], "while_raised": ["maintenance"]}
    if valve == "shared":
        cfg, devices, target = shared(interlocks=[lock]), BUILDING, "valve-1"
    else:
        rules = [{**LEAK["rules"][0], "flap_limit": 0}]
        cfg = RulesConfig.model_validate({**LEAK, "rules": rules, "interlocks": [lock]})
        devices, target = [dev("p1", points=("leak", "valve"))], "p1"
    e = RuleEngine(cfg, devices, target=valves, clock=lambda: t[0])
    out = await probes(e, t, [(0, "p1", True)])
    maint = Event(target, "maintenance", EventState.RAISED, Severity.MINOR, T0 + 700, "maint")
    out += e.on_event(maint)
    out += await probes(e, t, [(1200, "p1", False), (1300, "p1", True)])
    held, dropped = reports(out, "open_valve")
    assert (held.attrs["outcome"], dropped.attrs["outcome"]) == ("interlocked", "dropped")
    assert dropped.attrs["error"] == "leak raised on p1 before the interlock let it run"
    assert e.actions.snapshot()["held"] == []
    out += e.on_event(replace(maint, state=EventState.CLEARED, ts=T0 + 1400))
    await e.actions.wait_idle()
    out += e.tick(T0 + 1401)
    assert moves(valves) == [False]  # closed at 0 s, and never opened while p1 leaks
    assert len(reports(out, "open_valve")) == 2  # nothing more after the interlock let go
