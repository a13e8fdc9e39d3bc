"""Outbox: seqs, lanes, exact round trips, acks, state, retention by size cap."""

from __future__ import annotations

import dataclasses
import json
import math
import sqlite3
from collections.abc import Iterator
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from citynerve.gateway.api import Event, EventState, Quality, Reading, Severity
from citynerve.gateway.store import (
    Lane,
    Outbox,
    RecordError,
    SchemaVersionError,
    StoreError,
    StoreFullError,
    read_stats,
    schema_version,
)
from citynerve.gateway.store._blocks import ReadingMark, decode_block, encode_block


def reading(i: int, device: str = "meter-1", point: str = "flow", ts: float | None = None) -> Reading:
    return Reading(device, point, float(i), "m3/h", 1_700_000_000.0 + i if ts is None else ts)


def event(i: int, kind: str = "smoke") -> Event:
    return Event(
        device_id="smoke-3",
        kind=kind,
        state=EventState.RAISED,
        severity=Severity.CRITICAL,
        ts=1_700_000_000.5 + i,
        rule="smoke.alarm",
        value=True,
        message=f"smoke in room {i}",
        attrs={
            "location": {"address_code": "320508001", "floor": "3F"},
            "component_code": "3205080101000001",
        },
    )


@pytest.fixture
def db(tmp_path: Path) -> Path:
    return tmp_path / "var" / "outbox.db"


@pytest.fixture(scope="module")
def shared(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Outbox]:
    """One outbox for the many examples of a property test (opening a file per example is slow)."""
    with Outbox(tmp_path_factory.mktemp("prop") / "prop.db", synchronous="normal") as ob:
        yield ob


def test_append_returns_seq_range_and_peek_reconstructs(db: Path) -> None:
    with Outbox(db) as ob:
        assert ob.append([], []) == (0, -1)
        readings = [reading(i) for i in range(3)]
        events = [event(0)]
        assert ob.append(readings, events) == (1, 4)
        rows = ob.peek(Lane.TELEMETRY)
        assert [r.seq for r in rows] == [1, 2, 3]
        assert [r.record for r in rows] == readings
        assert all(r.lane is Lane.TELEMETRY and r.ts == r.record.ts for r in rows)
        (ev,) = ob.peek(Lane.EVENT)
        assert ev.seq == 4 and ev.lane is Lane.EVENT
        assert ev.record == events[0]  # incl. attrs and id
        assert isinstance(ev.record, Event) and ev.record.id == events[0].id


def test_seq_monotonic_across_restart_and_full_ack(db: Path) -> None:
    with Outbox(db) as ob:
        ob.append([reading(i) for i in range(5)], [event(1)])
        assert ob.ack(Lane.TELEMETRY, 10) == 5
        assert ob.ack(Lane.EVENT, 10) == 1
        assert ob.stats().lane(Lane.TELEMETRY).rows == 0
    with Outbox(db) as ob:  # every row deleted: a rowid table would start again at 1
        assert ob.next_seq == 7
        assert ob.append([reading(9)], []) == (7, 7)
        assert ob.append([], [event(2)]) == (8, 8)
    with Outbox(db) as ob:
        ob.ack_seqs([7, 8])
        assert ob.append([reading(1)], []) == (9, 9)


def test_peek_after_seq_and_limit_per_lane(db: Path) -> None:
    with Outbox(db) as ob:
        for i in range(10):
            ob.append([reading(i)], [event(i)] if i % 3 == 0 else [])
        tele = ob.peek(Lane.TELEMETRY, after_seq=0, limit=4)
        assert [r.record.value for r in tele] == [0.0, 1.0, 2.0, 3.0]  # type: ignore[union-attr]
        nxt = ob.peek(Lane.TELEMETRY, after_seq=tele[-1].seq, limit=100)
        assert len(nxt) == 6 and nxt[0].seq > tele[-1].seq
        seqs = [r.seq for r in ob.peek(Lane.EVENT)]
        assert seqs == sorted(seqs) and len(seqs) == 4
        # The event lane is its own queue: telemetry never appears in it and vice versa.
        assert all(isinstance(r.record, Event) for r in ob.peek(Lane.EVENT))
        assert all(isinstance(r.record, Reading) for r in ob.peek(Lane.TELEMETRY, limit=100))


