"""Local actions around holds and restarts: a pending hold is never run out on missing data, a held
action whose trigger cleared is forgotten (also across a restart), a fire panel's reset after a
restart releases the interlock, the operator's override wins over a released action, and a box
without an RTC keeps its rate limits sane when NTP steps the clock. Readings go through the real
Pipeline into the real RuleEngine; the panel's events come from the real fire panel stream."""

from __future__ import annotations

import json
from typing import Any

import pytest

from citynerve.drivers.firepanel import FirePanelDevice, PanelStream
from citynerve.gateway.alarms import ActiveAlarms
from citynerve.gateway.api import (
    Clock,
    DeviceConfig,
    Event,
    EventState,
    Quality,
    Reading,
    Sample,
    SampleBatch,
    Severity,
    SteadyWall,
)
from citynerve.gateway.pipeline import Pipeline
from citynerve.gateway.rules import DEVICE_OFFLINE, RuleEngine, RulesConfig
from citynerve.gateway.rules import persist as persist_module
from citynerve.gateway.rules.persist import STATE_KEY, PersistentRuleEngine

from .conftest import T0, dev
from .test_action_flapping import LEAK
from .test_action_safety import LOC_7, _loc, fire, reports
from .test_actions import LEAK_RULES, CollectingSink, FakeValves

HELD_LEAK: dict[str, Any] = {
    "rules": [{"id": "leak", "kind": "boolean", "point": "leak", "severity": "major", "hold_s": 3}],
    "actions": [{**LEAK_RULES["actions"][0], "min_interval_s": 0}],
}


def devices() -> list[DeviceConfig]:
    return [
        dev(points=("leak", "valve")).model_copy(update={"location": _loc(LOC_7)}),
        dev("fp-main", points=("fire_alarm",)).model_copy(update={"location": _loc(LOC_7)}),
    ]


def submit(pipe: Pipeline, ts: float, value: bool | None, quality: Quality = Quality.GOOD) -> None:
    pipe.submit(SampleBatch("d1", ts, (Sample("leak", value, quality),)))


def leak_states(sink: CollectingSink) -> list[tuple[str, EventState]]:
    return [(e.rule, e.state) for e in sink.events if e.kind != "action"]


@pytest.mark.parametrize("outage", ["bad_reading", "device_offline"])
async def test_a_pending_hold_restarts_when_the_data_goes_bad(outage: str) -> None:
    """One good leak reading, then the sensor reads BAD (or goes offline): the hold is not run out
    on missing data. The next good leak reading starts it again."""
    valves, sink = FakeValves(), CollectingSink()
    e = RuleEngine(RulesConfig.model_validate(HELD_LEAK), devices(), target=valves, clock=lambda: T0)
    pipe = Pipeline({d.id: d for d in devices()}, sink, rules=e)
    submit(pipe, T0, True)
    if outage == "bad_reading":
        submit(pipe, T0 + 1, None, Quality.BAD)
    else:
        e.on_event(Event("d1", DEVICE_OFFLINE, EventState.RAISED, Severity.MAJOR, T0 + 1, "bus", None))
    for t in range(2, 10):
        pipe.tick(T0 + t)
    await e.actions.wait_idle()
    assert leak_states(sink) == [] and valves.writes == []
    # The sensor is back and still reads a leak: a whole new hold, then the valve closes.
    submit(pipe, T0 + 10, True)
    pipe.tick(T0 + 12.9)
    assert leak_states(sink) == []
    pipe.tick(T0 + 13)
    await e.actions.wait_idle()
    assert leak_states(sink) == [("leak", EventState.RAISED)] and valves.writes == [("d1", "valve", False)]
    # Raised alarms are unchanged by bad data: still raised, nothing cleared.
    submit(pipe, T0 + 14, None, Quality.BAD)
    pipe.tick(T0 + 60)
    assert leak_states(sink) == [("leak", EventState.RAISED)]


def test_a_missing_data_rule_still_raises_through_bad_readings() -> None:
    rules = {"rules": [{"id": "silent", "kind": "missing", "point": "leak", "after_s": 10, "hold_s": 5}]}
    sink = CollectingSink()
    e = RuleEngine(RulesConfig.model_validate(rules), devices(), clock=lambda: T0)
    pipe = Pipeline({d.id: d for d in devices()}, sink, rules=e)
    pipe.tick(T0)
    submit(pipe, T0 + 1, True)
    for t in range(2, 30):
        if t % 3 == 0:
            submit(pipe, T0 + t, None, Quality.BAD)  # the sensor answers with nothing usable
        pipe.tick(T0 + t)
    assert leak_states(sink) == [("silent", EventState.RAISED)]


