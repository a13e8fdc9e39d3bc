"""Reading an outbox from another process (the CLI) without writing to it.

Safe while the gateway runs: WAL readers see one consistent snapshot and never block the writer.
"""

from __future__ import annotations

import contextlib
import os
import sqlite3
from collections.abc import Iterator
from urllib.parse import quote

from citynerve.gateway.store._blocks import BlockError, decode_block
from citynerve.gateway.store._codec import decode_event
from citynerve.gateway.store._errors import StoreError
from citynerve.gateway.store._outbox import DECODE_ERRORS, OutboxRow
from citynerve.gateway.store._schema import latest_version
from citynerve.gateway.store._stats import Lane, StoreStats, query_stats


@contextlib.contextmanager
def _snapshot(path: str | os.PathLike[str]) -> Iterator[tuple[str, sqlite3.Connection]]:
    """A read-only connection in a read transaction on a current-version outbox."""
    p = os.fspath(path)
    if not os.path.isfile(p):
        raise StoreError(p, "no such file")
    try:
        conn = _connect_read_only(p)
    except sqlite3.Error as err:
        raise StoreError(p, f"cannot open: {err}") from err
    try:
        conn.execute("BEGIN")  # one snapshot for everything read
        version = int(conn.execute("PRAGMA user_version").fetchone()[0])
        if version == 0:
            raise StoreError(p, "not a CityNerve outbox (no schema version)")
        if version < latest_version():
            raise StoreError(p, f"schema version {version} is older: start the gateway once to migrate it")
        if version > latest_version():
            raise StoreError(p, f"schema version {version} is newer than this gateway ({latest_version()})")
        yield p, conn
    except sqlite3.Error as err:
        raise StoreError(p, f"cannot read: {err}") from err
    finally:
        conn.close()


def _connect_read_only(path: str) -> sqlite3.Connection:
    uri = f"file:{quote(os.path.abspath(path))}?mode=ro"
    conn = sqlite3.connect(uri, uri=True, timeout=5.0)
    try:
        conn.execute("PRAGMA user_version").fetchone()
    except sqlite3.OperationalError:
        conn.close()
        if os.path.exists(path + "-wal"):
            raise
        # A WAL file with no -shm in a folder we may not write (gateway stopped, files owned by
        # its user): with no -wal file there is nothing uncheckpointed, so read it as immutable.
        conn = sqlite3.connect(uri + "&immutable=1", uri=True, timeout=5.0)
    return conn


def read_stats(path: str | os.PathLike[str]) -> StoreStats:
    """Stats of an outbox file without writing to it. Raises StoreError for a missing file, not a
    database, or an outbox whose schema this gateway does not know."""
    with _snapshot(path) as (p, conn):
        return query_stats(conn, p)


def read_state(path: str | os.PathLike[str], key: str) -> str | None:
    """One value of the outbox's key/value state (None: unset), without writing to it. Raises
    StoreError as read_stats does."""
    with _snapshot(path) as (_, conn):
        row = conn.execute("SELECT value FROM state WHERE key = ?", (key,)).fetchone()
        return None if row is None else str(row[0])


def read_rows(
    path: str | os.PathLike[str], lane: Lane, *, after_seq: int = 0, limit: int = 20, newest: bool = False
) -> list[OutboxRow]:
    """Queued rows of `lane` in seq order, read-only: the first `limit` after `after_seq`, or with
    `newest` the last `limit`. Damaged rows are left out. Raises StoreError like `read_stats`."""
    order = "DESC" if newest else "ASC"
    with _snapshot(path) as (_, conn):
        if lane is Lane.TELEMETRY:
            out = _read_readings(conn, after_seq, limit, order)
        else:
            rows = conn.execute(
                f"SELECT seq, ts, body FROM events WHERE seq > ? ORDER BY seq {order} LIMIT ?",
                (after_seq, limit),
            ).fetchall()
            out = []
            for seq, ts, body in rows:
                with contextlib.suppress(*DECODE_ERRORS):  # damaged row
                    out.append(OutboxRow(seq, lane, ts, decode_event(ts, body)))
    return sorted(out, key=lambda r: r.seq)


def _read_readings(conn: sqlite3.Connection, after_seq: int, limit: int, order: str) -> list[OutboxRow]:
    # Blocks in `order` until `limit` readings; the newest end of a DESC read is its first blocks.
    out: list[OutboxRow] = []
    rows = conn.execute(
        "SELECT first_seq, last_seq, codec, body, raw_len FROM reading_blocks WHERE last_seq > ? "
        f"ORDER BY first_seq {order}",
        (after_seq,),
    )
    for first, last, codec, body, raw_len in rows:
        try:
            block = decode_block(first, last, codec, body, raw_len)
            readings = block.readings()
        except (BlockError, *DECODE_ERRORS):  # damaged block
            continue
        if order == "DESC":
            readings.reverse()
        for seq, rec in readings:
            if seq > after_seq and len(out) < limit:
                out.append(OutboxRow(seq, Lane.TELEMETRY, rec.ts, rec, block.mark_of(seq)))
        if len(out) >= limit:
            break
    return out