def test_ack_is_per_lane_and_ack_seqs_any_lane(db: Path) -> None:
    with Outbox(db) as ob:
        ob.append([reading(0), reading(1)], [event(0)])  # seqs 1, 2 | 3
        ob.append([reading(2)], [event(1)])  # 4 | 5
        assert ob.ack(Lane.EVENT, 4) == 1  # only seq 3; telemetry untouched
        assert [r.seq for r in ob.peek(Lane.TELEMETRY)] == [1, 2, 4]
        assert ob.ack_seqs([2, 5, 99]) == 2
        assert [r.seq for r in ob.peek(Lane.TELEMETRY)] == [1, 4]
        assert ob.peek(Lane.EVENT) == []
        assert ob.ack_seqs([]) == 0
        # Acks are committed without their own fsync, appends still with one (FULL = 2).
        assert ob._conn.execute("PRAGMA synchronous").fetchone()[0] == 2


values = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(2**80), max_value=2**80),
    st.floats(allow_nan=True, allow_infinity=True),
    st.text(max_size=40),
)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    rows=st.lists(
        st.tuples(
            st.text(min_size=1, max_size=12),
            st.text(max_size=8),
            values,
            st.sampled_from(list(Quality)),
            st.floats(min_value=0, max_value=4e9),
        ),
        max_size=20,
    )
)
def test_readings_round_trip_as_the_platform_gets_them(
    shared: Outbox, rows: list[tuple[str, str, object, Quality, float]]
) -> None:
    """Readings are stored in the neutral form: they come back exactly as they went in. Values
    exact (floats to the last bit, -0.0, NaN and the infinities too, ints beyond 64 bits), ts
    exact (encodings round it when they render it)."""
    readings = [Reading(d, "p", v, u, ts, q) for d, u, v, q, ts in rows]  # type: ignore[arg-type]
    ob = shared
    first, _ = ob.append(readings, [])
    back = [r.record for r in ob.peek(Lane.TELEMETRY, after_seq=first - 1, limit=100)]
    ob.ack(Lane.TELEMETRY, 1 << 62)
    assert len(back) == len(readings)
    for a, b in zip(readings, back, strict=True):
        assert isinstance(b, Reading)
        want = a.value
        assert type(b.value) is type(want)
        if isinstance(want, float) and math.isnan(want):
            assert math.isnan(b.value)  # type: ignore[arg-type]
        else:
            assert b.value == want
        if isinstance(want, float):
            assert math.copysign(1, want) == math.copysign(1, b.value)  # type: ignore[arg-type]
        assert (a.device_id, a.point, a.unit, a.quality) == (b.device_id, b.point, b.unit, b.quality)
        assert b.ts == float(a.ts)


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=10),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=5), inner, max_size=3),
    max_leaves=8,
)


@settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    attrs=st.dictionaries(st.text(max_size=8), json_values, max_size=4),
    value=st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=10),
    severity=st.sampled_from(list(Severity)),
    state=st.sampled_from(list(EventState)),
    message=st.text(max_size=50),
    subject=st.text(max_size=8),
    one_shot=st.booleans(),
)
def test_events_round_trip_exactly(
    shared: Outbox,
    attrs: dict[str, object],
    value: object,
    severity: Severity,
    state: EventState,
    message: str,
    subject: str,
    one_shot: bool,
) -> None:
    ev = Event("dev", "kind", state, severity, 12.5, "rule", value, message, attrs)  # type: ignore[arg-type]
    ev = dataclasses.replace(ev, subject=subject, one_shot=one_shot)
    first, _ = shared.append([], [ev])
    (row,) = shared.peek(Lane.EVENT, after_seq=first - 1)
    shared.ack(Lane.EVENT, first)
    assert row.record == ev


def test_an_event_row_stored_before_subject_and_one_shot_still_decodes(db: Path) -> None:
    # Rows written by gateways before subject and one_shot were stored have 9 fields: no migration.
    with Outbox(db) as ob:
        ob.append([], [event(1), event(2)])
    conn = sqlite3.connect(db)
    with conn:  # seq 2 as such a gateway wrote it
        conn.execute(
            "UPDATE events SET ts = 7.5, body = ? WHERE seq = 2",
            ('["smoke-3","smoke","raised",4,"smoke.alarm",true,"old row",{"floor":3},"e-old"]',),
        )
    conn.close()
    with Outbox(db) as ob:
        rows = ob.peek(Lane.EVENT)
        assert [r.seq for r in rows] == [1, 2] and ob.undecodable == 0
        old = rows[1].record
        assert old == Event(
            "smoke-3", "smoke", EventState.RAISED, Severity.CRITICAL, 7.5, "smoke.alarm", True, "old row",
            {"floor": 3}, "e-old", subject="", one_shot=False,
        )  # fmt: skip
        ob.append([], [event(3), dataclasses.replace(event(4), subject="L1-D23")])
    # An older release (after an update's rollback) reads every event without subject or one_shot.
    conn = sqlite3.connect(db)
    bodies = [json.loads(b) for (b,) in conn.execute("SELECT body FROM events WHERE seq > 2 ORDER BY seq")]
    conn.close()
    assert [len(b) for b in bodies] == [9, 11] and bodies[1][9:] == ["L1-D23", False]


