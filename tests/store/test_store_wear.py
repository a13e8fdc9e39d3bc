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

from citynerve.gateway.api import Reading
from citynerve.gateway.store import Lane, Outbox
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
