"""The outbox's versioned schema: registered migrations applied in order, each in a transaction.

The version lives in `PRAGMA user_version` (in the file header, so it changes atomically with the
migration's transaction). A fresh file runs every migration from 1, exactly as an old file would.
"""

from __future__ import annotations

import json
import logging
import sqlite3
import zlib
from collections.abc import Callable
from typing import Any

log = logging.getLogger(__name__)

Migration = Callable[[sqlite3.Connection], None]

MIGRATIONS: dict[int, Migration] = {}
"""version -> function that brings a file from version-1 to version. Filled by `@migration(n)`."""


def migration(version: int) -> Callable[[Migration], Migration]:
    """Register `fn` as the migration to `version`. Versions must be registered 1, 2, 3... in order."""

    def register(fn: Migration) -> Migration:
        if version in MIGRATIONS or version != len(MIGRATIONS) + 1:
            raise ValueError(f"migration {version} registered out of order")
        MIGRATIONS[version] = fn
        return fn

    return register


def latest_version() -> int:
    return len(MIGRATIONS)


def current_version(conn: sqlite3.Connection) -> int:
    return int(conn.execute("PRAGMA user_version").fetchone()[0])


def migrate(conn: sqlite3.Connection) -> list[int]:
    """Apply the missing migrations, each in its own transaction; returns the versions applied.

    The caller checks first that the file is not newer than `latest_version()`. `conn` must be in
    autocommit mode (isolation_level=None) so that BEGIN/COMMIT here are the only transactions.
    """
    applied: list[int] = []
    while (version := current_version(conn)) < latest_version():
        target = version + 1
        conn.execute("BEGIN IMMEDIATE")
        try:
            # Re-read under the write lock: another process may have migrated meanwhile.
            if current_version(conn) != version:
                conn.execute("ROLLBACK")
                continue
            MIGRATIONS[target](conn)
            conn.execute(f"PRAGMA user_version = {target:d}")
            conn.execute("COMMIT")
        except BaseException:
            conn.execute("ROLLBACK")
            raise
        applied.append(target)
    return applied


@migration(1)
def _v1_initial(conn: sqlite3.Connection) -> None:
    """First layout: one telemetry row carried its device, point and unit as text."""
    conn.execute("CREATE TABLE counters (name TEXT PRIMARY KEY, value INTEGER NOT NULL) WITHOUT ROWID")
    conn.execute(
        "INSERT INTO counters (name, value) VALUES ('next_seq', 1), ('dropped.event', 0), "
        "('dropped.telemetry', 0)"
    )
    # `value` has no declared type on purpose: SQLite then keeps ints, floats and text as given.
    conn.execute(
        "CREATE TABLE telemetry (seq INTEGER PRIMARY KEY, ts REAL NOT NULL, device_id TEXT NOT NULL, "
        "point TEXT NOT NULL, unit TEXT NOT NULL, kind INTEGER NOT NULL, value)"
    )
    conn.execute("CREATE TABLE events (seq INTEGER PRIMARY KEY, ts REAL NOT NULL, body TEXT NOT NULL)")


@migration(2)
def _v2_series(conn: sqlite3.Connection) -> None:
    """Intern (device, point, unit) as a series id: rows shrink by about half on the hot path.

    Also adds the durable key/value `state` table (replay counters, rule state, ack positions).
    """
    conn.execute(
        "CREATE TABLE series (id INTEGER PRIMARY KEY, device_id TEXT NOT NULL, point TEXT NOT NULL, "
        "unit TEXT NOT NULL, UNIQUE (device_id, point, unit))"
    )
    conn.execute(
        "INSERT INTO series (device_id, point, unit) "
        "SELECT DISTINCT device_id, point, unit FROM telemetry ORDER BY device_id, point, unit"
    )
    conn.execute(
        "CREATE TABLE readings (seq INTEGER PRIMARY KEY, ts REAL NOT NULL, series INTEGER NOT NULL, "
        "kind INTEGER NOT NULL, value)"
    )
    conn.execute(
        "INSERT INTO readings (seq, ts, series, kind, value) "
        "SELECT t.seq, t.ts, s.id, t.kind, t.value FROM telemetry AS t "
        "JOIN series AS s ON s.device_id = t.device_id AND s.point = t.point AND s.unit = t.unit "
        "ORDER BY t.seq"
    )
    conn.execute("DROP TABLE telemetry")
    conn.execute("CREATE TABLE state (key TEXT PRIMARY KEY, value TEXT NOT NULL) WITHOUT ROWID")


BLOCK_READINGS = 200
"""Readings per telemetry block at most (the uplink's default readings per message)."""


