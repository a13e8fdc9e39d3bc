"""Operator controls on a real rule engine and a real outbox file: away reaches the rules and ends by
itself, maintenance marks alarms, acknowledgements keep alarms listed, everything survives a restart,
and end times follow the monotonic clock, not a wall-clock step."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from citynerve.gateway.alarms import ActiveAlarms
from citynerve.gateway.api import Event, EventState, Severity
from citynerve.gateway.operator import OperatorControls, OperatorRequestError
from citynerve.gateway.rules import RuleEngine
from citynerve.gateway.store import AsyncOutbox
from tests.rules.conftest import T0, dev, engine, feed, states

R = EventState.RAISED


class Clocks:
    """Wall and monotonic clocks the test moves (a wall step moves only `wall`)."""

    def __init__(self) -> None:
        self.wall = T0
        self.mono = 1000.0


def make(
    outbox: AsyncOutbox, rules: RuleEngine, clocks: Clocks, alarms: ActiveAlarms | None = None
) -> tuple[OperatorControls, list[Event], ActiveAlarms]:
    events: list[Event] = []
    reg = alarms or ActiveAlarms()
    ops = OperatorControls(
        store=outbox,
        alarms=reg,
        events=events.append,
        devices=lambda: rules.devices,
        rules=lambda: rules,
        action_ids=lambda: {"shut_valve"},
        wall=lambda: clocks.wall,
        mono=lambda: clocks.mono,
    )
    return ops, events, reg


def away_engine() -> RuleEngine:
    return engine(
        [{"id": "no_use", "kind": "threshold", "point": "value", "below": 1, "suppress_when_away": True}],
        [dev("d1"), dev("d2")],
    )


async def test_away_reaches_the_rules_is_audited_and_ends_by_itself(tmp_path: Path) -> None:
    clocks = Clocks()
    rules = away_engine()
    async with AsyncOutbox(tmp_path / "o.db") as outbox:
        ops, events, _ = make(outbox, rules, clocks)
        result = await ops.request("away", {"device_id": "d1", "for_s": 3600}, "ops centre")
        assert result["until"] == T0 + 3600
        assert "d1" in rules.away
        audit = events[-1]
        assert (audit.kind, audit.device_id, audit.one_shot) == ("operator", "d1", True)
        assert audit.attrs == {"who": "ops centre", "what": "away", "until": T0 + 3600}
        # while away, no-use does not raise for d1
        assert states(feed(rules, [(T0, 0)])) == []
        clocks.mono += 3599
        assert ops.expire() == []
        clocks.mono += 2
        assert ops.expire() == ["back d1"]
        assert "d1" not in rules.away
        assert events[-1].attrs["what"] == "back" and events[-1].attrs["who"] == "expiry"
        assert states(rules.tick(T0 + 1)) == [("no_use", R)]


async def test_a_wall_clock_step_neither_ends_nor_stretches_a_window(tmp_path: Path) -> None:
    clocks = Clocks()
    rules = away_engine()
    async with AsyncOutbox(tmp_path / "o.db") as outbox:
        ops, _, _ = make(outbox, rules, clocks)
        await ops.request("maintenance", {"device_id": "d2", "for_s": 600}, "crew")
        clocks.wall += 86400  # NTP steps the clock a day ahead
        assert ops.expire() == [] and ops.in_maintenance("d2")
        clocks.wall -= 2 * 86400  # and back before the start
        clocks.mono += 601
        assert ops.expire() == ["maintenance_end d2"]


async def test_flags_survive_a_restart_and_windows_past_their_end_close_at_start(tmp_path: Path) -> None:
    clocks = Clocks()
    async with AsyncOutbox(tmp_path / "o.db") as outbox:
        ops, _, _ = make(outbox, away_engine(), clocks)
        await ops.request("away", {"device_id": "d1"}, "ops")  # open-ended
        await ops.request("maintenance", {"device_id": "d2", "for_s": 600, "reason": "meter swap"}, "crew")
        await ops.request("override", {"device_id": "d1", "action_id": "shut_valve", "on": True}, "ops")
    # restart: a new process, new monotonic origin; 100 s of wall time passed
    clocks.wall += 100
    clocks.mono = 5.0
    rules = away_engine()
    async with AsyncOutbox(tmp_path / "o.db") as outbox:
        ops, events, _ = make(outbox, rules, clocks)
        assert await ops.load() == 3
        assert "d1" in rules.away and ("d1", "shut_valve") in rules.actions.overrides
        snap = ops.snapshot()
        assert snap["maintenance"][0]["remaining_s"] == 500.0
        assert snap["maintenance"][0]["reason"] == "meter swap"
        assert snap["away"][0]["until"] is None
    # down for longer than the window: it ends at start, audited
    clocks.wall += 1000
    async with AsyncOutbox(tmp_path / "o.db") as outbox:
        ops, events, _ = make(outbox, away_engine(), clocks)
        assert await ops.load() == 2
        assert [e.attrs["what"] for e in events] == ["maintenance_end"]


async def test_maintenance_marks_alarms_and_ack_keeps_them_listed(tmp_path: Path) -> None:
    clocks = Clocks()
    async with AsyncOutbox(tmp_path / "o.db") as outbox:
        ops, _, reg = make(outbox, away_engine(), clocks)
        await ops.request("maintenance", {"device_id": "d2", "for_s": 600}, "crew")
        for d in ("d1", "d2"):
            ev = Event(d, "manhole_open", R, Severity.MAJOR, T0, "cover", 1)
            ops.mark(ev)
            reg.apply(ev)
        marked = {a.device_id: a.maintenance for a in reg.active()}
        assert marked == {"d1": False, "d2": True}
        with pytest.raises(OperatorRequestError) as err:
            await ops.request("ack", {"device_id": "d1", "kind": "smoke"}, "ops")
        assert err.value.reason == "unknown_alarm"
        await ops.request("ack", {"device_id": "d1", "kind": "manhole_open"}, "ops desk 3")
        a = next(a for a in reg.active() if a.device_id == "d1")
        assert a.acked_by == "ops desk 3" and a.acked_at == T0
        # raised again while active: still acknowledged; persisted with the registry
        reg.apply(Event("d1", "manhole_open", R, Severity.MAJOR, T0 + 5, "cover", 2))
        again = ActiveAlarms()
        again.restore(reg.snapshot())
        assert next(a for a in again.active() if a.device_id == "d1").acked_by == "ops desk 3"
        assert next(a for a in again.active() if a.device_id == "d2").maintenance


@pytest.mark.parametrize(
    ("op", "args", "reason"),
    [
        ("away", {"device_id": "nope"}, "unknown_device"),
        ("maintenance", {"device_id": "d1"}, "bad_value"),  # an end time is required
        ("maintenance", {"device_id": "d1", "for_s": 31 * 86400}, "bad_value"),
        ("away", {"device_id": "d1", "until_ms": int(T0 * 1000) - 1}, "bad_value"),
        ("away", {"device_id": "d1", "for_s": 10, "until_ms": 1}, "bad_value"),
        ("override", {"device_id": "d1", "action_id": "nope", "on": True}, "bad_value"),
        ("override", {"device_id": "d1", "action_id": "shut_valve", "on": "yes"}, "bad_value"),
        ("reboot", {}, "bad_value"),
        ("maintenance", {"device_id": "d1", "until_ms": 10**400}, "bad_value"),  # was a bare OverflowError
        ("maintenance", {"device_id": "d1", "for_s": 10**400}, "bad_value"),
    ],
)
async def test_bad_requests_are_refused_with_a_reason(
    tmp_path: Path, op: str, args: dict[str, Any], reason: str
) -> None:
    async with AsyncOutbox(tmp_path / "o.db") as outbox:
        ops, events, _ = make(outbox, away_engine(), Clocks())
        with pytest.raises(OperatorRequestError) as err:
            await ops.request(op, args, "ops")
        assert err.value.reason == reason
        assert events == []


async def test_maintenance_ended_by_hand_resets_a_detector_under_unwanted_alarm_management(
    tmp_path: Path,
) -> None:
    # A detector flagged for unwanted alarms (the smoke-fire pack's rules, tests/rules) is cleaned
    # during a maintenance window; ending the window by hand says the work is done, so the flag
    # clears at the next tick. A window that runs out by itself resets nothing.
    from tests.rules.test_unwanted_alarms import WEEK, _alarm, _flat

    rules = _flat()
    for n in range(3):
        _alarm(rules, "a", n * WEEK, 10)
    flagged = [i.rule.id for i in rules.instances.values() if i.alarm.active]
    assert flagged == ["unwanted_alarms"], flagged
    clocks = Clocks()
    async with AsyncOutbox(tmp_path / "o.db") as outbox:
        ops, _, _ = make(outbox, rules, clocks)
        await ops.request("maintenance", {"device_id": "a", "for_s": 600}, "crew")
        clocks.mono += 601
        assert ops.expire() == ["maintenance_end a"]  # ran out: nothing reset
        assert rules.tick(T0 + 2 * WEEK + 1800) == []
        await ops.request("maintenance", {"device_id": "a", "for_s": 3600}, "crew")
        result = await ops.request("maintenance_end", {"device_id": "a"}, "crew")
        assert result == {"maintenance_end": "a", "reset": ["unwanted_alarms"]}
    out = rules.tick(T0 + 2 * WEEK + 3600)
    assert [(e.rule, e.state) for e in out] == [("unwanted_alarms", EventState.CLEARED)]


# -- a box without RTC: flags restored before NTP has set the wall clock ----------------------------


async def test_a_window_restored_at_a_1970_boot_is_capped_and_ends_when_the_clock_is_synced(
    tmp_path: Path,
) -> None:
    from citynerve.gateway.operator import MAX_AWAY_S, MAX_MAINTENANCE_S

    clocks = Clocks()
    async with AsyncOutbox(tmp_path / "o.db") as outbox:
        ops, _, _ = make(outbox, away_engine(), clocks)
        await ops.request("away", {"device_id": "d1", "for_s": 3600}, "ops")
        await ops.request("maintenance", {"device_id": "d2", "for_s": 7200}, "crew")
    # Power cut; back three days later with no RTC: the wall clock reads 1970 until NTP syncs.
    clocks.wall, clocks.mono = 0.0, 5.0
    rules = away_engine()
    async with AsyncOutbox(tmp_path / "o.db") as outbox:
        ops, events, _ = make(outbox, rules, clocks)
        assert await ops.load() == 2
        snap = ops.snapshot()  # not 56 years: at most the longest window there can be
        assert snap["away"][0]["remaining_s"] == MAX_AWAY_S
        assert snap["maintenance"][0]["remaining_s"] == MAX_MAINTENANCE_S
        # NTP steps the clock to the real time; the runtime learns it is synchronised
        clocks.wall, clocks.mono = T0 + 3 * 86400, 35.0
        assert ops.expire() == []  # a step alone changes nothing
        ops.rearm()
        assert ops.expire() == ["back d1", "maintenance_end d2"]
        assert [(e.attrs["what"], e.attrs["who"]) for e in events] == [
            ("back", "expiry"),
            ("maintenance_end", "expiry"),
        ]
        assert "d1" not in rules.away and not ops.in_maintenance("d2")
        ev = Event("d2", "tamper", R, Severity.CRITICAL, clocks.wall, "cover", 1)
        ops.mark(ev)
        assert "maintenance" not in ev.attrs  # the platform dispatches it


async def test_a_window_restored_on_a_stale_clock_keeps_its_wall_end_after_the_sync(tmp_path: Path) -> None:
    clocks = Clocks()
    async with AsyncOutbox(tmp_path / "o.db") as outbox:
        ops, _, _ = make(outbox, away_engine(), clocks)
        await ops.request("maintenance", {"device_id": "d2", "for_s": 7200}, "crew")
    # fake-hwclock restores the time it saved at shutdown (T0 + 600); the real time is T0 + 3600
    clocks.wall, clocks.mono = T0 + 600, 5.0
    async with AsyncOutbox(tmp_path / "o.db") as outbox:
        ops, _, _ = make(outbox, away_engine(), clocks)
        await ops.load()
        assert ops.snapshot()["maintenance"][0]["remaining_s"] == 6600.0
        clocks.wall, clocks.mono = T0 + 3600, 35.0
        assert ops.rearm() is False  # nothing to save: the wall end stands
        assert ops.snapshot()["maintenance"][0]["remaining_s"] == 3600.0
        clocks.mono += 3599
        assert ops.expire() == []
        clocks.mono += 2
        assert ops.expire() == ["maintenance_end d2"]


async def test_a_duration_set_before_the_sync_keeps_its_length_and_its_wall_end_follows(
    tmp_path: Path,
) -> None:
    clocks = Clocks()
    clocks.wall = 0.0  # booted in 1970; the crew sets 10 minutes on site before NTP syncs
    async with AsyncOutbox(tmp_path / "o.db") as outbox:
        ops, _, _ = make(outbox, away_engine(), clocks)
        await ops.request("maintenance", {"device_id": "d2", "for_s": 600}, "crew")
        clocks.wall, clocks.mono = T0, clocks.mono + 60
        assert ops.rearm() is True  # the wall end moved: the caller saves
        await ops.save()
        assert ops.expire() == [] and ops.in_maintenance("d2")
        snap = ops.snapshot()["maintenance"][0]
        assert (snap["until"], snap["remaining_s"]) == (T0 + 540, 540.0)
    clocks.wall += 100  # a restart reads the corrected wall end
    async with AsyncOutbox(tmp_path / "o.db") as outbox:
        ops, _, _ = make(outbox, away_engine(), clocks)
        await ops.load()
        assert ops.snapshot()["maintenance"][0]["remaining_s"] == 440.0
