"""The registry of active alarms is saved one row per alarm: a change writes its own row. It was
saved whole, as one state value, within a second of any change: 2.6 MB written per change with a
fire panel's 4,096 records active, so a point raised and cleared over and over in a fault storm
wrote about 200 GB a day to the SD card. The guarantees stay: after a restart the registry is what
was saved, and what a version before the rows saved (one value) is moved into rows.

Real outbox on disk; the bytes are those each call asks it to store (tests/uplink/test_command_rows)."""

from __future__ import annotations

import json
from pathlib import Path

from citynerve.gateway.alarms import STATE_KEY, ActiveAlarms
from citynerve.gateway.api import Event, EventState, Severity
from citynerve.gateway.store import AsyncOutbox
from tests.uplink.test_command_rows import CountingState

KEPT = "alarms"  # the outbox's kept set of the registry: one row per alarm


def smoke(i: int, state: EventState = EventState.RAISED) -> Event:
    return Event(
        f"fp-{i // 512}",
        "smoke",
        state,
        Severity.CRITICAL,
        1.7e9 + i,
        "panel:gst",
        None,
        f"smoke at loop {i // 256} point {i % 256} (building 7)",
        subject=f"{i // 256}-{i % 256}",
    )


def names(alarms: ActiveAlarms) -> set[tuple[str, str, str, str]]:
    return {a.key for a in alarms.active()}


async def stored_per_change(outbox: AsyncOutbox, active: int) -> float:
    state, alarms = CountingState(outbox), ActiveAlarms()
    for i in range(active):
        alarms.apply(smoke(i))
    await alarms.save(state)
    before = state.stored
    for _ in range(10):  # a point in a fault storm: raised, saved, cleared, saved
        alarms.apply(smoke(active))
        await alarms.save(state)
        alarms.apply(smoke(active, EventState.CLEARED))
        await alarms.save(state)
    return (state.stored - before) / 20


async def test_a_change_stores_its_own_row_whatever_is_active(tmp_path: Path) -> None:
    for active in (100, 4_096):
        async with AsyncOutbox(tmp_path / f"{active}.db") as outbox:
            # One alarm's row (a few hundred bytes) or none (a clear deletes it). It was the whole
            # registry: 1.2 MB a change with 4,096 active.
            assert await stored_per_change(outbox, active) < 500


async def test_after_a_restart_the_registry_is_what_was_saved(tmp_path: Path) -> None:
    async with AsyncOutbox(tmp_path / "o.db") as outbox:
        alarms = ActiveAlarms()
        for i in range(6):
            alarms.apply(smoke(i))
        alarms.apply(Event("wm-3", "device_offline", EventState.RAISED, Severity.MAJOR, 1.7e9, "bus.offline"))
        await alarms.save(outbox)
        alarms.apply(smoke(2, EventState.CLEARED))
        alarms.acknowledge("fp-0", "smoke", by="ops desk 3", ts=1.7e9 + 60, subject="0-4")
        alarms.apply(smoke(9))
        await alarms.save(outbox)
        assert not alarms.dirty
        assert len(await outbox.kept(KEPT)) == 7

        again = ActiveAlarms()
        assert await again.load(outbox) == 7
        assert names(again) == names(alarms) and all(a.restored for a in again.active())
        assert next(a for a in again.active() if a.subject == "0-4").acked_by == "ops desk 3"
        assert not again.dirty  # nothing to write back

        # A damaged row is skipped and deleted; the others are kept.
        await outbox.keep(KEPT, {'["fp-0","smoke","panel:gst","0-1"]': "{damaged"})
        again = ActiveAlarms()
        assert await again.load(outbox) == 6 and not again.unreadable
        await again.save(outbox)
        assert len(await outbox.kept(KEPT)) == 6


async def test_what_the_single_value_held_is_moved_into_rows(tmp_path: Path) -> None:
    """A version before the rows saved the registry as one state value: after the update every
    alarm in it is restored and kept in rows, and the value is gone. Rows that an update's rollback
    left behind are older than the value: they go."""
    async with AsyncOutbox(tmp_path / "o.db") as outbox:
        old = ActiveAlarms()
        for i in range(3):
            old.apply(smoke(i))
        await outbox.put(STATE_KEY, json.dumps(old.snapshot()))
        await outbox.keep(KEPT, {'["fp-0","smoke","panel:gst","0-7"]': '{"stale": 1}'})
        alarms = ActiveAlarms()
        assert await alarms.load(outbox) == 3 and names(alarms) == names(old)
        await alarms.save(outbox)  # the first save, within a second of the start
        assert await outbox.get(STATE_KEY) is None
        assert len(await outbox.kept(KEPT)) == 3
        again = ActiveAlarms()
        assert await again.load(outbox) == 3 and names(again) == names(old)

        # An unreadable value: the registry knows nothing (as before the rows), and it is deleted.
        await outbox.put(STATE_KEY, "{not json")
        broken = ActiveAlarms()
        assert await broken.load(outbox) == 0 and broken.unreadable
        await broken.save(outbox)
        assert await outbox.get(STATE_KEY) is None and await outbox.kept(KEPT) == {}
