"""A damaged or odd rules snapshot (valid JSON, wrong shapes or types) restores what it can and never
stops the gateway's start, nor, later, the other devices' rules."""

from __future__ import annotations

import copy
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from citynerve.gateway.api import EventState, Reading
from citynerve.gateway.rules import STATE_KEY, PersistentRuleEngine, RuleEngine, RulesConfig, build_engine
from citynerve.gateway.rules.alarm import AlarmPhase
from citynerve.gateway.rules.conditions import MissingCondition
from citynerve.gateway.store import AsyncOutbox

from .conftest import T0, dev, states

R = EventState.RAISED
RULES: dict[str, Any] = {
    "rules": [
        {"id": "hot", "kind": "threshold", "point": "value", "above": 10, "hold_s": 30},
        {"id": "silent", "kind": "missing", "point": "value", "after_s": 120},
        {"id": "use", "kind": "consumption", "point": "total", "window": "sliding", "above": 5},
    ],
    "actions": [{"id": "close_valve", "on": ["hot"], "point": "valve", "value": False}],
}


def devices() -> list[Any]:
    return [dev("d1", points=("value", "total", "valve")), dev("d2", points=("value", "total", "valve"))]


def good_snapshot() -> dict[str, Any]:
    e = RuleEngine(RulesConfig.model_validate(RULES), devices())
    e.tick(T0)
    for d in ("d1", "d2"):
        e.evaluate([Reading(d, "total", 100.0, "", T0 + 1), Reading(d, "value", 1.0, "", T0 + 1)])
    e.set_away("d2", True)
    return json.loads(json.dumps(e.snapshot()))


def setter(*path: Any) -> Callable[[dict[str, Any], Any], None]:
    def put(snap: dict[str, Any], value: Any) -> None:
        node = snap
        for k in path[:-1]:
            node = node[k]
        node[path[-1]] = value

    return put


DAMAGE: list[tuple[str, Callable[[dict[str, Any], Any], None], Any]] = [
    ("instance entry of two items", setter("instances", "hot|d1"), [["idle", 0, None, None], []]),
    ("instance entry null", setter("instances", "hot|d1"), None),
    ("instances a list", setter("instances"), []),
    ("away a number", setter("away"), 5),
    ("away holds a list", setter("away"), [["d1"]]),
    ("actions a list", setter("actions"), []),
    ("override of three", setter("actions", "overrides"), [["d1", "close_valve", "x"]]),
    ("history time text", setter("actions", "history"), [["d1", "close_valve", ["x"]]]),
    ("history entry of two", setter("actions", "history"), [["d1", "close_valve"]]),
    ("interlock events a number", setter("actions", "interlock_events"), 3),
    ("held an object", setter("actions", "held"), [{"a": 1}]),
    ("alarm since text", setter("instances", "hot|d1", 0, 1), "x"),
    ("alarm phase unknown", setter("instances", "hot|d1", 0, 0), "burning"),
    ("raised_at huge", setter("instances", "hot|d1", 2), 10**400),
    ("meter total text", setter("instances", "use|d1", 1, 0), ["x", T0]),
    ("window start text", setter("instances", "use|d1", 1, 4), "x"),
    ("window bins text", setter("instances", "use|d1", 1, 1), "x" * 5),
]


@pytest.mark.parametrize(("name", "damage", "value"), DAMAGE, ids=[d[0] for d in DAMAGE])
async def test_a_damaged_snapshot_starts_and_the_rest_is_restored(
    tmp_path: Path, name: str, damage: Callable[[dict[str, Any], Any], None], value: Any
) -> None:
    snap = good_snapshot()
    damage(snap, value)
    cfg = RulesConfig.model_validate(RULES)
    async with AsyncOutbox(tmp_path / "gw.db") as store:
        await store.put(STATE_KEY, json.dumps(snap))
        e = await build_engine(cfg, devices(), state=store)  # used to raise for most of these
    if name not in ("away a number", "away holds a list"):
        assert e.away == {"d2"}  # the intact parts are restored
    # Every rule of both devices works on: hot raised after its hold, silent after its time.
    e.evaluate([Reading("d1", "value", 50.0, "", T0 + 10), Reading("d2", "value", 50.0, "", T0 + 10)])
    out = [ev for t in range(11, 200) for ev in e.tick(T0 + t)]
    got = sorted((ev.rule, ev.device_id) for ev in out if ev.state is R and ev.kind != "action")
    assert got == [("hot", "d1"), ("hot", "d2"), ("silent", "d1"), ("silent", "d2")]


