"""Opening the outbox on a real full file system (a small tmpfs filled by another file): a cleanly
closed WAL outbox needs room for its -shm and -wal, which the reserve file gives back, so a gateway
restarted on a full disk collects alarms instead of exiting (and being restarted) forever. And the
epoch marker on a full disk: its bound is recorded before a commit uses seqs past it."""

from __future__ import annotations

import json
import logging
import os
import shutil
from pathlib import Path

import pytest

from citynerve.gateway.api import Event, EventState, Reading, Severity
from citynerve.gateway.store import Lane, Outbox
from citynerve.hil.faults.store import fill, small_disk

pytestmark = pytest.mark.skipif(
    os.geteuid() != 0, reason="mounting a small tmpfs needs root (CI runs as root)"
)

T = 1_780_000_000.0
MAX_BYTES = 64 * 1024 * 1024  # far above the disk: only the disk-full cap applies


def readings(start: int, n: int) -> list[Reading]:
    return [Reading(f"m-{k % 50}", "kwh", (start + k) * 1.37, "kWh", T + start + k) for k in range(n)]


def alarm(i: int) -> Event:
    return Event(
        "fire-1", "fire", EventState.RAISED, Severity.CRITICAL, T + i, message=f"fire #{i}", id=f"a{i}"
    )


def test_a_closed_outbox_opens_on_a_full_disk(tmp_path: Path) -> None:
    with small_disk(tmp_path / "disk", "6m") as disk:
        db = disk / "gw.db"
        with Outbox(db, max_bytes=MAX_BYTES) as ob:
            ob.append(readings(0, 2000), [])
        assert (disk / "gw.db.reserve").exists()
        filler = fill(disk)  # the disk filled up while the gateway was stopped
        for start in range(3):  # each start gives the reserve back; each clean stop makes it again
            with Outbox(db, max_bytes=MAX_BYTES) as ob:
                assert ob.disk_full and ob.stats().state == "disk_full"
                _, seq = ob.append(readings(2000, 10), [alarm(start)])
                (row,) = ob.peek(Lane.EVENT, after_seq=seq - 1, limit=1)
                assert row.seq == seq and row.record == alarm(start)
            assert (disk / "gw.db.reserve").exists()
        filler.unlink()
        with Outbox(db, max_bytes=MAX_BYTES) as ob:  # space again: the cap is lifted
            assert not ob.disk_full and ob.stats().state == "ok"
            alarms = [r.record for r in ob.peek(Lane.EVENT, limit=100) if r.record.kind == "fire"]
            assert [a.message for a in alarms] == ["fire #0", "fire #1", "fire #2"]  # type: ignore[union-attr]


def test_a_clean_stop_during_a_disk_full_spell_leaves_a_reserve(tmp_path: Path) -> None:
    with small_disk(tmp_path / "disk", "6m") as disk:
        db = disk / "gw.db"
        ob = Outbox(db, max_bytes=MAX_BYTES)
        try:
            for k in range(5):
                ob.append(readings(k * 1000, 1000), [])
            filler = fill(disk)
            k = 5
            while not ob.disk_full and k < 200:  # the outbox gives its reserve back and evicts
                ob.append(readings(k * 1000, 1000), [alarm(k)])
                k += 1
            assert ob.disk_full and not (disk / "gw.db.reserve").exists()
            # Some room comes back (a log rotated), less than the reserve and 1 MiB that lift the cap.
            os.truncate(filler, os.path.getsize(filler) - 1024 * 1024)
        finally:
            ob.close()
        assert (disk / "gw.db.reserve").exists()  # made again once the -wal's room was free
        fill(disk)  # and the disk fills up again while the gateway is stopped
        with Outbox(db, max_bytes=MAX_BYTES) as ob:
            assert ob.disk_full
            seq, _ = ob.append([], [alarm(999)])
            (row,) = ob.peek(Lane.EVENT, after_seq=seq - 1, limit=1)
            assert row.seq == seq and row.record == alarm(999)


