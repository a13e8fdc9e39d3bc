"""Local actions under a flapping sensor (a loose wire, water just reaching a probe): the rate limit
counts what moves the device, never silences the siren for a fire, and holds a refused write until
it may run, so a valve or siren ends as the last alarm state asks (docs/rules.md, Local actions)."""

from __future__ import annotations

import json
from dataclasses import replace
from typing import Any

import pytest

from citynerve.gateway.api import Event, EventState, Reading, Severity, WriteRejectedError
from citynerve.gateway.rules import ACTION_KIND, RuleEngine, RulesConfig

from .conftest import T0, dev
from .test_actions import FakeValves

# docs/rules.md "Example": the siren on every smoke alarm, `min_interval_s = 0`, max_per_day left
# at its default (10).
SIREN: dict[str, Any] = {
    "id": "siren",
    "on": ["smoke"],
    "device": "siren-relay-1",
    "point": "relay",
    "value": True,
    "min_interval_s": 0,
    "verify_after_s": 0,  # the read-back at once (the fake relay reads what was written)
}
SIREN_OFF = {**SIREN, "id": "siren_off", "when": "cleared", "value": False}
DETECTORS = [
    dev("sd-11", points=("smoke_alarm",)),
    dev("sd-12", points=("smoke_alarm",)),
    dev("siren-relay-1", points=("relay",)),
]


def smoke_rules(severity: str, actions: list[dict[str, Any]]) -> RulesConfig:
    rule = {"id": "smoke", "kind": "boolean", "event": "smoke", "severity": severity, "point": "smoke_alarm"}
    # The rule's flap damper off: these tests are of the actions' own limits, which must hold
    # without it (flap_limit = 0 is a setting; the damper: test_flap_damper.py).
    rule["flap_limit"] = 0
    return RulesConfig.model_validate({"rules": [rule], "actions": actions})


def reports(events: list[Event], action: str | None = None) -> list[Event]:
    return [e for e in events if e.kind == ACTION_KIND and action in (None, e.rule)]


@pytest.mark.parametrize("switched_off", [False, True], ids=["siren", "siren_and_siren_off"])
async def test_a_flapping_detector_does_not_silence_the_siren_for_a_fire_elsewhere(
    switched_off: bool,
) -> None:
    relay = FakeValves()
    t = [T0]
    actions = [SIREN, SIREN_OFF] if switched_off else [SIREN]
    e = RuleEngine(smoke_rules("critical", actions), DETECTORS, target=relay, clock=lambda: t[0])
    # sd-11: a loose wire, its alarm register toggles at every 1 s poll for 30 s
    for i in range(30):
        t[0] = T0 + i
        e.evaluate([Reading("sd-11", "smoke_alarm", i % 2 == 0, "", t[0])])
        await e.actions.wait_idle()
    assert relay.writes.count(("siren-relay-1", "relay", True)) == 15  # more than max_per_day 10
    # 10 hours later a real fire on sd-12, in another flat: the siren sounds
    t[0] = T0 + 10 * 3600
    e.evaluate([Reading("sd-12", "smoke_alarm", True, "", t[0])])
    await e.actions.wait_idle()
    assert relay.writes[-1] == ("siren-relay-1", "relay", True)
    (report,) = reports(e.tick(t[0] + 1), "siren")
    assert report.attrs["outcome"] == "done" and report.attrs["trigger_device"] == "sd-12"


async def test_with_the_flap_damper_too_the_siren_sounds_for_a_fire_elsewhere() -> None:
    """The rule's damper on (its default): the loose wire's alarm is held raised after a few
    toggles, and a real fire on another detector still sounds the siren."""
    relay = FakeValves()
    t = [T0]
    cfg = smoke_rules("critical", [SIREN, SIREN_OFF])
    rule = cfg.rules[0].model_copy(update={"flap_limit": 6})
    e = RuleEngine(cfg.model_copy(update={"rules": (rule,)}), DETECTORS, target=relay, clock=lambda: t[0])
    for i in range(30):
        t[0] = T0 + i
        e.evaluate([Reading("sd-11", "smoke_alarm", i % 2 == 0, "", t[0])])
        await e.actions.wait_idle()
    assert relay.writes[-1] == ("siren-relay-1", "relay", True)  # held raised: the siren stays on
    t[0] = T0 + 10 * 3600
    e.evaluate([Reading("sd-12", "smoke_alarm", True, "", t[0])])
    await e.actions.wait_idle()
    assert relay.writes[-1] == ("siren-relay-1", "relay", True)
    (report,) = reports(e.tick(t[0] + 1), "siren")
    assert report.attrs["outcome"] == "done" and report.attrs["trigger_device"] == "sd-12"


