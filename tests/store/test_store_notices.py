"""When the outbox announces the rows it dropped: merged size-cap drops at most a minute late, on
the outbox's own (stepped) monotonic clock."""

from __future__ import annotations

from pathlib import Path

from citynerve.gateway.api import Event, EventState, Reading, Severity
from citynerve.gateway.store import Lane, Outbox
from tests.clock.clocks import SteppedClock


def reading(i: int) -> Reading:
    # values that do not compress away: the size cap must be reached by a few thousand readings
    return Reading(f"meter-{i % 97}", f"p{i % 13}", i * 1.000_123_7, "kWh", 1_700_000_000.0 + i)


def event(i: int) -> Event:
    return Event("smoke-1", "smoke", EventState.RAISED, Severity.CRITICAL, 1_700_000_000.0 + i)


def notices(ob: Outbox) -> list[Event]:
    rows = ob.peek(Lane.EVENT, limit=10_000)
    return [r.record for r in rows if isinstance(r.record, Event) and r.record.kind == "outbox_dropped"]


def test_merged_drops_are_announced_once_their_minute_passed_without_a_new_drop(tmp_path: Path) -> None:
    """A full outbox's trims after the first notice are merged; once the minute has passed, the next
    commit announces them, whether or not it drops anything. They waited for the next drop or the
    gateway's stop: a real gateway left 514 readings unannounced 85 s after its last drop."""
    clock = SteppedClock()
    with Outbox(tmp_path / "o.db", max_bytes=64 * 1024, synchronous="normal", clock=clock) as ob:
        batch = 0
        while ob.stats().lane(Lane.TELEMETRY).dropped == 0 or len(notices(ob)) != 1:
            ob.append([reading(batch * 500 + i) for i in range(500)], [])
            batch += 1
        announced = sum(int(n.attrs["count"]) for n in notices(ob))
        while ob.stats().lane(Lane.TELEMETRY).dropped == announced:  # a trim merged, not announced
            ob.append([reading(batch * 500 + i) for i in range(500)], [])
            batch += 1
        dropped = ob.stats().lane(Lane.TELEMETRY).dropped
        assert len(notices(ob)) == 1
        ob.ack(Lane.TELEMETRY, ob.next_seq)  # the uplink catches up: nothing is dropped any more
        clock.advance(59.0)
        ob.append([], [event(1)])
        assert len(notices(ob)) == 1  # within the minute: still merged
        clock.advance(2.0)
        ob.append([], [event(2)])  # no drop in it, but the minute has passed
        late = notices(ob)[1:]
        assert [n.attrs["reason"] for n in late] == ["size_cap"]
        assert announced + int(late[0].attrs["count"]) == dropped == ob.stats().dropped_by["size_cap"]
        assert late[0].attrs["last_seq"] < ob.next_seq
        clock.advance(120.0)
        ob.append([], [event(3)])
        assert len(notices(ob)) == 2  # nothing more pending: nothing more announced
    with Outbox(tmp_path / "o.db", max_bytes=64 * 1024, clock=clock) as ob:
        assert len(notices(ob)) == 2  # ... nor at the next open
