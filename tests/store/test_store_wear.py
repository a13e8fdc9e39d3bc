"""SD-card wear: what the outbox writes for a window of telemetry, counted in the WAL's own frames.

The footprint load (hil/bench/footprint.py: 1,000 meters every 10 s) stores about 188 readings a
second; with the default 5 s window that is one commit of ~940 readings, then the uplink's acks
(two commits: the first PUBACK, then the rest together). Every commit writes whole pages to the
WAL; a checkpoint later copies each page the WAL holds once into the main file. Counted from the
frames SQLite wrote (not the file system's counters, which a tmpfs does not keep).
"""

from __future__ import annotations

import random
import struct
from pathlib import Path

import pytest

from citynerve.gateway.api import Event, EventState, Reading, Severity
from citynerve.gateway.store import Lane, Outbox
from citynerve.gateway.store import _file as store_file
from citynerve.gateway.store._config import TELEMETRY_WINDOW_MS

RATE = 188  # readings per second stored at the footprint load
WINDOWS = 24  # two minutes of telemetry
DAY_S = 86_400


def window_readings(rnd: random.Random, n: int, t: float) -> list[Reading]:
    points = ("flow_rate", "velocity", "positive_total", "signal_quality", "error_bits")
    out = []
    for i in range(n):
        value: float | int = round(rnd.uniform(0, 50), 3) if i % 5 < 2 else rnd.randrange(10**6)
        out.append(Reading(f"wm-{rnd.randrange(1000):04d}", points[i % 5], value, "m3/h", t + i / RATE))
    return out


def wal_frames(db: Path, page_size: int) -> list[int]:
    """Page number of every frame in the WAL, in order (header 32 bytes, frames 24 + page)."""
    data = (db.parent / (db.name + "-wal")).read_bytes()
    step = 24 + page_size
    return [struct.unpack(">I", data[o : o + 4])[0] for o in range(32, len(data) - step + 1, step)]


def run_windows(db: Path) -> tuple[int, int, int]:
    """(page size, WAL bytes written, pages a checkpoint writes) for WINDOWS windows."""
    rnd = random.Random(7)
    window_s = TELEMETRY_WINDOW_MS / 1000
    with Outbox(db, block_readings=200) as ob:
        conn = ob._conn  # one checkpoint at the end: count every frame written
        conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        conn.execute("PRAGMA wal_autocheckpoint = 0")
        page_size = int(conn.execute("PRAGMA page_size").fetchone()[0])
        t = 1.7e9
        for _ in range(WINDOWS):
            first, last = ob.append(window_readings(rnd, int(RATE * window_s), t), [])
            t += window_s
            ob.ack(Lane.TELEMETRY, first + 199)  # the first message's PUBACK
            ob.ack(Lane.TELEMETRY, last)  # the rest, acknowledged together
        frames = wal_frames(db, page_size)
        conn.execute("PRAGMA wal_autocheckpoint = 1000")
    return page_size, 32 + len(frames) * (24 + page_size), len(set(frames))


def test_a_day_at_the_footprint_load_writes_under_a_gigabyte(tmp_path: Path) -> None:
    page_size, wal_bytes, checkpoint_pages = run_windows(tmp_path / "wear.db")
    assert page_size == 1024  # a new file gets small pages: a commit's fixed pages cost little
    seconds = WINDOWS * TELEMETRY_WINDOW_MS / 1000
    # Checkpoints copy each page once per WAL generation; here one generation covers it all,
    # an upper bound for the default 1000-page WAL is one copy of every frame's page.
    per_day = (wal_bytes + checkpoint_pages * page_size) / seconds * DAY_S
    assert per_day < 0.8e9, f"{per_day / 1e9:.2f} GB/day"  # 0.47 measured (4 KiB pages: 1.45)
    per_window = wal_bytes / WINDOWS  # 26 KB measured (4 KiB pages: 82 KB)
    # One telemetry commit and two ack commits; about 10 KB of compressed readings among them.
    assert per_window < 40_000, per_window


def test_deleting_acknowledged_blocks_does_not_rewrite_the_freed_pages(tmp_path: Path) -> None:
    db = tmp_path / "ack.db"
    with Outbox(db, block_readings=200) as ob:
        ob._conn.execute("PRAGMA wal_autocheckpoint = 0")
        rnd = random.Random(3)
        _, last = ob.append(window_readings(rnd, 2000, 1.7e9), [])
        before = len(wal_frames(db, 1024))
        ob.ack(Lane.TELEMETRY, last)
        ack_frames = len(wal_frames(db, 1024)) - before
        used = int(ob._conn.execute("PRAGMA page_count").fetchone()[0])
        # The ack frees about 25 pages of blocks; it writes the pages that point at them, not them.
        assert ack_frames <= 8, (ack_frames, used)  # 35 with secure_delete ON


def old_file(db: Path, monkeypatch: pytest.MonkeyPatch) -> tuple[str, int, list[int]]:
    """An outbox as gateways made them before 1 KiB pages: 4 KiB pages, a backlog, some acked.
    Returns its epoch, next seq and queued seqs."""
    with monkeypatch.context() as m:
        m.setattr(store_file, "PAGE_SIZE", 4096)  # SQLite's default, which the store used to keep
        ob = Outbox(db)
    with ob:
        assert int(ob._conn.execute("PRAGMA page_size").fetchone()[0]) == 4096
        rnd = random.Random(5)
        ob.append(window_readings(rnd, 1000, 1.7e9), [alarm()])
        ob.ack(Lane.TELEMETRY, 400)
        queued = [r.seq for lane in Lane for r in ob.peek(lane, limit=10_000)]
        return ob.epoch, ob.next_seq, queued


def alarm() -> Event:
    return Event("s1", "smoke", EventState.RAISED, Severity.CRITICAL, 1.7e9)


def test_an_older_file_with_4k_pages_is_rebuilt_with_small_pages(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    db = tmp_path / "old.db"
    epoch, next_seq, queued = old_file(db, monkeypatch)
    with Outbox(db) as ob:
        assert int(ob._conn.execute("PRAGMA page_size").fetchone()[0]) == 1024
        assert str(ob._conn.execute("PRAGMA journal_mode").fetchone()[0]) == "wal"
        assert ob.epoch == epoch and ob.next_seq == next_seq  # the same file, not a new epoch
        assert [r.seq for lane in Lane for r in ob.peek(lane, limit=10_000)] == queued
        first, _ = ob.append([], [alarm()])
        assert first == next_seq
        assert ob._conn.execute("PRAGMA integrity_check").fetchone()[0] == "ok"


def test_an_older_file_holding_much_keeps_its_pages(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    db = tmp_path / "big.db"
    _, next_seq, queued = old_file(db, monkeypatch)
    monkeypatch.setattr(store_file, "_REBUILD_MAX_BYTES", 4096)  # "much": more than this
    with Outbox(db) as ob:
        assert int(ob._conn.execute("PRAGMA page_size").fetchone()[0]) == 4096
        assert [r.seq for lane in Lane for r in ob.peek(lane, limit=10_000)] == queued
        assert ob.append([], [alarm()])[0] == next_seq
