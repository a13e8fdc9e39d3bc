"""Opening the outbox on a real full file system (a small tmpfs filled by another file): a cleanly
closed WAL outbox needs room for its -shm and -wal, which the reserve file gives back, so a gateway
restarted on a full disk collects alarms instead of exiting (and being restarted) forever."""

from __future__ import annotations

import logging
import os
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