async def test_a_write_that_leaves_the_point_as_set_is_not_counted() -> None:
    """A major alarm (not a fire) on a shared relay: only the first write moves it."""
    relay = FakeValves()
    e = RuleEngine(smoke_rules("major", [SIREN]), DETECTORS, target=relay, clock=lambda: T0)
    for i in range(30):
        e.evaluate([Reading("sd-11", "smoke_alarm", i % 2 == 0, "", T0 + i)])
        await e.actions.wait_idle()
    out = e.evaluate([Reading("sd-12", "smoke_alarm", True, "", T0 + 3600)])
    await e.actions.wait_idle()
    out += e.tick(T0 + 3601)
    assert [r.attrs["outcome"] for r in reports(out)] == ["done"]
    assert len(relay.writes) == 16
    assert list(e.actions._history[("siren-relay-1", "siren")]) == [T0]  # one write moved the relay
    # A write that failed leaves the point unknown: the next one counts again.
    relay.fail = WriteRejectedError("siren-relay-1", "relay", "device busy")
    e.evaluate([Reading("sd-12", "smoke_alarm", False, "", T0 + 3700)])
    e.evaluate([Reading("sd-12", "smoke_alarm", True, "", T0 + 3710)])
    await e.actions.wait_idle()
    relay.fail = None
    e.evaluate([Reading("sd-12", "smoke_alarm", False, "", T0 + 3720)])
    e.evaluate([Reading("sd-12", "smoke_alarm", True, "", T0 + 3730)])
    await e.actions.wait_idle()
    assert list(e.actions._history[("siren-relay-1", "siren")]) == [T0, T0 + 3730]


LEAK: dict[str, Any] = {
    "rules": [{"id": "leak", "kind": "boolean", "point": "leak", "severity": "major"}],
    "actions": [
        # close on a leak, open again when it is dry (defaults: min_interval_s 600, max_per_day 10)
        {"id": "close_valve", "on": ["leak"], "point": "valve", "value": False, "verify": False},
        {
            "id": "open_valve",
            "on": ["leak"],
            "when": "cleared",
            "point": "valve",
            "value": True,
            "verify": False,
        },
    ],
}


def leak_engine(valves: FakeValves, t: list[float], severity: str = "major") -> RuleEngine:
    rules = [{**LEAK["rules"][0], "severity": severity}]
    cfg = RulesConfig.model_validate({**LEAK, "rules": rules})
    return RuleEngine(cfg, [dev(points=("leak", "valve"))], target=valves, clock=lambda: t[0])


async def run_probe(e: RuleEngine, t: list[float], wet: list[bool], start: float = T0) -> list[Event]:
    """One reading a second, then a tick, as the runtime does; writes finish before the next poll."""
    out: list[Event] = []
    for i, w in enumerate(wet):
        t[0] = start + i
        out += e.evaluate([Reading("d1", "leak", w, "", t[0])])
        out += e.tick(t[0])
        await e.actions.wait_idle()
    return out + e.tick(t[0])


def moves(valves: FakeValves) -> list[bool]:
    """The valve's positions in turn (a write of the position it has is no move)."""
    out: list[bool] = []
    for _, _, v in valves.writes:
        if not out or out[-1] != v:
            out.append(bool(v))
    return out