def test_unstorable_records_are_refused_before_writing(db: Path) -> None:
    with Outbox(db) as ob:
        bad_event = event(0)
        bad_event.attrs["when"] = object()
        with pytest.raises(RecordError) as info:
            ob.append([reading(0)], [bad_event])
        assert bad_event.id in info.value.what
        bad_reading = Reading("d", "p", [1, 2], "", 1.0)  # type: ignore[arg-type]
        with pytest.raises(RecordError):
            ob.append([reading(0), bad_reading], [])
        # Nothing of the failed appends is stored, and no seq was consumed.
        assert ob.peek(Lane.TELEMETRY) == [] and ob.peek(Lane.EVENT) == []
        assert ob.append([reading(1)], []) == (1, 1)
        assert ob.peek(Lane.TELEMETRY)[0].record == reading(1)


def test_state_table(db: Path) -> None:
    with Outbox(db) as ob:
        assert ob.get_state("bthome.counter.aa:bb") is None
        ob.put_state("bthome.counter.aa:bb", "17")
        ob.put_state("uplink.e2e_ack", "1234")
        ob.put_state("bthome.counter.aa:bb", "18")
    with Outbox(db) as ob:
        assert ob.get_state("bthome.counter.aa:bb") == "18"
        assert ob.get_state("uplink.e2e_ack") == "1234"


def test_stats(db: Path) -> None:
    with Outbox(db) as ob:
        empty = ob.stats()
        assert empty.schema_version == schema_version() and empty.next_seq == 1
        assert all(s.rows == 0 and s.oldest_ts is None and s.dropped == 0 for s in empty.lanes)
        ob.append([reading(i) for i in range(4)], [event(7)])
        s = ob.stats()
        assert s.lane(Lane.TELEMETRY).rows == 4
        assert s.lane(Lane.TELEMETRY).oldest_ts == reading(0).ts
        assert s.lane(Lane.EVENT).oldest_ts == event(7).ts
        assert s.next_seq == 6 and s.file_bytes + s.wal_bytes > 0
        d = s.to_dict()
        assert d["lanes"][0] == {"lane": "event", "rows": 1, "oldest_ts": event(7).ts, "dropped": 0}


def test_retention_drops_oldest_telemetry_first_then_events_counted(db: Path) -> None:
    cap = 64 * 1024
    with Outbox(db, max_bytes=cap, synchronous="normal") as ob:
        ob.append([], [event(i) for i in range(20)])
        appended = 0
        for batch in range(60):
            ob.append([reading(batch * 500 + i) for i in range(500)], [])
            appended += 500
        s = ob.stats()
        tele, ev = s.lane(Lane.TELEMETRY), s.lane(Lane.EVENT)
        notices = [r.record for r in ob.peek(Lane.EVENT) if r.record.kind == "outbox_dropped"]
        assert len(notices) == 1  # trims repeat: merged, announced at most once a minute ...
        assert tele.dropped > 0 and ev.dropped == 0 and ev.rows == 20 + len(notices)
    with Outbox(db, max_bytes=cap, synchronous="normal") as ob:  # ... and when the outbox opens
        notices = [r.record for r in ob.peek(Lane.EVENT) if r.record.kind == "outbox_dropped"]
        assert len(notices) == 2
        assert tele.rows + tele.dropped == appended  # every reading is either queued or counted
        # ... and every drop is announced in the event lane with its seq range and count.
        assert sum(n.attrs["count"] for n in notices) == tele.dropped == s.dropped_by["size_cap"]  # type: ignore[union-attr]
        assert {n.attrs["reason"] for n in notices} == {"size_cap"}  # type: ignore[union-attr]
        kept = ob.peek(Lane.TELEMETRY, limit=100_000)
        # The oldest went: what is left is exactly the newest `rows` readings.
        assert [r.record.value for r in kept] == [float(i) for i in range(appended - tele.rows, appended)]  # type: ignore[union-attr]
        used = (
            ob._conn.execute("PRAGMA page_count").fetchone()[0]
            - ob._conn.execute("PRAGMA freelist_count").fetchone()[0]
        ) * ob._page_size
        assert used <= cap
        assert used >= 0.9 * cap  # trimmed to just under the cap, not far below it (data kept)
        # With telemetry gone, big events push out the oldest events.
        ob.ack(Lane.TELEMETRY, 1 << 62)
        big = [event(100 + i) for i in range(300)]
        for e in big:
            e.attrs["blob"] = "x" * 2000
        for e in big:
            ob.append([], [e])
        s2 = ob.stats()
        assert s2.lanes == read_stats(db).lanes  # counts kept in memory agree with count(*)
        assert s2.lane(Lane.EVENT).dropped > 0
        left = [r.record for r in ob.peek(Lane.EVENT, limit=1000)]
        kept = [e for e in left if e.kind != "outbox_dropped"]  # type: ignore[union-attr]
        assert kept[-1] == big[-1]
        # Each event row (320 events, the notices) is either queued or counted as dropped.
        assert len(left) + s2.lane(Lane.EVENT).dropped == ob.next_seq - 1 - appended
    with Outbox(db, max_bytes=cap) as ob:  # drop counts are persisted
        assert ob.stats().lane(Lane.TELEMETRY).dropped == tele.dropped
    assert db.stat().st_size <= cap + 64 * 1024


