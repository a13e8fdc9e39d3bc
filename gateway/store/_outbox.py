"""The outbox: a SQLite file (WAL) holding every reading and event until the uplink has sent it.

Synchronous and single-threaded on purpose: `AsyncOutbox` runs one of these on its own thread.
"""

from __future__ import annotations

import contextlib
import logging
import math
import os
import sqlite3
import time
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from typing import Literal

from gateway.api import Event, Quality, Reading
from gateway.store._codec import (
    BIGINT,
    BOOL,
    NAN,
    QUALITY_CODE,
    decode_event,
    decode_reading,
    encode_event,
    encode_value,
)
from gateway.store._config import MIB
from gateway.store._errors import RecordError, SchemaVersionError, StoreBusyError, StoreError
from gateway.store._json import (
    CREATE_SERIES_JSON,
    SERIES_JSON_TABLE,
    SYNC_SERIES_JSON,
    TelemetryJson,
    query_telemetry_json,
)
from gateway.store._schema import current_version, latest_version, migrate
from gateway.store._stats import LANE_DROPPED_KEY, LANE_TABLE, Lane, StoreStats, query_stats

log = logging.getLogger(__name__)

Synchronous = Literal["normal", "full"]

_INT64_MIN, _INT64_MAX = -(2**63), 2**63 - 1
# Trim a little below the cap so that a full outbox does not trim on every single append.
_TRIM_TARGET = 0.98
# What decoding a damaged row can raise (json errors are ValueError; deep nesting RecursionError).
DECODE_ERRORS = (KeyError, IndexError, ValueError, TypeError, ArithmeticError, RecursionError)
# First guesses of bytes per row, refined from what each trim actually frees.
# A guess on the large side deletes fewer rows than needed at first, never many more.
_ROW_BYTES_GUESS = {Lane.EVENT: 512.0, Lane.TELEMETRY: 64.0}
_TRIM_LOG_INTERVAL_S = 60.0
_PUT_STATE = (
    "INSERT INTO state (key, value) VALUES (?, ?) ON CONFLICT (key) DO UPDATE SET value = excluded.value"
)


@dataclass(frozen=True, slots=True)
class OutboxRow:
    """One queued record with its seq (unique per gateway across lanes, never reused)."""

    seq: int
    lane: Lane
    ts: float
    record: Reading | Event


def _busy_or_store(path: str, err: sqlite3.Error) -> StoreError | StoreBusyError:
    """Classify a SQLite error: locked/full/IO may pass, the rest will not."""
    code = getattr(err, "sqlite_errorcode", None)
    transient = {
        getattr(sqlite3, n, -1)
        for n in ("SQLITE_BUSY", "SQLITE_LOCKED", "SQLITE_FULL", "SQLITE_IOERR", "SQLITE_CANTOPEN")
    }
    if code is not None and (code & 0xFF) in transient:
        return StoreBusyError(path, str(err))
    return StoreError(path, str(err))


