"""Detector and alarm state survives a restart, kept in the real SQLite outbox's state table."""

from __future__ import annotations

import json
import random
from pathlib import Path

from citynerve.gateway.api import Reading
from citynerve.gateway.rules import STATE_KEY, PersistentRuleEngine, RulesConfig, build_engine
from citynerve.gateway.store import AsyncOutbox

from .conftest import T0, dev, feed, states

RULES = {
    "rules": [
        {"id": "no_use", "kind": "consumption", "point": "volume", "window": "sliding", "below": 0.01},
        {"id": "odd", "kind": "anomaly", "point": "temp", "method": "robust", "z": 6, "warmup": 20},
        {"id": "hot", "kind": "threshold", "point": "temp", "above": 60, "hold_s": 10},
    ],
    "away": [],
}


def devices() -> list:  # type: ignore[type-arg]
    return [dev(points=("volume", "temp"))]


async def test_state_survives_restart_in_the_outbox(tmp_path: Path) -> None:
    cfg = RulesConfig.model_validate(RULES)
    rng = random.Random(4)
    async with AsyncOutbox(tmp_path / "gw.db") as store:
        e1 = await build_engine(cfg, devices(), state=store)
        # 8 h of no use, a learned temperature, a hot spell pending its hold, a household away.
        feed(e1, [(T0 + i * 900, 123.456) for i in range(33)], point="volume")
        feed(e1, [(T0 + i * 60, rng.gauss(20, 0.3)) for i in range(100)], point="temp")
        e1.evaluate([Reading("d1", "temp", 70.0, "C", T0 + 6001)])
        e1.set_away("d1", True)
        e1.set_override("d1", "valve", True)
        await e1.save()
    async with AsyncOutbox(tmp_path / "gw.db") as store:
        raw = await store.get(STATE_KEY)
        assert raw is not None and json.loads(raw)["version"] == 1
        e2 = await build_engine(cfg, {d.id: d for d in devices()}, state=store)  # as the runtime passes them
        assert e2.away == {"d1"} and ("d1", "valve") in e2.actions.overrides
        # The hold continues across the restart: raised 10 s after it began, not 10 s after start.
        assert states(e2.tick(T0 + 6011)) == [("hot", "raised")]
        # The anomaly raised by the 70 before the restart clears once; the detector is warm, so a
        # jump is flagged at once (a fresh one would need 20 values of warm-up).
        assert e2.instances["odd|d1"].alarm.active
        ev = feed(e2, [(T0 + 6100, 20.1)], point="temp")
        assert sorted(states(ev)) == [("hot", "cleared"), ("odd", "cleared")]
        assert states(feed(e2, [(T0 + 6160, 30.0)], point="temp")) == [("odd", "raised")]
        # The no-use window continues: 12 h after the first read (before the restart), raised.
        ev = feed(e2, [(T0 + i * 900, 123.456) for i in range(33, 50)], point="volume")
        assert states(ev) == [("no_use", "raised")]
        assert 12 * 3600 <= ev[0].ts - T0 <= 12.25 * 3600


async def test_periodic_snapshot_from_tick_and_bad_snapshots_start_fresh(tmp_path: Path) -> None:
    cfg = RulesConfig.model_validate({**RULES, "snapshot_interval_s": 60})
    async with AsyncOutbox(tmp_path / "gw.db") as store:
        e = PersistentRuleEngine(cfg, devices(), state=store, clock=lambda: T0)
        feed(e, [(T0, 1.0)], point="volume", tick=False)
        e.tick(T0 + 30)
        assert await store.get(STATE_KEY) is None
        e.tick(T0 + 61)  # schedules the snapshot as a task
        await e.save()
        assert json.loads(await store.get(STATE_KEY) or "{}")["instances"]["no_use|d1"]
        broken = {"version": 1, "instances": {"no_use|d1": [["nonsense"], [], "x"]}}
        for bad in ("not json", "[1, 2]", json.dumps({"version": 99}), json.dumps(broken)):
            await store.put(STATE_KEY, bad)
            fresh = await build_engine(cfg, devices(), state=store)
            assert fresh.instances["no_use|d1"].alarm.phase.value == "idle"


async def test_restored_raised_alarm_clears_once_and_does_not_raise_again(tmp_path: Path) -> None:
    cfg = RulesConfig.model_validate(RULES)
    async with AsyncOutbox(tmp_path / "gw.db") as store:
        e1 = await build_engine(cfg, devices(), state=store)
        assert states(feed(e1, [(T0, 70.0), (T0 + 11, 70.0)], point="temp")) == [("hot", "raised")]
        await e1.save()
        e2 = await build_engine(cfg, devices(), state=store)
        assert feed(e2, [(T0 + 20, 75.0)], point="temp") == []
        assert states(feed(e2, [(T0 + 30, 20.0)], point="temp")) == [("hot", "cleared")]


async def test_override_and_away_are_saved_at_once(tmp_path: Path) -> None:
    cfg = RulesConfig.model_validate(RULES)
    async with AsyncOutbox(tmp_path / "gw.db") as store:
        e = await build_engine(cfg, devices(), state=store)
        e.set_override("d1", "valve", True)
        e.set_away("d1", True)
        assert e._saving is not None
        await e._saving
        data = json.loads(await store.get(STATE_KEY) or "{}")
        assert data["away"] == ["d1"] and data["actions"]["overrides"] == [["d1", "valve"]]