def test_newer_schema_is_refused(db: Path) -> None:
    Outbox(db).close()
    conn = sqlite3.connect(db)
    conn.execute(f"PRAGMA user_version = {schema_version() + 1}")
    conn.close()
    with pytest.raises(SchemaVersionError) as info:
        Outbox(db)
    assert info.value.found == schema_version() + 1


def test_not_a_database_is_moved_aside(tmp_path: Path) -> None:
    junk = tmp_path / "junk.db"
    junk.write_bytes(b"this is not sqlite at all" * 100)
    with Outbox(junk) as ob:
        assert ob.quarantined is not None and ob.quarantined.startswith(f"{junk}.corrupt-")
        assert Path(ob.quarantined).read_bytes() == b"this is not sqlite at all" * 100  # kept for forensics
        assert ob.stats().state == "degraded"
        (ev,) = [r.record for r in ob.peek(Lane.EVENT)]
        assert ev.kind == "outbox_new_epoch" and ev.attrs["quarantined_as"] == ob.quarantined  # type: ignore[union-attr]


def test_unwritable_directory_is_a_store_error(tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("x")
    with pytest.raises(StoreError):
        Outbox(blocker / "sub" / "outbox.db")


@pytest.mark.parametrize(
    "damage",
    [
        "UPDATE reading_blocks SET body = substr(body, 1, length(body) / 2) WHERE first_seq = 2",
        "UPDATE reading_blocks SET raw_len = raw_len + 1 WHERE first_seq = 2",
        "UPDATE reading_blocks SET body = zeroblob(40) WHERE first_seq = 2",
        "UPDATE reading_blocks SET codec = 77 WHERE first_seq = 2",
        "UPDATE reading_blocks SET last_seq = 4 WHERE first_seq = 2",  # says 3 readings, holds 2
    ],
)
def test_a_damaged_row_is_skipped_not_fatal(db: Path, damage: str) -> None:
    with Outbox(db) as ob:
        ob.append([reading(0)], [])  # block 1
        ob.append([reading(1), reading(2)], [event(0), event(1)])  # block 2-3 | events 4-5
        ob.append([reading(3)], [])  # block 6
        ob._conn.execute("UPDATE events SET body = '[\"half a record' WHERE seq = 4")
        ob._conn.execute(damage)
        assert [r.seq for r in ob.peek(Lane.EVENT)] == [5]
        assert [r.seq for r in ob.peek(Lane.TELEMETRY)] == [1, 6]
        assert [r.seq for r in ob.peek(Lane.TELEMETRY)] == [1, 6]  # counted once
        undecodable_readings = 3 if "last_seq = 4" in damage else 2
        if undecodable_readings == 2:  # the drain's path trusts the row's seqs: no JSON parsing there
            assert [b.first_seq for b in ob.peek_telemetry_blocks()] == [1, 6]
        assert ob.undecodable == 1 + undecodable_readings
        # Dropped as damaged: counted, and the seq ranges announced in the event lane (seqs 7, 8).
        assert ob.stats().dropped_by == {"damaged": 1 + undecodable_readings}
        announced = [r.record.attrs for r in ob.peek(Lane.EVENT, after_seq=5)]  # type: ignore[union-attr]
        last = 4 if "last_seq = 4" in damage else 3
        assert [(a["lane"], a["first_seq"], a["last_seq"], a["reason"]) for a in announced] == [
            ("event", 4, 4, "damaged"),
            ("telemetry", 2, last, "damaged"),
        ]
        assert ob.ack(Lane.TELEMETRY, 4) == 1 and ob.ack(Lane.EVENT, 5) == 1
        assert [r.seq for r in ob.peek(Lane.TELEMETRY)] == [6]


def test_a_row_too_large_for_a_broker_is_dropped_and_announced_at_once(db: Path) -> None:
    """`drop_too_large` (the uplink's answer to a row no message within the broker's Maximum Packet
    Size can carry): that row only, a reading cut out of its block; counted, announced at once."""
    with Outbox(db) as ob:
        ob.append([reading(i) for i in range(5)], [event(0), event(1)])  # readings 1-5 | events 6-7
        assert ob.drop_too_large(Lane.TELEMETRY, 3) == 1
        assert ob.drop_too_large(Lane.EVENT, 6) == 1
        assert ob.drop_too_large(Lane.EVENT, 6) == 0  # gone already: nothing more, no notice
        assert [r.seq for r in ob.peek(Lane.TELEMETRY)] == [1, 2, 4, 5]
        assert [r.record.value for r in ob.peek(Lane.TELEMETRY)] == [0.0, 1.0, 3.0, 4.0]  # type: ignore[union-attr]
        notices = [r.record.attrs for r in ob.peek(Lane.EVENT, after_seq=7)]  # type: ignore[union-attr]
        assert [(a["lane"], a["first_seq"], a["last_seq"], a["count"], a["reason"]) for a in notices] == [
            ("telemetry", 3, 3, 1, "too_large"),
            ("event", 6, 6, 1, "too_large"),
        ]
        stats = ob.stats()
        assert stats.dropped_by == {"too_large": 2}
        assert {s.lane: (s.rows, s.dropped) for s in stats.lanes} == {
            Lane.EVENT: (3, 1),
            Lane.TELEMETRY: (4, 1),
        }
        assert ob.ack(Lane.TELEMETRY, 5) == 4


def test_disk_full_is_transient_and_leaves_nothing_half_written(db: Path) -> None:
    """SQLite's own page limit gives the same SQLITE_FULL a full disk gives."""
    with Outbox(db, synchronous="normal") as ob:
        ob.append([reading(i) for i in range(3)], [])
        pages = ob._conn.execute("PRAGMA page_count").fetchone()[0]
        ob._conn.execute(f"PRAGMA max_page_count = {pages + 2}")
        with pytest.raises(StoreFullError):  # far too big to fit, even with old telemetry evicted
            ob.append([reading(i, device=f"dev-{i}") for i in range(5000)], [event(1)])
        # Nothing of the append was written, nothing evicted for it (that rolled back with it).
        assert [r.seq for r in ob.peek(Lane.TELEMETRY)] == [1, 2, 3] and ob.peek(Lane.EVENT) == []
        assert ob.next_seq == 4 and ob.disk_full
        # While the disk is full, an alarm evicts the oldest telemetry, announced; seqs go on.
        assert ob.append([], [event(2)]) == (4, 4)
        notices = [r for r in ob.peek(Lane.EVENT) if r.record.kind == "outbox_dropped"]
        announced = [(r.seq, r.record.attrs["first_seq"], r.record.attrs["reason"]) for r in notices]  # type: ignore[union-attr]
        assert announced == [(5, 1, "disk_full")] and ob.peek(Lane.TELEMETRY) == []
        # The real disk has room for the reserve: the disk-full state ends with that commit (a
        # really full disk: store.disk_full in hil/faults/store.py).
        assert not ob.disk_full and ob.stats().state == "ok"
        ob._conn.execute("PRAGMA max_page_count = 1073741823")
        assert ob.append([reading(1, device="dev-1")], [event(3)]) == (6, 7)  # no seq lost or reused
        assert ob.peek(Lane.TELEMETRY)[-1].record == reading(1, device="dev-1")


def test_ack_with_state_is_one_commit(db: Path) -> None:
    with Outbox(db) as ob:
        ob.append([reading(i) for i in range(5)], [])
        assert ob.ack(Lane.TELEMETRY, 3, state=("uplink.ack_seq.telemetry", "3")) == 3
        assert ob.get_state("uplink.ack_seq.telemetry") == "3"
        assert ob.ack(Lane.TELEMETRY, 5, state=("uplink.ack_seq.telemetry", "5")) == 2
    with Outbox(db) as ob:  # durable together
        assert ob.get_state("uplink.ack_seq.telemetry") == "5"
        assert ob.stats().lane(Lane.TELEMETRY).rows == 0
        assert ob.peek_telemetry_blocks(after_seq=0) == []


def test_partial_acks_keep_the_rest_of_a_block(db: Path) -> None:
    with Outbox(db) as ob:
        ob.append([reading(i) for i in range(10)], [event(0)])  # block 1-10, event 11
        assert ob.ack(Lane.TELEMETRY, 3) == 3
        assert [r.seq for r in ob.peek(Lane.TELEMETRY)] == list(range(4, 11))
        assert ob.stats().lane(Lane.TELEMETRY).rows == 7
        # Exact seqs, as acks of single rows leave holes: the block is cut into runs.
        assert ob.ack_seqs([5, 8, 11, 99]) == 3
        assert [r.seq for r in ob.peek(Lane.TELEMETRY)] == [4, 6, 7, 9, 10]
        assert [(b.first_seq, b.last_seq) for b in ob.peek_telemetry_blocks()] == [(4, 4), (6, 7), (9, 10)]
        # A read after a seq inside a block starts after it.
        (first, *_) = ob.peek_telemetry_blocks(after_seq=6)
        assert (first.first_seq, first.last_seq) == (7, 7)
        assert [r.record for r in ob.peek(Lane.TELEMETRY, after_seq=6)] == [
            reading(6),
            reading(8),
            reading(9),
        ]
        assert ob.ack(Lane.TELEMETRY, 9) == 4
        assert ob.stats().lane(Lane.TELEMETRY).rows == 1


def test_blocks_are_neutral_compact_and_carry_clock_marks(db: Path) -> None:
    """A block names each series once; a reading stamped before the clock was synchronised keeps
    its mark (monotonic capture time, boot id) through the store, partial acks included."""
    readings = [reading(i) for i in range(200)]
    body, raw_len = encode_block(readings)
    assert len(body) < 20 * len(readings)  # compact: about 11 bytes per reading
    block = decode_block(1, 200, 2, body, raw_len)
    assert [r for _, r in block.readings()] == readings
    mark = ReadingMark(12.345, "boot-1")
    with Outbox(db, block_readings=4) as ob:
        ob.append(readings[:6], [], marks=[None, mark, None, None, mark, None])
        rows = ob.peek(Lane.TELEMETRY)
        assert [r.mark for r in rows] == [None, mark, None, None, mark, None]
        assert ob.ack_seqs([1, 3]) == 2
        left = [(r.seq, r.mark) for r in ob.peek(Lane.TELEMETRY)]
        assert left == [(2, mark), (4, None), (5, mark), (6, None)]
        with pytest.raises(ValueError):
            ob.append(readings[:2], [], marks=[None])


def test_size_cap_never_counts_rows_the_platform_holds_as_dropped(db: Path) -> None:
    """End-to-end mode: the platform acknowledged seq 1..2500 (the uplink's delete had not run yet);
    a trim deletes them as delivered: `dropped` and the notices count only rows it never had."""
    cap = 64 * 1024
    with Outbox(db, max_bytes=cap, synchronous="normal") as ob:
        for batch in range(5):
            ob.append([reading(batch * 500 + i) for i in range(500)], [])
        ob.note_delivered(Lane.TELEMETRY, 2500)
        appended = 2500
        for batch in range(5, 60):
            ob.append([reading(batch * 500 + i) for i in range(500)], [])
            appended += 500
    with Outbox(db, max_bytes=cap, synchronous="normal") as ob:  # pending notices are announced
        s = ob.stats()
        tele = s.lane(Lane.TELEMETRY)
        notices = [r.record for r in ob.peek(Lane.EVENT) if r.record.kind == "outbox_dropped"]
        assert tele.dropped > 0 and notices
        assert all(n.attrs["first_seq"] > 2500 for n in notices)  # type: ignore[union-attr]
        assert tele.rows + tele.dropped == appended - 2500  # delivered rows are neither queued nor dropped
        assert sum(n.attrs["count"] for n in notices) == tele.dropped  # type: ignore[union-attr]