def test_the_trim_log_names_the_disk_full_cap_not_max_bytes(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    # Field session: "outbox gw.db full (268435456 bytes): dropped the oldest rows" beside a 60 KB
    # file on a full disk sent the reader to max_bytes; the cap that dropped them was the disk's.
    with small_disk(tmp_path / "disk", "6m") as disk, Outbox(disk / "gw.db", max_bytes=MAX_BYTES) as ob:
        ob.append(readings(0, 1000), [])
        fill(disk)
        with caplog.at_level(logging.WARNING, logger="citynerve.gateway.store"):
            k = 1
            while not ob.stats().dropped_by.get("disk_full") and k < 200:
                ob.append(readings(k * 1000, 1000), [])
                k += 1
    (line,) = [r.getMessage() for r in caplog.records if "dropped the oldest rows" in r.getMessage()]
    assert "the disk is full" in line and str(MAX_BYTES) not in line, line


def bound(db: Path) -> int:
    """The marker's `reserved`: no row got a seq at or above it (as the next open will believe)."""
    return int(json.loads(Path(f"{db}.epoch").read_text())["reserved"])


def append_up_to_the_bound(ob: Outbox, db: Path) -> None:
    """Telemetry acknowledged as it comes (a live uplink), up to just below the marker's bound."""
    while ob.next_seq + 1000 <= bound(db):
        _, last = ob.append(readings(ob.next_seq, 1000), [])
        ob.ack(Lane.TELEMETRY, last)


def test_a_commit_past_the_marker_bound_on_a_full_disk_records_it_first(tmp_path: Path) -> None:
    # Review finding, reproduced: the disk filled by another writer while SQLite still commits in
    # place (its -wal reused from the start after each checkpoint, freed pages reused), the marker
    # (a new file, renamed) found no room, the commit used seqs past the bound on disk anyway, and
    # a crash that lost the -wal then gave the same (epoch, seq) to another row.
    with small_disk(tmp_path / "disk", "6m") as disk:
        db = disk / "gw.db"
        ob = Outbox(db, max_bytes=MAX_BYTES)
        append_up_to_the_bound(ob, db)
        assert os.path.getsize(f"{db}-wal") > 1_000_000  # past SQLite's checkpoint: reused in place
        fill(disk)
        # A crash will cost the file the next commit (its -wal lost, or never written by a card
        # that ignores fsync): the file as it is now, the marker as the commit leaves it.
        crashed = tmp_path / "crashed"
        crashed.mkdir()
        shutil.copy(db, crashed / "gw.db")
        _, seq = ob.append(readings(ob.next_seq, 1000), [alarm(1)])
        assert seq >= 100_000 and bound(db) > seq  # recorded before the commit
        assert ob.disk_full and not (disk / "gw.db.reserve").exists()  # the room it took
        shutil.copy(disk / "gw.db.epoch", crashed / "gw.db.epoch")
        ob.close()
    with Outbox(crashed / "gw.db") as ob:
        assert [r for r in ob.peek(Lane.EVENT) if r.record.kind == "fire"] == []  # the commit is lost
        first, _ = ob.append([], [alarm(2)])
        # Past the lost seqs, whether the open went on in the epoch (from the bound) or started a
        # new one (the file below the marker's next_seq): (epoch, seq) never names two rows.
        assert first > seq


def test_a_marker_without_room_is_written_at_the_next_commit(tmp_path: Path) -> None:
    with small_disk(tmp_path / "disk", "6m") as disk:
        db = disk / "gw.db"
        with Outbox(db, max_bytes=MAX_BYTES) as ob:
            append_up_to_the_bound(ob, db)
            fill(disk)
            ob.append(readings(ob.next_seq, 1000), [alarm(1)])  # the reserve given back for the marker
            append_up_to_the_bound(ob, db)
            filler = fill(disk)  # and its room taken by another writer: nothing left to give
            was = bound(db)
            _, seq = ob.append(readings(ob.next_seq, 1000), [alarm(2)])
            # The alarm is stored rather than refused (its seq can repeat only if a crash also
            # loses this commit, see docs/store.md), and the bound is tried again at each commit.
            (row,) = ob.peek(Lane.EVENT, after_seq=seq - 1, limit=1)
            assert row.record == alarm(2) and bound(db) == was <= seq
            _, seq = ob.append([], [alarm(3)])
            assert bound(db) == was
            os.truncate(filler, os.path.getsize(filler) - 64 * 1024)  # a log rotated
            _, seq = ob.append([], [alarm(4)])
            assert bound(db) > seq