async def test_a_dropped_held_action_is_saved_and_forgotten_after_a_restart(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The leak dries during the fire: the held valve close is dropped and that is saved at once; a
    snapshot older than that (a power cut first) is reconciled against the alarm registry."""
    monkeypatch.setattr(persist_module, "PROMPT_SAVE_MIN_S", 0.0)
    store, registry, sink = MemoryStore(), ActiveAlarms(), CollectingSink()
    cfg = RulesConfig.model_validate(LEAK_RULES)
    e = PersistentRuleEngine(cfg, devices(), state=store, target=FakeValves(), clock=lambda: T0)
    pipe = Pipeline({d.id: d for d in devices()}, sink, rules=e, alarms=registry)
    for ev in [fire(EventState.RAISED, T0), *e.on_event(fire(EventState.RAISED, T0))]:
        pipe.event(ev)
    submit(pipe, T0 + 1, True)
    assert [r.attrs["outcome"] for r in reports(sink.events)] == ["interlocked"]
    assert e._saving is not None
    await e._saving  # the interlocked action's prompt save
    old_snapshot = json.loads(store.data[STATE_KEY])  # held: what a power cut now would keep
    assert old_snapshot["actions"]["held"] != []
    submit(pipe, T0 + 2, False)  # the leak stops during the fire
    assert e._saving is not None
    await e._saving  # the save the drop asked for (none asked: the earlier save, held kept)
    assert json.loads(store.data[STATE_KEY])["actions"]["held"] == []
    # Power cut with the older snapshot: the registry (saved within a second) knows the leak is over.
    valves = FakeValves()
    again = RuleEngine(cfg, devices(), target=valves, clock=lambda: T0)
    again.restore(old_snapshot)
    assert list(again.actions._held) == [("d1", "close_valve")]
    assert again.forget_cleared((a.device_id, a.kind, a.rule, a.value) for a in registry.active()) == 2
    again.on_event(fire(EventState.CLEARED, T0 + 60))
    await again.actions.wait_idle()
    assert valves.writes == [] and reports(again.tick(T0 + 61)) == []


async def test_a_panel_reset_after_a_restart_releases_the_valve_interlock() -> None:
    """After a restart the panel's stream knows of nothing raised: a reset is one wildcard
    panel_reset. It ends the fire for the interlock as for the alarm registry; the held close runs."""
    panel = FirePanelDevice.model_validate(
        {
            "id": "fp-1",
            "bus": "panel-1",
            "profile": "firepanel-gst",
            "address": "GST-01",
            "location": {"address_code": "320508001007", "building": "7"},
            "points": {"fire_alarm": {"field": "fire_alarm"}},
        }
    )
    cfg = RulesConfig.model_validate(LEAK_RULES)
    e = RuleEngine(cfg, [*devices(), panel], target=FakeValves(), clock=lambda: T0)
    for item in PanelStream(panel).feed(
        "首次火警  08/12/02 17:24  004回路004号  感烟探测器  一层".encode("gb2312") + b"\r\n"
    ):
        if isinstance(item, Event):
            e.on_event(item)
    valves = FakeValves()
    restarted = RuleEngine(cfg, [*devices(), panel], target=valves, clock=lambda: T0)
    restarted.restore(json.loads(json.dumps(e.snapshot())))
    assert [r.attrs["outcome"] for r in reports(restarted.evaluate(leak_reading(T0 + 1)))] == ["interlocked"]
    fresh_stream = PanelStream(panel)  # the driver after the restart
    reset = [
        i for i in fresh_stream.feed("复位 08/12/02 17:40".encode("gb2312") + b"\r\n") if isinstance(i, Event)
    ]
    assert [(r.kind, r.subject, r.one_shot) for r in reset] == [("panel_reset", "*", True)]
    restarted.on_event(reset[0])
    await restarted.actions.wait_idle()
    assert valves.writes == [("d1", "valve", False)]
    assert restarted.actions.interlocks.blocking("close_valve", "d1", "valve", False) is None


async def test_a_held_action_released_by_the_fire_clearing_respects_the_override() -> None:
    valves = FakeValves()
    e = RuleEngine(RulesConfig.model_validate(LEAK_RULES), devices(), target=valves, clock=lambda: T0)
    e.on_event(fire(EventState.RAISED, T0))
    assert [r.attrs["outcome"] for r in reports(e.evaluate(leak_reading(T0 + 1)))] == ["interlocked"]
    e.set_override("d1", "close_valve", True)  # the crew is on the valve: never write it
    e.on_event(fire(EventState.CLEARED, T0 + 60))
    await e.actions.wait_idle()
    assert valves.writes == []
    (report,) = reports(e.tick(T0 + 61))
    assert (
        report.attrs["outcome"] == "overridden"
        and report.attrs["held_by_interlock"] == "water_on_during_fire"
    )


class BootClock(Clock):
    """A box without an RTC: the wall clock is whatever it is set to; monotonic restarts at boot."""

    def __init__(self, wall: float) -> None:
        self.wall_t, self.mono_t = wall, 100.0

    def wall(self) -> float:
        return self.wall_t

    def monotonic(self) -> float:
        return self.mono_t

    def advance(self, s: float) -> None:
        self.wall_t += s
        self.mono_t += s


@pytest.mark.parametrize("boot_wall", [1000.0, T0 + 7000.0])  # no RTC (1970) / a right clock
async def test_restored_rate_limits_after_a_restart_with_the_clock_at_1970(boot_wall: float) -> None:
    cfg = RulesConfig.model_validate(LEAK_RULES)  # min_interval_s 600
    first = BootClock(T0)
    e = RuleEngine(cfg, devices(), target=FakeValves(), steady=SteadyWall(first))
    e.evaluate(leak_reading(0.0))
    await e.actions.wait_idle()
    e.evaluate(leak_reading(0.0, on=False))
    snap = json.loads(json.dumps(e.snapshot()))
    # Two hours later the box boots; if it has no RTC its clock reads 1970 until NTP steps it.
    clock = BootClock(boot_wall)
    valves = FakeValves()
    again = RuleEngine(cfg, devices(), target=valves, steady=SteadyWall(clock))
    again.restore(snap)
    clock.advance(10)
    clock.wall_t = T0 + 7210.0  # NTP: the wall clock is right now
    again.now()
    (ts,) = again.actions._history[("d1", "close_valve")]
    assert ts <= again.now()  # never in the future, so never a limit for decades
    clock.advance(700)  # past min_interval_s since this boot (and since the last write)
    out = again.evaluate(leak_reading(0.0))
    await again.actions.wait_idle()
    assert [r.attrs["outcome"] for r in reports(out)] == [] and valves.writes == [("d1", "valve", False)]


async def test_a_close_released_just_as_the_clock_steps_is_not_rate_limited_for_decades() -> None:
    """No RTC: NTP steps the wall clock from 1970 and, before the engine's next tick notices the
    step, the panel's clear (stamped by its driver on the new clock) releases a held close. Its
    rate-limit time was the event's, on the new clock, and the step's shift then moved it again:
    decades ahead, the next leak's close was `rate_limited ... runs in 1789992398 s`."""
    cfg = RulesConfig.model_validate({**LEAK, "rules": [{**LEAK["rules"][0], "flap_limit": 0}]})
    clock = BootClock(1000.0)  # 1970 at boot
    valves = FakeValves()
    e = RuleEngine(cfg, devices(), target=valves, steady=SteadyWall(clock))
    e.on_event(fire(EventState.RAISED, clock.wall()))
    clock.advance(1)
    assert [r.attrs["outcome"] for r in reports(e.evaluate(leak_reading(0.0)))] == ["interlocked"]
    clock.advance(1)
    clock.wall_t = T0  # NTP steps the clock; the panel's clear comes before the next tick
    e.on_event(fire(EventState.CLEARED, clock.wall()))
    await e.actions.wait_idle()
    assert valves.writes == [("d1", "valve", False)]
    e.tick(e.now())
    assert all(t <= e.now() for t in e.actions._history[("d1", "close_valve")])
    clock.advance(3600)
    e.evaluate(leak_reading(0.0, on=False))  # dry: the valve opens
    await e.actions.wait_idle()
    clock.advance(3600)
    out = e.evaluate(leak_reading(0.0))  # leaks again, an hour later: past min_interval_s
    await e.actions.wait_idle()
    assert "rate_limited" not in [r.attrs["outcome"] for r in reports(out)]
    assert valves.writes[-1] == ("d1", "valve", False)


def leak_reading(ts: float, on: bool = True) -> list[Reading]:
    return [Reading("d1", "leak", on, "", ts)]


class MemoryStore:
    def __init__(self) -> None:
        self.data: dict[str, str] = {}

    async def get(self, key: str) -> str | None:
        return self.data.get(key)

    async def put(self, key: str, value: str) -> None:
        self.data[key] = value