@migration(3)
def _v3_blocks(conn: sqlite3.Connection) -> None:
    """Telemetry as blocks of consecutive seqs (citynerve.gateway.store._blocks), compressed.

    Schema version 3 stored JSON v1 fragments (codec 1); files migrated from version 2 now get
    the neutral codec of version 4 directly. Queued readings are converted here, in seq order;
    rows that cannot be decoded are left out (they would have been skipped by the uplink too)
    and logged by count.
    """
    from citynerve.gateway.store._blocks import CODEC_NEUTRAL_Z, encode_block
    from citynerve.gateway.store._codec import decode_reading

    conn.execute(
        "CREATE TABLE reading_blocks (first_seq INTEGER PRIMARY KEY, last_seq INTEGER NOT NULL, "
        "ts REAL NOT NULL, codec INTEGER NOT NULL, raw_len INTEGER NOT NULL, body BLOB NOT NULL)"
    )
    run: list[tuple[int, Any]] = []
    skipped = 0

    def flush() -> None:
        if run:
            first = run[0][0]
            body, raw_len = encode_block([r for _, r in run])
            conn.execute(
                "INSERT INTO reading_blocks (first_seq, last_seq, ts, codec, raw_len, body) "
                "VALUES (?, ?, ?, ?, ?, ?)",
                (first, run[-1][0], run[0][1].ts, CODEC_NEUTRAL_Z, raw_len, body),
            )
            run.clear()

    rows = conn.execute(
        "SELECT r.seq, r.ts, s.device_id, s.point, s.unit, r.kind, r.value FROM readings AS r "
        "LEFT JOIN series AS s ON s.id = r.series ORDER BY r.seq"
    )
    for seq, ts, dev, point, unit, kind, raw in rows:
        try:
            reading = decode_reading(dev, point, unit, ts, kind, raw)
            if not isinstance(dev, str) or not isinstance(point, str) or not isinstance(unit, str):
                raise ValueError("unknown series")
            encode_block([reading])  # storable
        except (KeyError, IndexError, ValueError, TypeError, ArithmeticError) as err:
            skipped += 1
            log.error("outbox migration: telemetry row seq %d cannot be decoded, left out: %r", seq, err)
            continue
        if run and (seq != run[-1][0] + 1 or len(run) >= BLOCK_READINGS):
            flush()
        run.append((seq, reading))
    flush()
    conn.execute("DROP TABLE readings")
    conn.execute("DROP TABLE series")
    if skipped:
        log.error("outbox migration: %d damaged telemetry rows left out", skipped)


_CODEC_JSON_V1_Z = 1  # schema version 3's blocks: "," + JSON v1 reading fragments, raw deflate


@migration(4)
def _v4_neutral_blocks(conn: sqlite3.Connection) -> None:
    """Telemetry blocks in the neutral form (codec 2): encodings render readings when they publish.

    Blocks of codec 1 (JSON v1 fragments, rendered when written) are converted in place. A block
    that cannot be decoded is left as it is: the outbox drops it as damaged when it reads it, and
    announces its seq range (outbox_dropped), as for any damaged block.
    """
    from citynerve.gateway.api import Quality, Reading
    from citynerve.gateway.store._blocks import CODEC_NEUTRAL_Z, encode_block

    quality = {q.value: q for q in Quality}
    old = conn.execute(
        "SELECT first_seq, last_seq, body, raw_len FROM reading_blocks WHERE codec = ? ORDER BY first_seq",
        (_CODEC_JSON_V1_Z,),
    ).fetchall()
    for first, last, body, raw_len in old:
        try:
            text = zlib.decompressobj(-12).decompress(body)
            if len(text) != raw_len or not text.startswith(b","):
                raise ValueError("not JSON fragments")
            items = json.loads(b"[" + text[1:] + b"]")
            if len(items) != last - first + 1 or [f["seq"] for f in items] != list(range(first, last + 1)):
                raise ValueError("seqs do not match the block")
            readings = [
                Reading(
                    f["device_id"],
                    f["point"],
                    f["value"],
                    f["unit"],
                    f["ts_ms"] / 1000,
                    quality[f["quality"]],
                )
                for f in items
            ]
            new_body, new_len = encode_block(readings)
        except (zlib.error, ValueError, KeyError, TypeError, IndexError, RecursionError) as err:
            log.error(
                "outbox migration: telemetry block seq %d..%d cannot be decoded, left: %r", first, last, err
            )
            continue
        conn.execute(
            "UPDATE reading_blocks SET codec = ?, body = ?, raw_len = ? WHERE first_seq = ?",
            (CODEC_NEUTRAL_Z, new_body, new_len, first),
        )


@migration(5)
def _v5_kept(conn: sqlite3.Connection) -> None:
    """Sets of small entries kept a while, one row each (the uplink's command nonces and outcomes):
    a command adds and deletes its own rows. Each set was one `state` value rewritten whole per
    command, its writes growing with the command rate squared; the uplink moves such a value into
    rows when it first reads its set."""
    conn.execute(
        "CREATE TABLE kept (kind TEXT NOT NULL, key TEXT NOT NULL, value TEXT NOT NULL, "
        "PRIMARY KEY (kind, key)) WITHOUT ROWID"
    )