async def test_a_leak_probe_that_flaps_then_stays_wet_leaves_the_valve_closed() -> None:
    valves = FakeValves()
    t = [T0]
    e = leak_engine(valves, t)
    out = await run_probe(e, t, [True, False, True, False, True] + [True] * 700)
    assert moves(valves) == [False, True, False]  # closed, opened, closed once the limit let it
    closes = reports(out, "close_valve")
    assert [r.attrs["outcome"] for r in closes] == ["done", "rate_limited", "dropped", "rate_limited", "done"]
    assert closes[2].attrs["error"] == "leak cleared on d1 before the rate limit let it run"
    assert closes[3].attrs["error"] == "min_interval_s: held, runs in 596 s if leak is still raised on d1"
    assert closes[4].ts == T0 + 600  # the first tick the limit allows


async def test_a_held_close_survives_a_restart_and_is_dropped_if_the_leak_dried_meanwhile() -> None:
    valves = FakeValves()
    t = [T0]
    e = leak_engine(valves, t)
    await run_probe(e, t, [True, False, True])
    assert moves(valves) == [False, True] and list(e.actions._due) == [("d1", "valve")]
    snap = json.loads(json.dumps(e.snapshot()))  # as the snapshot is stored
    # Restarted with the leak still raised (the alarm registry holds it): the close runs at 600 s.
    restarted = leak_engine(valves, t)
    restarted.restore(snap)
    assert restarted.forget_cleared([("d1", "leak", "leak", True)]) == 0
    t[0] = T0 + 599
    restarted.tick(t[0])
    await restarted.actions.wait_idle()
    assert moves(valves) == [False, True]
    t[0] = T0 + 600
    restarted.tick(t[0])
    await restarted.actions.wait_idle()
    assert moves(valves) == [False, True, False]
    # Restarted after the leak cleared before the stop: the close is dropped, the valve stays open.
    valves = FakeValves()
    again = leak_engine(valves, t)
    again.restore(snap)
    assert again.forget_cleared([]) == 2  # the leak alarm and the held close
    again.tick(T0 + 700)
    await again.actions.wait_idle()
    assert valves.writes == []


async def test_a_critical_leak_closes_at_once_and_openings_stay_limited() -> None:
    """A raise of severity critical is never rate-limited; the valve still cannot chatter, since a
    close that moves it must follow an opening, and openings stay limited (water hammer, wear)."""
    valves = FakeValves()
    t = [T0]
    e = leak_engine(valves, t, severity="critical")
    out = await run_probe(e, t, [True, False] * 30 + [False] * 700)  # flapping 60 s, then dry
    assert moves(valves) == [False, True, False, True]  # the last opening once the limit let it
    opens = reports(out, "open_valve")
    assert [r.attrs["outcome"] for r in opens][:3] == ["done", "rate_limited", "dropped"]
    assert opens[-1].attrs["outcome"] == "done" and opens[-1].ts == T0 + 601
    assert all(r.attrs["outcome"] != "rate_limited" for r in reports(out, "close_valve"))


# One valve shared by two leak probes (docs/rules.md: "a valve shared by several leak probes").
SHARED: dict[str, Any] = {
    "rules": [{"id": "leak", "kind": "boolean", "point": "leak", "severity": "major", "flap_limit": 0}],
    "actions": [
        {**LEAK["actions"][0], "device": "valve-1"},
        {**LEAK["actions"][1], "device": "valve-1"},
    ],
}
PROBES = [dev("p1", points=("leak",)), dev("p2", points=("leak",)), dev("valve-1", points=("valve",))]


async def probes(e: RuleEngine, t: list[float], steps: list[tuple[float, str, bool]]) -> list[Event]:
    """Each step: at T0 + s a reading of one probe, then the runtime's ticks, writes finished."""
    out: list[Event] = []
    for s, probe, wet in steps:
        t[0] = T0 + s
        out += e.evaluate([Reading(probe, "leak", wet, "", t[0])])
        out += e.tick(t[0])
        await e.actions.wait_idle()
        out += e.tick(t[0])
    return out


async def tick_until(e: RuleEngine, t: list[float], start: float, end: float) -> list[Event]:
    out: list[Event] = []
    for s in range(int(start), int(end)):
        t[0] = T0 + s
        out += e.tick(t[0])
        await e.actions.wait_idle()
    return out