async def test_any_other_failure_of_the_restore_starts_fresh(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def broken(self: RuleEngine, data: Any) -> int:
        raise RecursionError("a check the restore does not have")

    cfg = RulesConfig.model_validate(RULES)
    async with AsyncOutbox(tmp_path / "gw.db") as store:
        await store.put(STATE_KEY, json.dumps(good_snapshot()))
        monkeypatch.setattr(PersistentRuleEngine, "restore", broken)
        e = await build_engine(cfg, devices(), state=store)
    assert e.away == set() and len(e.instances) == 6


def test_a_restored_value_of_the_wrong_type_starts_that_instance_fresh() -> None:
    snap = good_snapshot()
    snap["instances"]["silent|d1"][1] = ["x"]  # last_ts text: it used to raise at every tick
    snap["instances"]["hot|d2"][2] = "x"  # raised_at text
    e = RuleEngine(RulesConfig.model_validate(RULES), devices())
    assert e.restore(snap) == 5  # (a missing rule's last reading is not restored: see test_restart_state)
    assert isinstance(e.instances["silent|d1"].cond, MissingCondition)
    out = [ev for t in range(2, 200) for ev in e.tick(T0 + t)]
    assert sorted(states(out)) == [("silent", R), ("silent", R)]


class FailingTick(MissingCondition):
    """A condition with a bug that raises at every tick (nothing in the engine is its peer)."""

    __slots__ = ()

    def on_tick(self, now: float) -> bool | None:
        raise ZeroDivisionError("bug")


def test_one_instance_failing_at_every_tick_stops_no_other(caplog: pytest.LogCaptureFixture) -> None:
    e = RuleEngine(RulesConfig.model_validate(RULES), devices())
    broken = e.instances["silent|d1"]
    broken.cond = FailingTick(broken.rule)  # type: ignore[arg-type]
    e._ticked.remove(broken)
    e._ticked.insert(1, broken)  # between other instances: those after it must still run
    e.tick(T0)
    e.evaluate([Reading("d2", "value", 50.0, "", T0 + 1)])  # d2 hot: its 30 s hold starts
    out = [ev for t in range(2, 200) for ev in e.tick(T0 + t)]
    got = sorted((ev.rule, ev.device_id) for ev in out if ev.kind != "action")
    assert got == [("hot", "d2"), ("silent", "d2")]
    assert e.instances["hot|d2"].alarm.phase is AlarmPhase.ACTIVE
    assert sum("failed at a tick" in r.getMessage() for r in caplog.records) == 1  # logged once


def test_a_damaged_household_node_is_fed_again() -> None:
    """The fresh condition of a damaged entry gets the household's readings (the feeds held the old
    condition's methods: the PIR node's "silent" alarm flapped every minute while it reported)."""
    cfg = RulesConfig.model_validate(
        {"households": [{"id": "302", "bed": "bed", "water": "wm", "motion": "pir", "node_stale_s": 3600}]}
    )
    devs = [dev("bed", points=("in_bed",)), dev("wm", points=("flow_total",)), dev("pir", points=("motion",))]

    def live(e: RuleEngine, start: float, hours: float) -> list[Any]:
        out: list[Any] = []
        for m in range(int(hours * 60)):
            t = start + m * 60
            out += e.evaluate([Reading("pir", "motion", m % 2 == 0, "", t)])  # the PIR every minute
            out += e.tick(t)
        return out

    e0 = RuleEngine(cfg, devs)
    live(e0, T0, 0.5)
    snap = json.loads(json.dumps(e0.snapshot()))
    key = next(k for k in snap["instances"] if k.endswith(".node|pir"))
    for damaged in (False, True):
        s = copy.deepcopy(snap)
        if damaged:
            s["instances"][key][1] = ["x"]
        e = RuleEngine(cfg, devs)
        e.restore(s)
        assert live(e, T0 + 1800, 2) == []
