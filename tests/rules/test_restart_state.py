"""After an unclean stop (power cut, kill -9): the rules snapshot may be older than the alarm registry
(saved within a second of a change), and what must not be lost is saved when it happens."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

from citynerve.gateway.alarms import ActiveAlarms
from citynerve.gateway.api import Event, EventState, Reading, Severity
from citynerve.gateway.rules import RuleEngine, RulesConfig, build_engine
from citynerve.gateway.store import AsyncOutbox

from .conftest import T0, dev
from .test_actions import LEAK_RULES, FakeValves

R, C = EventState.RAISED, EventState.CLEARED


def registry_of(alarms: ActiveAlarms) -> list[tuple[str, str, str, Any]]:
    """What the runtime passes to `forget_cleared` (gateway/runtime.py, _reconcile_alarms)."""
    return [(a.device_id, a.kind, a.rule, a.value) for a in alarms.active()]


def restarted_registry(alarms: ActiveAlarms) -> ActiveAlarms:
    again = ActiveAlarms()
    again.restore(json.loads(json.dumps(alarms.snapshot())))
    return again


async def test_an_alarm_cleared_after_the_last_snapshot_raises_again_at_a_new_occurrence() -> None:
    cfg = RulesConfig.model_validate(LEAK_RULES)
    devs = [dev(points=("leak", "valve"))]
    e0, reg = RuleEngine(cfg, devs, target=FakeValves()), ActiveAlarms()
    for ev in e0.evaluate([Reading("d1", "leak", True, "", T0)]):
        reg.apply(ev)
    await e0.actions.wait_idle()
    snap = json.loads(json.dumps(e0.snapshot()))  # the periodic snapshot: leak raised
    for ev in e0.evaluate([Reading("d1", "leak", False, "", T0 + 100)]):
        reg.apply(ev)  # dried: the registry, saved at once, holds nothing
    # Power cut; restart from the older rules snapshot and the newer registry.
    valves = FakeValves()
    e, reg2 = RuleEngine(cfg, devs, target=valves), restarted_registry(reg)
    e.restore(snap)
    assert e.forget_cleared(registry_of(reg2)) == 1
    assert e.active() == []
    out = e.evaluate([Reading("d1", "leak", True, "", T0 + 4000)])  # a new leak
    await e.actions.wait_idle()
    assert [(x.rule, x.state) for x in out if x.kind != "action"] == [("leak", R)]
    assert valves.writes == [("d1", "valve", False)]


def test_an_alarm_the_registry_holds_stays_raised() -> None:
    cfg = RulesConfig.model_validate(LEAK_RULES)
    devs = [dev(points=("leak", "valve"))]
    e0, reg = RuleEngine(cfg, devs), ActiveAlarms()
    for ev in e0.evaluate([Reading("d1", "leak", True, "", T0)]):
        reg.apply(ev)
    e = RuleEngine(cfg, devs)
    e.restore(json.loads(json.dumps(e0.snapshot())))
    assert e.forget_cleared(registry_of(restarted_registry(reg))) == 0
    assert [a.rule for a in e.active()] == ["leak"]
    assert e.evaluate([Reading("d1", "leak", True, "", T0 + 60)]) == []  # still the same leak


def panel(state: EventState, ts: float, zone: str) -> Event:
    return Event("panel-1", "fire", state, Severity.CRITICAL, ts, "panel:gst", zone, "fire", {}, subject=zone)


async def test_a_fire_reset_before_an_unclean_stop_no_longer_blocks_valves() -> None:
    cfg = RulesConfig.model_validate(LEAK_RULES)
    devs = [dev(points=("leak", "valve")), dev("panel-1", points=("fire_alarm",))]  # both in B1
    e0, reg = RuleEngine(cfg, devs, target=FakeValves()), ActiveAlarms()
    for zone in ("1-023", "1-024"):
        reg.apply(panel(R, T0, zone))
        e0.on_event(panel(R, T0, zone))
    snap = json.loads(json.dumps(e0.snapshot()))  # the periodic snapshot: two zones in fire
    reg.apply(panel(C, T0 + 120, "1-023"))
    e0.on_event(panel(C, T0 + 120, "1-023"))  # one zone reset before the stop
    valves = FakeValves()
    e = RuleEngine(cfg, devs, target=valves)
    e.restore(snap)
    assert e.forget_cleared(registry_of(restarted_registry(reg))) == 1
    assert [k[3] for k in e.actions.interlocks._raised] == ["'1-024'"]  # the other zone still blocks
    e.on_event(panel(C, T0 + 300, "1-024"))  # its reset after the start is seen as usual
    e.evaluate([Reading("d1", "leak", True, "", T0 + 86400)])  # a leak the next day
    await e.actions.wait_idle()
    assert valves.writes == [("d1", "valve", False)]  # closed: it used to be interlocked for good


async def test_an_action_started_survives_a_power_cut_in_its_rate_limit(tmp_path: Path) -> None:
    """A brown-out loop: every boot the leak sensor is still wet and the power fails 100 s later, with
    no clean stop. The valve closes once (min_interval_s 600): the rate limit used to reach the store
    only with the periodic snapshot, so every boot closed it again."""
    cfg = RulesConfig.model_validate(LEAK_RULES)
    valves = FakeValves()
    devs = [dev(points=("leak", "valve"))]
    for boot in range(4):
        t = T0 + boot * 100
        async with AsyncOutbox(tmp_path / "gw.db") as store:
            e = await build_engine(cfg, devs, actions=valves, state=store)
            e.tick(t)
            e.evaluate([Reading("d1", "leak", True, "", t + 5)])
            await e.actions.wait_idle()
            for _ in range(20):  # the loop runs on for a moment; nothing waits 30 s (the first is prompt)
                await asyncio.sleep(0)
            if boot == 0:  # later boots are rate limited: nothing new to save
                assert e._saving is not None
                await asyncio.wait_for(e._saving, 5)
            # power cut: no e.save()
    assert valves.writes == [("d1", "valve", False)]


async def test_prompt_saves_are_coalesced_and_an_interlock_change_is_saved(tmp_path: Path) -> None:
    cfg = RulesConfig.model_validate(LEAK_RULES)
    devs = [dev(points=("leak", "valve")), dev("panel-1", points=("fire_alarm",))]
    async with AsyncOutbox(tmp_path / "gw.db") as store:
        e = await build_engine(cfg, devs, state=store)
        puts = 0
        real_put = store.put

        async def counting_put(key: str, value: str) -> None:
            nonlocal puts
            puts += 1
            await real_put(key, value)

        store.put = counting_put  # type: ignore[method-assign]
        e.on_event(panel(R, T0, "1-023"))  # saved at once (the first prompt save)
        await asyncio.wait_for(e._saving, 5)  # type: ignore[arg-type]
        assert puts == 1
        for i in range(50):  # a flapping panel: one more save for all of them, 30 s later at most
            e.on_event(panel(C if i % 2 == 0 else R, T0 + i, "1-024"))
        await asyncio.sleep(0.05)
        assert puts == 1 and e._queued
        await e.save()  # the stop's final snapshot does not wait the 30 s
        assert puts == 3
    async with AsyncOutbox(tmp_path / "gw.db") as store:
        again = await build_engine(cfg, devs, state=store)
        assert {k[3] for k in again.actions.interlocks._raised} == {"'1-023'", "'1-024'"}


def test_the_start_is_a_grace_period_for_missing_data_after_a_restart_too() -> None:
    """docs/rules.md: after an outage longer than after_s no missing-data alarm is raised at the first
    tick (before any bus was polled); one raised before the stop stays raised until a reading."""
    rules = RulesConfig.model_validate({"rules": [{"id": "silent", "kind": "missing", "point": "value",
                                                   "after_s": 600}]})  # fmt: skip
    devs = [dev("d1"), dev("d2"), dev("d3")]
    e0 = RuleEngine(rules, devs)
    e0.tick(T0)
    for d in ("d1", "d2"):
        e0.evaluate([Reading(d, "value", 1.0, "", T0 + 50)])
    (was,) = e0.tick(T0 + 650)  # d3 never reported: raised before the stop
    assert (was.device_id, was.state) == ("d3", R)
    boot = T0 + 650 + 1800  # a 30-minute outage
    e = RuleEngine(rules, devs)
    e.restore(json.loads(json.dumps(e0.snapshot())))
    assert [ev for t in range(1, 600) for ev in e.tick(boot + t)] == []  # d3 stays raised, quietly
    assert [a.device_id for a in e.active()] == ["d3"]
    out = e.evaluate(
        [Reading("d1", "value", 1.0, "", boot + 600), Reading("d3", "value", 1.0, "", boot + 600)]
    )
    assert [(ev.device_id, ev.state) for ev in out] == [("d3", C)]
    out = [ev for t in range(601, 1300) for ev in e.tick(boot + t)]
    assert [(ev.device_id, ev.state) for ev in out] == [("d2", R), ("d1", R), ("d3", R)]


async def test_an_alarm_raised_just_before_a_power_cut_is_not_cleared_at_the_restart(tmp_path: Path) -> None:
    """A rule alarm (no action) raised 10 s before a kill -9, well inside the periodic snapshot's
    300 s: the restarted engine still holds it, so the runtime's reconcile clears nothing (the
    platform got 'cleared: no longer active after a restart or reload', then the raise again)."""
    cfg = RulesConfig.model_validate({"rules": LEAK_RULES["rules"]})
    devs = [dev(points=("leak",))]
    reg = ActiveAlarms()
    async with AsyncOutbox(tmp_path / "gw.db") as store:
        e = await build_engine(cfg, devs, state=store)
        e.tick(T0)
        for ev in e.evaluate([Reading("d1", "leak", True, "", T0 + 10)]):
            reg.apply(ev)
        for _ in range(20):  # the loop runs on for a moment; nothing waits (the first save is prompt)
            await asyncio.sleep(0)
        assert e._saving is not None
        await asyncio.wait_for(e._saving, 5)
        # power cut: no e.save()
    async with AsyncOutbox(tmp_path / "gw.db") as store:
        again = await build_engine(cfg, devs, state=store)
    gone = restarted_registry(reg).reconcile(
        {i.rule.id for i in again.instances.values()}, [(a.device_id, a.kind, a.rule) for a in again.active()]
    )
    assert gone == [] and [a.rule for a in again.active()] == ["leak"]
