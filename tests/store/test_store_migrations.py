"""Schema migrations: a version-1 file made by hand is brought to the current version intact."""

from __future__ import annotations

import json
import sqlite3
import zlib
from pathlib import Path

import pytest

from citynerve.gateway.api import Event, EventState, Quality, Reading, Severity
from citynerve.gateway.store import Lane, Outbox, StoreError, read_stats, schema_version


def make_v1(path: Path) -> None:
    """The first on-disk layout, written with plain SQL (not with the migration code under test)."""
    conn = sqlite3.connect(path)
    conn.executescript(
        """
        PRAGMA journal_mode = WAL;
        CREATE TABLE counters (name TEXT PRIMARY KEY, value INTEGER NOT NULL) WITHOUT ROWID;
        INSERT INTO counters VALUES ('next_seq', 42), ('dropped.event', 3), ('dropped.telemetry', 7);
        CREATE TABLE telemetry (seq INTEGER PRIMARY KEY, ts REAL NOT NULL, device_id TEXT NOT NULL,
            point TEXT NOT NULL, unit TEXT NOT NULL, kind INTEGER NOT NULL, value);
        CREATE TABLE events (seq INTEGER PRIMARY KEY, ts REAL NOT NULL, body TEXT NOT NULL);
        INSERT INTO telemetry VALUES
            (10, 100.0, 'meter-1', 'flow', 'm3/h', 0, 1.25),
            (11, 100.0, 'meter-1', 'total', 'm3', 0, 123456),
            (12, 101.0, 'meter-2', 'flow', 'm3/h', 4, NULL),
            (13, 101.0, 'smoke-1', 'alarm', '', 1, 1),
            (40, 102.0, 'meter-1', 'flow', 'm3/h', 8, 1.5);
        """
    )
    body = json.dumps(
        ["smoke-1", "smoke", "raised", 4, "smoke.alarm", True, "smoke!", {"floor": "3F"}, "abc"]
    )
    conn.execute("INSERT INTO events VALUES (14, 101.5, ?)", (body,))
    conn.execute("PRAGMA user_version = 1")
    conn.commit()
    conn.close()


def test_v1_file_is_migrated_with_rows_seqs_and_counters(tmp_path: Path) -> None:
    db = tmp_path / "old.db"
    make_v1(db)
    with Outbox(db) as ob:
        s = ob.stats()
        assert s.schema_version == schema_version() == 5
        assert s.next_seq == 42
        assert s.lane(Lane.TELEMETRY).dropped == 7 and s.lane(Lane.EVENT).dropped == 3
        rows = ob.peek(Lane.TELEMETRY)
        assert [(r.seq, r.record) for r in rows] == [
            (10, Reading("meter-1", "flow", 1.25, "m3/h", 100.0)),
            (11, Reading("meter-1", "total", 123456, "m3", 100.0)),
            (12, Reading("meter-2", "flow", None, "m3/h", 101.0, Quality.BAD)),
            (13, Reading("smoke-1", "alarm", True, "", 101.0)),
            (40, Reading("meter-1", "flow", 1.5, "m3/h", 102.0, Quality.STALE)),
        ]
        (ev,) = ob.peek(Lane.EVENT)
        assert ev.seq == 14
        assert ev.record == Event(
            "smoke-1", "smoke", EventState.RAISED, Severity.CRITICAL, 101.5, "smoke.alarm", True, "smoke!",
            {"floor": "3F"}, "abc",
        )  # fmt: skip
        # The new state table exists and seqs continue from the old counter.
        ob.put_state("k", "v")
        assert ob.append([Reading("meter-1", "flow", 2.0, "m3/h", 103.0)], []) == (42, 42)
        # v3: readings with consecutive seqs became one block each run; the new one a block of its own.
        blocks = ob._conn.execute(
            "SELECT first_seq, last_seq FROM reading_blocks ORDER BY first_seq"
        ).fetchall()
        assert blocks == [(10, 13), (40, 40), (42, 42)]
        assert ob.stats().lane(Lane.TELEMETRY).rows == 6
    assert read_stats(db).schema_version == 5
    conn = sqlite3.connect(db)
    tables = {r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
    conn.close()
    assert not {"telemetry", "readings", "series"} & tables
    assert {"reading_blocks", "state", "events", "counters", "kept"} <= tables


def test_v3_json_fragment_blocks_become_neutral_blocks(tmp_path: Path) -> None:
    """Schema version 3 stored JSON v1 fragments (codec 1): converted in place; a damaged block is
    left for the outbox, which drops it as damaged and announces its range."""
    db = tmp_path / "v3.db"
    Outbox(db).close()
    base = {"device_id": "m-1", "point": "flow", "unit": "m3/h"}
    frags = [
        {"seq": 5, **base, "value": 1.5, "ts_ms": 1000, "quality": "good"},
        {"seq": 6, **base, "value": None, "ts_ms": 2000, "quality": "bad"},
    ]

    def codec1(items: list[dict[str, object]]) -> tuple[bytes, int]:
        raw = ("," + ",".join(json.dumps(f, separators=(",", ":")) for f in items)).encode()
        z = zlib.compressobj(1, zlib.DEFLATED, -12)
        return z.compress(raw) + z.flush(zlib.Z_SYNC_FLUSH), len(raw)

    conn = sqlite3.connect(db)
    conn.execute("PRAGMA user_version = 3")
    conn.execute("DROP TABLE kept")  # version 5's
    conn.execute("UPDATE counters SET value = 9 WHERE name = 'next_seq'")
    ins = (
        "INSERT INTO reading_blocks (first_seq, last_seq, ts, codec, body, raw_len) VALUES (?, ?, ?, 1, ?, ?)"
    )
    conn.execute(ins, (5, 6, 1.0, *codec1(frags)))
    conn.execute(ins, (7, 8, 3.0, b"damaged", 40))
    conn.commit()
    conn.close()
    with Outbox(db) as ob:
        assert ob.stats().schema_version == 5
        assert [(r.seq, r.record) for r in ob.peek(Lane.TELEMETRY)] == [
            (5, Reading("m-1", "flow", 1.5, "m3/h", 1.0)),
            (6, Reading("m-1", "flow", None, "m3/h", 2.0, Quality.BAD)),
        ]
        (notice,) = [r.record for r in ob.peek(Lane.EVENT)]
        assert notice.kind == "outbox_dropped"
        attrs = notice.attrs
        assert (attrs["first_seq"], attrs["last_seq"], attrs["reason"]) == (7, 8, "damaged")


def test_failed_migration_leaves_the_file_at_its_old_version(tmp_path: Path) -> None:
    db = tmp_path / "broken.db"
    make_v1(db)
    conn = sqlite3.connect(db)
    # A v1 file that already has a `series` table cannot be migrated: the migration must roll back.
    conn.execute("CREATE TABLE series (x)")
    conn.commit()
    conn.close()
    with pytest.raises(StoreError):
        Outbox(db)
    conn = sqlite3.connect(db)
    assert conn.execute("PRAGMA user_version").fetchone()[0] == 1
    assert conn.execute("SELECT count(*) FROM telemetry").fetchone()[0] == 5
    conn.close()


def test_fresh_file_runs_every_migration(tmp_path: Path) -> None:
    db = tmp_path / "new.db"
    Outbox(db).close()
    conn = sqlite3.connect(db)
    assert conn.execute("PRAGMA user_version").fetchone()[0] == schema_version()
    assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    conn.close()
