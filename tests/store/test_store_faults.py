"""Storage faults: unstorable records, store epochs, damaged and corrupt files, a full disk."""

from __future__ import annotations

import asyncio
import contextlib
import json
import math
from collections.abc import Callable
from pathlib import Path

import pytest

from citynerve.gateway.api import Event, EventState, Reading, Severity
from citynerve.gateway.store import AsyncOutbox, Lane, OutboxWriter, RecordError, unstorable
from citynerve.gateway.store._outbox import Outbox

_NOW = object()


def reading(i: int, ts: object = _NOW) -> Reading:
    return Reading("meter-1", "p", float(i), "kWh", 1e9 + i if ts is _NOW else ts)  # type: ignore[arg-type]


def alarm(i: int = 0, ts: object = _NOW) -> Event:
    t = 1e9 + i if ts is _NOW else ts
    return Event("smoke-1", "smoke", EventState.RAISED, Severity.CRITICAL, t)  # type: ignore[arg-type]


def event(**kw: object) -> Event:
    return Event("d", "k", EventState.RAISED, Severity.INFO, 1e9, **kw)  # type: ignore[arg-type]


async def _wait(cond: Callable[[], bool], timeout_s: float = 10.0) -> None:
    async with asyncio.timeout(timeout_s):
        while not cond():  # noqa: ASYNC110 - polling a counter of the real writer
            await asyncio.sleep(0.01)


@pytest.mark.parametrize("bad_ts", [None, math.nan, math.inf, -math.inf, "now", 1e300])
async def test_a_record_with_a_bad_timestamp_never_blocks_later_writes(
    tmp_path: Path, bad_ts: object
) -> None:
    # The field report: one record with a bad timestamp made every later commit fail and retry forever.
    async with AsyncOutbox(tmp_path / "o.db", synchronous="normal") as ob:
        writer = OutboxWriter(ob, max_latency_s=0.01)
        task = asyncio.create_task(writer.run())
        try:
            writer.put_readings([reading(1), reading(2, ts=bad_ts), reading(3)])  # type: ignore[arg-type]
            writer.put_event(alarm(1, ts=bad_ts))
            writer.put_event(alarm(2))
            await _wait(lambda: writer.counters().committed_rows == 3)
            c = writer.counters()
            assert (c.committed_readings, c.committed_events, c.rejected, c.failed_commits) == (2, 1, 2, 0)
            writer.put_readings([reading(4)])
            await _wait(lambda: writer.counters().committed_readings == 3)
        finally:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        rows = await ob.peek(Lane.TELEMETRY)
        assert [r.record.value for r in rows] == [1.0, 3.0, 4.0]


def test_one_definition_of_storable() -> None:
    assert unstorable(reading(1)) is None
    assert unstorable(alarm(1)) is None
    assert unstorable(Reading("m", "p", math.nan, "", 1e9)) is None  # a bad value is a reading (quality says)
    assert "ts" in (unstorable(reading(1, ts=math.nan)) or "")
    assert "ts" in (unstorable(alarm(1, ts="x")) or "")
    assert unstorable(Reading("m" * 2_000, "p", 1, "", 1e9)) is not None
    assert unstorable(Reading("m", "p", "x" * 100_000, "", 1e9)) is not None
    assert unstorable(Reading("m", "p", [1], "", 1e9)) is not None  # type: ignore[arg-type]
    assert (
        unstorable(Event("d", "k", EventState.RAISED, Severity.INFO, 1e9, attrs={"x": object()})) is not None
    )
    assert unstorable(Event("d", "k", EventState.RAISED, Severity.INFO, 1e9, value=[1])) is not None  # type: ignore[arg-type]
    assert (
        unstorable(Event("d", "k", EventState.RAISED, Severity.INFO, 1e9, message="m" * 100_000)) is not None
    )


def test_outbox_refuses_an_unstorable_record_before_writing(tmp_path: Path) -> None:
    with Outbox(tmp_path / "o.db", synchronous="normal") as ob:
        with pytest.raises(RecordError):
            ob.append([reading(1), reading(2, ts=math.nan)], [])
        with pytest.raises(RecordError):
            ob.append([], [alarm(1, ts=math.inf)])
        assert ob.next_seq == 1
        assert ob.append([reading(3)], [alarm(2)]) == (1, 2)


def notices(ob: Outbox, kind: str) -> list[dict[str, object]]:
    return [r.record.attrs for r in ob.peek(Lane.EVENT, limit=10_000) if r.record.kind == kind]  # type: ignore[union-attr]


