"""The registry of active alarms (citynerve.gateway.alarms): raise until cleared, whatever raised it."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from citynerve.gateway.alarms import KEPT, STATE_KEY, ActiveAlarms
from citynerve.gateway.api import Event, EventState, Severity
from citynerve.gateway.store import AsyncOutbox


def ev(
    device: str,
    kind: str,
    state: EventState = EventState.RAISED,
    *,
    rule: str = "r",
    subject: str = "",
    severity: Severity = Severity.MAJOR,
    one_shot: bool = False,
    ts: float = 1000.0,
) -> Event:
    return Event(device, kind, state, severity, ts, rule, None, "", subject=subject, one_shot=one_shot)


@pytest.fixture
async def outbox(tmp_path: Path) -> AsyncIterator[AsyncOutbox]:
    """The registry is saved in the real outbox (its state and kept sets)."""
    async with AsyncOutbox(tmp_path / "gw.db") as ob:
        yield ob


def names(alarms: ActiveAlarms) -> set[tuple[str, str, str]]:
    return {(a.device_id, a.kind, a.subject) for a in alarms.active()}


def test_raised_until_the_matching_clear() -> None:
    alarms = ActiveAlarms()
    assert alarms.apply(ev("d1", "smoke", severity=Severity.CRITICAL))
    assert alarms.apply(ev("d2", "device_offline", rule="bus.offline"))
    assert not alarms.apply(ev("d2", "device_offline", EventState.CLEARED, rule="other"))  # another rule's
    assert [a.kind for a in alarms.active()] == ["smoke", "device_offline"]  # most severe first
    assert alarms.counts()["critical"] == 1 and alarms.counts()["major"] == 1
    assert alarms.apply(ev("d2", "device_offline", EventState.CLEARED, rule="bus.offline"))
    assert names(alarms) == {("d1", "smoke", "")}
    assert not alarms.apply(ev("d9", "smoke", EventState.CLEARED))  # a clear of nothing changes nothing


def test_subjects_wildcards_and_one_shot_reports() -> None:
    alarms = ActiveAlarms()
    for subject in ("1-4", "1-5"):
        alarms.apply(ev("fp", "smoke", rule="panel:gst", subject=subject))
    alarms.apply(ev("fp", "panel_fault", rule="panel:gst", subject="2-1"))
    alarms.apply(ev("fp", "panel_fault", rule="panel:gst", subject="2-2"))
    alarms.apply(ev("fp", "smoke", EventState.CLEARED, rule="panel:gst", subject="1-4"))
    assert names(alarms) == {
        ("fp", "smoke", "1-5"),
        ("fp", "panel_fault", "2-1"),
        ("fp", "panel_fault", "2-2"),
    }
    # A clear without the device (故障恢复 for the whole panel): every subject of that kind.
    alarms.apply(ev("fp", "panel_fault", EventState.CLEARED, rule="panel:gst", subject="*"))
    assert names(alarms) == {("fp", "smoke", "1-5")}
    # Reports are never active; a reset (one-shot, subject "*") clears what its rule raised.
    alarms.apply(ev("d1", "local_action", one_shot=True))
    alarms.apply(ev("d1", "smoke", rule="smoke-fire.smoke"))
    assert ("d1", "local_action", "") not in names(alarms)
    alarms.apply(ev("fp", "panel_reset", rule="panel:gst", subject="*", one_shot=True))
    assert names(alarms) == {("d1", "smoke", "")}


def test_bounded() -> None:
    alarms = ActiveAlarms(max_active=3)
    for i in range(5):
        alarms.apply(ev(f"d{i}", "smoke"))
    assert len(alarms) == 3 and alarms.dropped == 2
    assert alarms.apply(ev("d0", "smoke"))  # a raise again of a listed one still updates it


async def test_persisted_and_restored_marked(outbox: AsyncOutbox) -> None:
    state = outbox
    alarms = ActiveAlarms()
    alarms.apply(ev("fp", "smoke", rule="panel:gst", subject="1-4", severity=Severity.CRITICAL))
    alarms.apply(ev("wm-3", "device_offline", rule="bus.offline"))
    alarms.apply(ev("sd-1", "smoke", rule="smoke-fire.smoke"))
    await alarms.save(state)
    assert not alarms.dirty
    damaged = {'["x"]': json.dumps({"device_id": "x"})}
    await state.keep(KEPT, damaged)  # a damaged row is skipped, the others kept

    again = ActiveAlarms()
    assert await again.load(state) == 3
    assert all(a.restored for a in again.active())
    assert again.devices_with("device_offline") == {"wm-3"}
    assert again.active()[0].severity is Severity.CRITICAL
    # The rule engine's own snapshot is the truth for its rules: sd-1's is no longer active there.
    gone = again.reconcile({"smoke-fire.smoke"}, [])
    assert [a.device_id for a in gone] == ["sd-1"] and ("sd-1", "smoke", "") not in names(again)
    # Raised again by its source after the restart: no longer only restored.
    again.apply(ev("wm-3", "device_offline", rule="bus.offline"))
    assert not next(a for a in again.active() if a.device_id == "wm-3").restored

    await state.put(STATE_KEY, "{not json")
    assert await ActiveAlarms().load(state) == 0


def test_alarms_of_removed_devices_are_forgotten_with_a_clear() -> None:
    alarms = ActiveAlarms()
    alarms.apply(ev("fp", "smoke", rule="panel:gst", subject="1-4", severity=Severity.CRITICAL))
    alarms.apply(ev("gone", "device_offline", rule="bus.offline"))
    alarms.apply(ev("tcp-9", "bus_fault", rule="bus.supervisor"))
    gone = alarms.forget_devices({"fp", "tcp-1"})
    assert sorted(a.device_id for a in gone) == ["gone", "tcp-9"] and names(alarms) == {
        ("fp", "smoke", "1-4")
    }
    clear = gone[0].cleared("device removed", 2000.0)
    assert clear.state is EventState.CLEARED and clear.ts == 2000.0
    again = ActiveAlarms()
    again.apply(ev(gone[0].device_id, gone[0].kind, rule=gone[0].rule))
    assert again.apply(clear) and len(again) == 0  # the clear names the same alarm


async def test_alarms_of_rules_no_longer_configured_are_forgotten_not_the_drivers(
    outbox: AsyncOutbox,
) -> None:
    """The engine's rule ids name its alarms when they are raised: a restart without a rule clears
    that rule's alarms (nothing else would) and leaves the fire panel's and bus owners' alone."""
    state = outbox
    alarms = ActiveAlarms()
    alarms.reconcile({"smoke", "leak"}, [])
    alarms.apply(ev("sd-3", "smoke", rule="smoke", severity=Severity.CRITICAL))
    alarms.apply(ev("fp", "smoke", rule="panel:gst", subject="1-4", severity=Severity.CRITICAL))
    alarms.apply(ev("wm-3", "device_offline", rule="bus.offline"))
    await alarms.save(state)

    again = ActiveAlarms()
    assert await again.load(state) == 3
    gone = again.reconcile({"leak"}, [])  # the smoke rule removed (or renamed) from the config
    assert [a.key for a in gone] == [("sd-3", "smoke", "smoke", "")]
    assert names(again) == {("fp", "smoke", "1-4"), ("wm-3", "device_offline", "")}
    assert again.reconcile(set(), []) == []  # no rules at all: still the drivers' alarms

    # Saved before the registry recorded it: an alarm of a rule the engine has counts as its own.
    old = ActiveAlarms()
    old.apply(ev("sd-4", "smoke", rule="smoke"))
    await state.put(STATE_KEY, json.dumps({"version": 1, "active": [a.to_dict() for a in old.active()]}))
    again = ActiveAlarms()
    await again.load(state)
    assert again.reconcile({"smoke"}, [("sd-4", "smoke", "smoke")]) == []
    assert [a.device_id for a in again.reconcile(set(), [])] == ["sd-4"]