async def test_a_held_opening_does_not_run_while_another_probe_on_the_valve_leaks() -> None:
    """p1 dries: its opening is held (the last opening < 600 s ago). p2 leaks before it runs: its
    close is free (the valve is closed), and it drops the held opening: the valve stays closed."""
    valves = FakeValves()
    t = [T0]
    e = RuleEngine(RulesConfig.model_validate(SHARED), PROBES, target=valves, clock=lambda: t[0])
    out = await probes(e, t, [(0, "p1", True), (10, "p1", False), (20, "p1", True)])
    out += await tick_until(e, t, 21, 601)  # the held close runs at 600 s
    out += await probes(e, t, [(605, "p1", False), (607, "p2", True)])
    out += await tick_until(e, t, 608, 1300)
    assert [a.device_id for a in e.active()] == ["p2"]
    assert moves(valves) == [False, True, False]  # closed while p2 leaks
    opens = reports(out, "open_valve")
    assert [r.attrs["outcome"] for r in opens] == ["done", "rate_limited", "dropped"]
    assert opens[-1].ts == T0 + 607
    assert opens[-1].attrs["error"] == "leak raised on p2 asked for False first"


@pytest.mark.parametrize("restart", [False, True], ids=["running", "restarted"])
async def test_a_held_close_waits_for_every_probe_behind_it_to_dry(restart: bool) -> None:
    """p1 leaks again 10 s after the valve opened: its close is held (the last close < 600 s ago).
    p2 leaks too, then dries: the close is still held for p1 (also across a restart), p2's opening
    is dropped, and the valve closes at 600 s."""
    valves = FakeValves()
    t = [T0]
    cfg = RulesConfig.model_validate(SHARED)
    e = RuleEngine(cfg, PROBES, target=valves, clock=lambda: t[0])
    out = await probes(e, t, [(0, "p1", True), (10, "p1", False), (20, "p1", True), (30, "p2", True)])
    if restart:
        snap = json.loads(json.dumps(e.snapshot()))
        assert len(snap["actions"]["due"]) == 2  # a row per trigger
        e = RuleEngine(cfg, PROBES, target=valves, clock=lambda: t[0])
        e.restore(snap)
        assert e.forget_cleared([("p1", "leak", "leak", True), ("p2", "leak", "leak", True)]) == 0
    out += await probes(e, t, [(40, "p2", False)])
    out += await tick_until(e, t, 41, 700)
    assert [a.device_id for a in e.active()] == ["p1"]
    assert moves(valves) == [False, True, False]
    kept = reports(out, "open_valve")[-1]  # p1 still leaks: the valve is not to open for p2
    assert kept.attrs["outcome"] == "dropped"
    assert kept.attrs["error"] == "leak on p1 is still raised: valve of valve-1 stays as that alarm asks"
    (closed,) = [r for r in reports(out, "close_valve") if r.attrs["outcome"] == "done" and r.ts > T0]
    assert closed.ts == T0 + 600 and closed.attrs["trigger_device"] == "p1"


async def test_a_flapping_smoke_detector_does_not_block_leak_valves_in_its_building() -> None:
    """sd-11's loose wire toggles its smoke register every second (damper on: the platform sees the
    smoke held raised). The interlock water_on_during_fire follows the real input: a real leak on
    d1 in the same building is interlocked while the register reads smoke, and closes the valve at
    the next poll that reads it clear."""
    valves = FakeValves()
    t = [T0]
    smoke = {
        "id": "smoke",
        "kind": "boolean",
        "point": "smoke_alarm",
        "severity": "critical",
        "flap_limit": 6,
    }
    cfg = RulesConfig.model_validate({**LEAK, "rules": [smoke, LEAK["rules"][0]]})
    e = RuleEngine(
        cfg,
        [dev("sd-11", points=("smoke_alarm",)), dev(points=("leak", "valve"))],
        target=valves,
        clock=lambda: t[0],
    )
    out: list[Event] = []
    for s in range(700):
        t[0] = T0 + s
        rs = [Reading("sd-11", "smoke_alarm", s % 2 == 0, "", t[0])]
        if s >= 600:
            rs.append(Reading("d1", "leak", True, "", t[0]))
        out += e.evaluate(rs)
        out += e.tick(t[0])
        await e.actions.wait_idle()
    out += e.tick(t[0])
    assert {(a.device_id, a.kind) for a in e.active()} >= {("sd-11", "smoke"), ("d1", "leak")}
    assert valves.writes == [("d1", "valve", False)]
    closes = reports(out, "close_valve")
    assert [(r.ts - T0, r.attrs["outcome"]) for r in closes] == [(600, "interlocked"), (601, "done")]
    assert closes[1].attrs["held_by_interlock"] == "water_on_during_fire"