def test_epoch_is_kept_across_restarts_and_recorded_in_the_marker(tmp_path: Path) -> None:
    db = tmp_path / "o.db"
    with Outbox(db, synchronous="normal") as ob:
        epoch = ob.epoch
        assert len(epoch) == 16 and notices(ob, "outbox_new_epoch") == []  # a first start is no news
        ob.append([reading(1), reading(2)], [])
    assert json.loads((tmp_path / "o.db.epoch").read_text()) == {"epoch": epoch, "next_seq": 3, "reserved": 3}
    with Outbox(db, synchronous="normal") as ob:
        assert ob.epoch == epoch and ob.stats().epoch == epoch and ob.next_seq == 3


@pytest.mark.parametrize("how", ["missing", "zero-length"])
def test_a_lost_outbox_starts_a_new_epoch_and_says_so(tmp_path: Path, how: str) -> None:
    db = tmp_path / "o.db"
    with Outbox(db, synchronous="normal") as ob:
        old = ob.epoch
        ob.append([reading(i) for i in range(10)], [alarm()])
    db.unlink()
    if how == "zero-length":
        db.write_bytes(b"")
    with Outbox(db, synchronous="normal") as ob:
        assert ob.epoch != old
        (said,) = notices(ob, "outbox_new_epoch")
        assert said["previous_epoch"] == old and said["previous_next_seq"] == 12
        assert "missing" in str(said["reason"]) or "zero length" in str(said["reason"])
        # seq never restarts: the notice is 12, the next record 13.
        assert said["first_seq"] == 12 and ob.append([reading(99)], []) == (13, 13)


def test_an_outbox_restored_from_an_older_copy_gets_a_new_epoch(tmp_path: Path) -> None:
    db = tmp_path / "o.db"
    with Outbox(db, synchronous="normal") as ob:
        old = ob.epoch
        ob.append([reading(1)], [])
        ob.put_state("uplink.ack_seq.telemetry", "1")
    backup = db.read_bytes()
    with Outbox(db, synchronous="normal") as ob:
        ob.append([reading(i) for i in range(20)], [])
    db.write_bytes(backup)
    with Outbox(db, synchronous="normal") as ob:
        assert ob.epoch != old and ob.next_seq == 23
        assert "restored" in str(notices(ob, "outbox_new_epoch")[0]["reason"])
        # Positions in the old epoch's seqs are gone: the new epoch's chain starts at 0.
        assert ob.get_state("uplink.ack_seq.telemetry") is None


async def test_async_outbox_tells_readers_of_its_notices(tmp_path: Path) -> None:
    heard: list[tuple[Lane, int]] = []
    async with AsyncOutbox(tmp_path / "o.db", synchronous="normal", max_bytes=64 * 1024) as ob:
        ob.on_commit(lambda lane, seq: heard.append((lane, seq)))
        for i in range(40):
            await ob.append(
                [Reading(f"m{j}", "p", float(j), "", 1e9) for j in range(200 * i, 200 * i + 200)], []
            )
        drops = [r for r in await ob.peek(Lane.EVENT) if r.record.kind == "outbox_dropped"]
        assert drops and (Lane.EVENT, drops[-1].seq) in heard


def test_a_file_failing_the_integrity_check_is_moved_aside(tmp_path: Path) -> None:
    db = tmp_path / "o.db"
    with Outbox(db, synchronous="normal") as ob:
        old = ob.epoch
        for i in range(50):
            ob.append([Reading(f"m{j}", "p", float(j), "", 1e9) for j in range(200 * i, 200 * i + 200)], [])
        page_size = ob._page_size
        root = ob._conn.execute(
            "SELECT rootpage FROM sqlite_master WHERE name = 'reading_blocks'"
        ).fetchone()[0]
    data = bytearray(db.read_bytes())
    at = (root - 1) * page_size
    data[at] = 0x07  # not a b-tree page type: SQLite opens the file, its check (or first read) fails
    db.write_bytes(bytes(data))
    with Outbox(db, synchronous="normal") as ob:
        assert ob.quarantined is not None and ob.epoch != old
        (said,) = notices(ob, "outbox_new_epoch")
        assert said["previous_epoch"] == old and said["reason"] == "corrupt outbox quarantined"
        assert said["first_seq"] == 10_001  # seq goes on from the marker
    assert Path(f"{ob.quarantined}").read_bytes() == bytes(data)