class Outbox:
    """Durable, ordered queue of readings (telemetry lane) and events (event lane).

    - `seq`: one counter per gateway across both lanes, strictly increasing, kept in the file, so
      it survives restarts and is never reused, even after every row was acknowledged.
    - Size cap: when the used pages exceed `max_bytes`, the oldest telemetry is dropped first and
      events only when no telemetry is left; every drop is counted per lane in the file.
    - `synchronous="full"` makes every commit durable on power loss, "normal" on a process crash.
    """

    def __init__(
        self,
        path: str | os.PathLike[str],
        *,
        max_bytes: int = 256 * MIB,
        synchronous: Synchronous = "full",
    ) -> None:
        self.path = os.fspath(path)
        self.max_bytes = max_bytes
        self.synchronous = synchronous
        self._series: dict[tuple[str, str, str], int] = {}
        self._series_by_id: dict[int, tuple[str, str, str]] = {}
        self._row_bytes = dict(_ROW_BYTES_GUESS)
        # Rows per lane, counted once on the first stats() and kept up to date after (a count(*)
        # of a full outbox is a scan of the table, which would stall commits on a Pi).
        self._rows: dict[Lane, int] | None = None
        self._trimmed: dict[Lane, int] = {}
        self._dropped_unlogged: dict[Lane, int] = {}
        self._trim_logged_at = -math.inf
        self.undecodable = 0  # rows peek had to skip (damaged storage); see peek()
        self._undecodable_seqs: set[int] = set()
        self._json_series_synced = -1  # highest series id in the temp JSON table; -1: no table yet
        parent = os.path.dirname(os.path.abspath(self.path))
        try:
            os.makedirs(parent, exist_ok=True)
        except OSError as err:
            raise StoreError(self.path, f"cannot create directory {parent}: {err.strerror}") from err
        try:
            self._conn = sqlite3.connect(self.path, isolation_level=None, timeout=10.0)
        except sqlite3.Error as err:
            raise StoreError(self.path, f"cannot open: {err}") from err
        try:
            self._setup()
        except sqlite3.DatabaseError as err:
            self._conn.close()
            raise StoreError(self.path, f"not a usable outbox file: {err}") from err
        except BaseException:
            self._conn.close()
            raise

    def _setup(self) -> None:
        conn = self._conn
        mode = conn.execute("PRAGMA journal_mode = WAL").fetchone()[0]
        if str(mode).lower() != "wal":
            raise StoreError(self.path, f"cannot switch to WAL mode (got {mode})")
        conn.execute(f"PRAGMA synchronous = {'FULL' if self.synchronous == 'full' else 'NORMAL'}")
        # Keep the -wal file from growing without bound after a large burst.
        conn.execute(f"PRAGMA journal_size_limit = {8 * MIB:d}")
        found = current_version(conn)
        if found > latest_version():
            raise SchemaVersionError(self.path, found, latest_version())
        applied = migrate(conn)
        if applied:
            log.info("outbox %s: schema migrated to version %d", self.path, applied[-1])
        self._page_size = int(conn.execute("PRAGMA page_size").fetchone()[0])
        self._next_seq = self._counter("next_seq")
        for sid, dev, point, unit in conn.execute("SELECT id, device_id, point, unit FROM series"):
            self._series[(dev, point, unit)] = sid
            self._series_by_id[sid] = (dev, point, unit)

    def _counter(self, name: str) -> int:
        return int(self._conn.execute("SELECT value FROM counters WHERE name = ?", (name,)).fetchone()[0])

    # -- writing -----------------------------------------------------------------------------

    def append(self, readings: Sequence[Reading], events: Sequence[Event]) -> tuple[int, int]:
        """Store readings then events in ONE transaction; returns (first_seq, last_seq).

        Seqs are given in argument order, readings first. (0, -1) when both are empty.
        Raises RecordError (before touching the file) for a record that cannot be stored.
        """
        n = len(readings) + len(events)
        if n == 0:
            return (0, -1)
        # Encode events first: a bad one fails the call before anything is written.
        bodies = [encode_event(e) for e in events]
        first = self._next_seq
        conn = self._conn
        try:
            conn.execute("BEGIN IMMEDIATE")
            self._trimmed = {}
            try:
                if readings:
                    try:
                        rows = self._reading_rows(readings, first)
                    except (AttributeError, TypeError, KeyError) as err:
                        raise RecordError("reading", f"not storable: {err!r}") from err
                    conn.executemany(
                        "INSERT INTO readings (seq, ts, series, kind, value) VALUES (?, ?, ?, ?, ?)", rows
                    )
                if events:
                    start = first + len(readings)
                    conn.executemany(
                        "INSERT INTO events (seq, ts, body) VALUES (?, ?, ?)",
                        [(start + i, e.ts, b) for i, (e, b) in enumerate(zip(events, bodies, strict=True))],
                    )
                conn.execute("UPDATE counters SET value = ? WHERE name = 'next_seq'", (first + n,))
                self._enforce_cap()
                conn.execute("COMMIT")
            except BaseException:
                if conn.in_transaction:
                    conn.execute("ROLLBACK")
                self._reload_series()
                raise
        except sqlite3.IntegrityError as err:  # e.g. a reading whose ts is None
            raise RecordError("reading or event", f"not storable: {err}") from err
        except sqlite3.Error as err:
            raise _busy_or_store(self.path, err) from err
        self._next_seq = first + n
        self._count(Lane.TELEMETRY, len(readings) - self._trimmed.get(Lane.TELEMETRY, 0))
        self._count(Lane.EVENT, len(events) - self._trimmed.get(Lane.EVENT, 0))
        return (first, first + n - 1)

    def _count(self, lane: Lane, delta: int) -> None:
        if self._rows is not None:
            self._rows[lane] += delta

    def _reading_rows(self, readings: Sequence[Reading], first: int) -> list[tuple[object, ...]]:
        # The hot path: one tuple per reading, common types handled inline.
        series = self._series
        rows: list[tuple[object, ...]] = []
        append = rows.append
        seq = first
        quality_code = QUALITY_CODE
        good = Quality.GOOD
        for r in readings:
            key = (r.device_id, r.point, r.unit)
            sid = series.get(key)
            if sid is None:
                sid = self._new_series(key)
            v = r.value
            t = type(v)
            kind = 0 if r.quality is good else quality_code[r.quality] * 4
            if t is float:
                if v != v:  # NaN
                    kind += NAN
                    v = None
            elif t is bool:
                kind += BOOL
                v = int(v)  # type: ignore[arg-type]
            elif t is int:
                if not _INT64_MIN <= v <= _INT64_MAX:  # type: ignore[operator]
                    kind += BIGINT
                    v = str(v)
            elif v is not None and t is not str:  # int/float subclasses (IntEnum...) and odd types
                code, v = encode_value(v)
                kind += code
            append((seq, r.ts, sid, kind, v))
            seq += 1
        return rows

    def _new_series(self, key: tuple[str, str, str]) -> int:
        cur = self._conn.execute("INSERT INTO series (device_id, point, unit) VALUES (?, ?, ?)", key)
        sid = int(cur.lastrowid or 0)
        self._series[key] = sid
        self._series_by_id[sid] = key
        return sid

    def _reload_series(self) -> None:
        # After a rollback, series ids created in that transaction no longer exist (and may be
        # given again to other names), so the JSON copy of the series table is rebuilt too.
        if self._json_series_synced > 0:
            self._conn.execute(f"DELETE FROM {SERIES_JSON_TABLE}")
            self._json_series_synced = 0
        self._series.clear()
        self._series_by_id.clear()
        for sid, dev, point, unit in self._conn.execute("SELECT id, device_id, point, unit FROM series"):
            self._series[(dev, point, unit)] = sid
            self._series_by_id[sid] = (dev, point, unit)

    def _used_bytes(self) -> int:
        pages = self._conn.execute("PRAGMA page_count").fetchone()[0]
        free = self._conn.execute("PRAGMA freelist_count").fetchone()[0]
        return int(pages - free) * self._page_size

    def _enforce_cap(self) -> None:
        """Inside the append's transaction: drop oldest telemetry, then oldest events, until the
        used pages fit under the cap again. Drops are counted in the same transaction."""
        used = self._used_bytes()
        if used <= self.max_bytes:
            return
        target = int(self.max_bytes * _TRIM_TARGET)
        for lane in (Lane.TELEMETRY, Lane.EVENT):
            table = LANE_TABLE[lane]
            while used > target:
                excess = used - target
                n = max(16, math.ceil(excess / self._row_bytes[lane]))
                cut = self._conn.execute(
                    f"SELECT seq FROM {table} ORDER BY seq LIMIT 1 OFFSET ?", (n - 1,)
                ).fetchone()
                if cut is None:
                    cur = self._conn.execute(f"DELETE FROM {table}")
                else:
                    cur = self._conn.execute(f"DELETE FROM {table} WHERE seq <= ?", (cut[0],))
                dropped = cur.rowcount
                if dropped <= 0:
                    break
                self._trimmed[lane] = self._trimmed.get(lane, 0) + dropped
                self._conn.execute(
                    "UPDATE counters SET value = value + ? WHERE name = ?", (dropped, LANE_DROPPED_KEY[lane])
                )
                self._log_trim(lane, dropped)
                now = self._used_bytes()
                freed = used - now
                if freed > 0:
                    # Learn the real row size so the next trim removes about what is needed.
                    self._row_bytes[lane] = max(8.0, freed / dropped)
                else:  # no page emptied yet: take bigger steps
                    self._row_bytes[lane] = max(8.0, self._row_bytes[lane] / 2)
                used = now
            if used <= target:
                return
        if used > self.max_bytes:
            log.error(
                "outbox %s: %d bytes used with both lanes empty (cap %d)", self.path, used, self.max_bytes
            )

    def _log_trim(self, lane: Lane, dropped: int) -> None:
        # A full outbox trims on about every 2 % of the cap appended: log at most once a minute.
        self._dropped_unlogged[lane] = self._dropped_unlogged.get(lane, 0) + dropped
        now = time.monotonic()
        if now - self._trim_logged_at < _TRIM_LOG_INTERVAL_S:
            return
        self._trim_logged_at = now
        what = ", ".join(f"{n} {ln.name.lower()}" for ln, n in self._dropped_unlogged.items())
        self._dropped_unlogged = {}
        log.warning("outbox %s full (%d bytes): dropped the oldest rows: %s", self.path, self.max_bytes, what)

    # -- reading and acknowledging ---------------------------------------------------------------

    def peek(self, lane: Lane, *, after_seq: int = 0, limit: int = 1000) -> list[OutboxRow]:
        """Up to `limit` queued rows of `lane` with seq > after_seq, in seq order.

        A row that cannot be decoded (damaged storage) is skipped, logged and counted in
        `undecodable` rather than raised: one bad row must not stop the uplink forever. It stays
        in the file until an ack covers it; the platform sees its seq as a gap."""
        try:
            if lane is Lane.TELEMETRY:
                by_id = self._series_by_id
                rows = self._conn.execute(
                    "SELECT seq, ts, series, kind, value FROM readings WHERE seq > ? ORDER BY seq LIMIT ?",
                    (after_seq, limit),
                ).fetchall()
                out = []
                for seq, ts, sid, kind, raw in rows:
                    try:
                        names = by_id.get(sid)
                        if names is None:  # a series another connection added: learn it once
                            self._reload_series()
                            by_id = self._series_by_id
                            names = by_id[sid]
                        dev, point, unit = names
                        if kind == 0:
                            rec = Reading(dev, point, raw, unit, ts)
                        else:
                            rec = decode_reading(dev, point, unit, ts, kind, raw)
                    except DECODE_ERRORS as err:
                        self._undecodable_row(lane, seq, err)
                        continue
                    out.append(OutboxRow(seq, Lane.TELEMETRY, ts, rec))
                return out
            rows = self._conn.execute(
                "SELECT seq, ts, body FROM events WHERE seq > ? ORDER BY seq LIMIT ?", (after_seq, limit)
            ).fetchall()
            events = []
            for seq, ts, body in rows:
                try:
                    events.append(OutboxRow(seq, Lane.EVENT, ts, decode_event(ts, body)))
                except DECODE_ERRORS as err:
                    self._undecodable_row(lane, seq, err)
            return events
        except sqlite3.Error as err:
            raise _busy_or_store(self.path, err) from err

    def peek_telemetry_json(
        self, *, after_seq: int = 0, limit: int = 200, chunks: int = 1
    ) -> list[TelemetryJson]:
        """Telemetry rows after `after_seq` as JSON v1 reading fragments built by SQLite.

        Up to `chunks` consecutive chunks of up to `limit` rows each (one uplink message each),
        fewer when the lane runs out; [] when nothing follows `after_seq`. No Python record is
        built: this is the backlog drain's hot path. A chunk that is not `complete` holds a row
        SQL could not render (see gateway.store._json); read its range with `peek`.
        """
        if limit < 1 or chunks < 1:
            return []
        conn = self._conn
        out: list[TelemetryJson] = []
        try:
            self._sync_series_json()
            after = after_seq
            for _ in range(chunks):
                chunk = query_telemetry_json(conn, after, limit)
                if chunk is None:
                    break
                out.append(chunk)
                if chunk.rows < limit:
                    break
                after = chunk.last_seq
        except sqlite3.Error as err:
            raise _busy_or_store(self.path, err) from err
        return out

    def _sync_series_json(self) -> None:
        conn = self._conn
        if self._json_series_synced < 0:
            conn.execute(CREATE_SERIES_JSON)
            conn.execute(f"DELETE FROM {SERIES_JSON_TABLE}")
            self._json_series_synced = 0
        # Series added since (by this or another connection); a primary-key lookup when none are.
        top = conn.execute("SELECT max(id) FROM series").fetchone()[0] or 0
        if top > self._json_series_synced:
            conn.execute(SYNC_SERIES_JSON, (self._json_series_synced,))
            self._json_series_synced = int(top)

    def _undecodable_row(self, lane: Lane, seq: int, err: Exception) -> None:
        if seq not in self._undecodable_seqs:
            self._undecodable_seqs.add(seq)
            self.undecodable += 1
            log.error(
                "outbox %s: %s row seq %d cannot be decoded, skipped: %r",
                self.path,
                lane.name.lower(),
                seq,
                err,
            )

    def ack(self, lane: Lane, upto_seq: int, *, state: tuple[str, str] | None = None) -> int:
        """Delete `lane`'s rows with seq <= upto_seq (they reached the platform); returns how many.

        `state=(key, value)` also sets that state value in the same transaction (the uplink keeps
        its acknowledged position there: one commit instead of two, and never one without the other).
        """
        table = LANE_TABLE[Lane(lane)]
        conn = self._conn
        try:
            with self._relaxed():
                if state is None:
                    cur = conn.execute(f"DELETE FROM {table} WHERE seq <= ?", (upto_seq,))
                else:
                    conn.execute("BEGIN IMMEDIATE")
                    try:
                        cur = conn.execute(f"DELETE FROM {table} WHERE seq <= ?", (upto_seq,))
                        conn.execute(_PUT_STATE, (str(state[0]), str(state[1])))
                        conn.execute("COMMIT")
                    except BaseException:
                        if conn.in_transaction:
                            conn.execute("ROLLBACK")
                        raise
        except sqlite3.Error as err:
            raise _busy_or_store(self.path, err) from err
        n = max(cur.rowcount, 0)
        self._count(Lane(lane), -n)
        return n

    def ack_seqs(self, seqs: Iterable[int]) -> int:
        """Delete the rows with exactly these seqs (any lane); returns how many existed."""
        params = [(int(s),) for s in seqs]
        if not params:
            return 0
        conn = self._conn
        try:
            with self._relaxed():
                conn.execute("BEGIN IMMEDIATE")
                try:
                    deleted: dict[Lane, int] = {}
                    for lane, table in LANE_TABLE.items():
                        cur = conn.executemany(f"DELETE FROM {table} WHERE seq = ?", params)
                        deleted[lane] = max(cur.rowcount, 0)
                    conn.execute("COMMIT")
                except BaseException:
                    if conn.in_transaction:
                        conn.execute("ROLLBACK")
                    raise
        except sqlite3.Error as err:
            raise _busy_or_store(self.path, err) from err
        for lane, k in deleted.items():
            self._count(lane, -k)
        return sum(deleted.values())

    @contextlib.contextmanager
    def _relaxed(self) -> Iterator[None]:
        """Commit deletes of acknowledged rows without an fsync of their own.

        Losing the last acks to a power cut only means those rows are sent again (at-least-once,
        duplicates detectable by seq), so an ack need not cost an fsync on an SD card. The next
        appended commit (synchronous=FULL) syncs the WAL, acks included, in order."""
        if self.synchronous != "full":
            yield
            return
        self._conn.execute("PRAGMA synchronous = NORMAL")
        try:
            yield
        finally:
            self._conn.execute("PRAGMA synchronous = FULL")

    # -- state and figures -----------------------------------------------------------------------

    def get_state(self, key: str) -> str | None:
        """A small durable value (replay counter, rule state, ack position), or None if unset."""
        try:
            row = self._conn.execute("SELECT value FROM state WHERE key = ?", (key,)).fetchone()
        except sqlite3.Error as err:
            raise _busy_or_store(self.path, err) from err
        return None if row is None else str(row[0])

    def put_state(self, key: str, value: str) -> None:
        """Set a small durable value; committed when this returns."""
        try:
            self._conn.execute(_PUT_STATE, (str(key), str(value)))
        except sqlite3.Error as err:
            raise _busy_or_store(self.path, err) from err

    @property
    def next_seq(self) -> int:
        """The seq the next appended row will get."""
        return self._next_seq

    def stats(self) -> StoreStats:
        try:
            self._conn.execute("BEGIN")
            try:
                stats = query_stats(self._conn, self.path, self._rows)
            finally:
                self._conn.execute("COMMIT")
            if self._rows is None:
                self._rows = {s.lane: s.rows for s in stats.lanes}
            return stats
        except sqlite3.Error as err:
            raise _busy_or_store(self.path, err) from err

    def close(self) -> None:
        """Close the file (idempotent). The WAL is checkpointed by SQLite on the last close.

        Any later call raises StoreError (sqlite3 refuses a closed connection)."""
        self._conn.close()

    def __enter__(self) -> Outbox:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