async def test_a_probe_drying_does_not_open_a_shared_valve_while_another_leaks() -> None:
    """No rate limit in the way (the opening 20 min after the first): p1 dries while p2 still leaks,
    and the valve stays closed; it opens when the last probe dries."""
    valves = FakeValves()
    t = [T0]
    e = RuleEngine(RulesConfig.model_validate(SHARED), PROBES, target=valves, clock=lambda: t[0])
    out = await probes(e, t, [(0, "p1", True), (600, "p2", True), (1200, "p1", False)])
    assert moves(valves) == [False]  # closed, and still closed while p2 leaks
    (kept,) = [r for r in reports(out, "open_valve") if r.ts == T0 + 1200]
    assert kept.attrs["outcome"] == "dropped"
    assert kept.attrs["error"] == "leak on p2 is still raised: valve of valve-1 stays as that alarm asks"
    out += await probes(e, t, [(1800, "p2", False)])
    assert moves(valves) == [False, True]
    assert reports(out, "open_valve")[-1].attrs["outcome"] == "done"


async def test_a_siren_of_several_detectors_stays_on_while_one_still_alarms() -> None:
    relay = FakeValves()
    t = [T0]
    e = RuleEngine(smoke_rules("critical", [SIREN, SIREN_OFF]), DETECTORS, target=relay, clock=lambda: t[0])
    for ts, device, smoke in [(0, "sd-11", True), (5, "sd-12", True), (60, "sd-11", False)]:
        t[0] = T0 + ts
        e.evaluate([Reading(device, "smoke_alarm", smoke, "", t[0])])
        await e.actions.wait_idle()
    assert relay.writes[-1] == ("siren-relay-1", "relay", True)  # sd-12 still alarms
    t[0] = T0 + 120
    e.evaluate([Reading("sd-12", "smoke_alarm", False, "", t[0])])
    await e.actions.wait_idle()
    assert relay.writes[-1] == ("siren-relay-1", "relay", False)


async def test_an_opening_an_interlock_held_does_not_run_while_another_probe_leaks() -> None:
    """p1 dries while an interlock holds openings; p2 still leaks when the interlock lets go: the
    released opening is dropped, not run (the check is in the one place every write starts)."""
    valves = FakeValves()
    t = [T0]
    lock = {"id": "no_open_in_maintenance", "actions": ["open_valve"], "while_raised": ["maintenance"]}
    cfg = RulesConfig.model_validate({**SHARED, "interlocks": [lock]})
    e = RuleEngine(cfg, PROBES, target=valves, clock=lambda: t[0])
    out = await probes(e, t, [(0, "p1", True), (600, "p2", True)])
    maint = Event("valve-1", "maintenance", EventState.RAISED, Severity.MINOR, T0 + 700, "maint")
    out += e.on_event(maint)
    out += await probes(e, t, [(1200, "p1", False)])
    assert [r.attrs["outcome"] for r in reports(out, "open_valve")] == ["interlocked"]
    out += e.on_event(replace(maint, state=EventState.CLEARED, ts=T0 + 1300))
    await e.actions.wait_idle()
    out += e.tick(T0 + 1301)
    assert moves(valves) == [False]  # still closed: p2 leaks
    assert reports(out, "open_valve")[-1].attrs["outcome"] == "dropped"
