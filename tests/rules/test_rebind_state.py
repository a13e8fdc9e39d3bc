"""A reload that changes the devices builds the rule engine again (gateway/reload.py): the state a
restart does not restore on purpose (the start's grace period) is carried over from the running
engine; a restart still starts with the grace period (test_restart_state.py)."""

from __future__ import annotations

import json

from citynerve.gateway.api import EventState, Reading
from citynerve.gateway.reload import carry_conditions
from citynerve.gateway.rules import RuleEngine, RulesConfig
from citynerve.gateway.rules.household_presence import NodeSilentCondition

from .conftest import T0, dev

R = EventState.RAISED
RULES = RulesConfig.model_validate(
    {"rules": [{"id": "silent", "kind": "missing", "point": "value", "after_s": 600}]}
)


def rebuilt(old: RuleEngine, devices: list[object]) -> RuleEngine:
    """As `reload.rebind_rules` does: a new engine, the old one's snapshot, then what it carries."""
    engine = RuleEngine(RULES, devices)  # type: ignore[arg-type]
    engine.restore(json.loads(json.dumps(old.snapshot())))
    carry_conditions(old, engine)
    return engine


def test_a_reload_keeps_the_missing_rules_last_reading_and_a_restart_does_not() -> None:
    e = RuleEngine(RULES, [dev("d1"), dev("d2")])
    e.tick(T0)
    e.evaluate([Reading("d1", "value", 1.0, "", T0 + 10), Reading("d2", "value", 1.0, "", T0 + 10)])
    # Reloads every 300 s (a device added each time): d1 goes on reporting, d2 is dead since T0 + 10.
    devices = [dev("d1"), dev("d2")]
    raised: list[tuple[str, float]] = []
    for n in range(1, 4):
        for t in range(300 * (n - 1) + 11, 300 * n):
            raised += [(ev.device_id, t) for ev in e.tick(T0 + t) if ev.state is R]
            e.evaluate([Reading("d1", "value", 1.0, "", T0 + t)])
        devices.append(dev(f"x{n}"))
        e = rebuilt(e, devices)
    for t in range(900, 1000):
        raised += [(ev.device_id, t) for ev in e.tick(T0 + t) if ev.state is R]
    # Raised after_s after its last reading, not after_s after the last reload (T0 + 1500); x1,
    # added at T0 + 300 and never heard, after its own grace period (from its first tick, T0 + 311).
    assert raised == [("d2", 611), ("x1", 912)]
    # A restart (the snapshot alone) starts with the grace period: nothing at its first ticks.
    again = RuleEngine(RULES, devices)
    again.restore(json.loads(json.dumps(e.snapshot())))
    assert [ev for t in range(1000, 1100) for ev in again.tick(T0 + t)] == []


def test_a_reload_keeps_a_household_nodes_last_report() -> None:
    running = NodeSilentCondition(3600)
    running.on_tick(T0)
    running.on_reading(False, T0 + 5)
    assert running.on_tick(T0 + 3000) is False
    new = NodeSilentCondition(3600)
    new.restore(running.snapshot())  # what a restart restores: nothing
    new.carry(running)
    assert new.on_tick(T0 + 3000) is False  # known, not the start's "unknown"
    assert new.on_tick(T0 + 3606) is True  # stale_s after its last report, not after the reload
    fresh = NodeSilentCondition(3600)  # a restart: the grace period, counted from the first tick
    assert fresh.on_tick(T0 + 3606) is None
