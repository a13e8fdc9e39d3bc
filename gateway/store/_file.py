"""The outbox file under `Outbox`: opening it (a corrupt file moved aside, the store epoch and its
marker, citynerve.gateway.store._epoch), transactions and the seqs taken in them, small durable state, and
the one way rows leave the file unsent: `_drop`, counted and announced in the event lane.
"""

from __future__ import annotations

import contextlib
import errno
import json
import logging
import math
import os
import sqlite3
from collections.abc import Collection, Iterable, Iterator, Mapping
from typing import Literal, Self

from citynerve.gateway.api import SYSTEM_CLOCK, Clock, Event, Severity
from citynerve.gateway.store._codec import encode_event
from citynerve.gateway.store._config import MIB
from citynerve.gateway.store._epoch import (
    EPOCH_KEY,
    EPOCH_STATE_PREFIXES,
    KIND_DROPPED,
    KIND_NEW_EPOCH,
    SEQ_RESERVE,
    Marker,
    make_reserve,
    new_epoch,
    notice,
    quarantine,
    read_marker,
    remove_corrupt_copies,
    reserve_path,
    write_marker,
)
from citynerve.gateway.store._errors import SchemaVersionError, StoreBusyError, StoreError, StoreFullError
from citynerve.gateway.store._schema import current_version, latest_version, migrate
from citynerve.gateway.store._stats import (
    DROPPED_BY_PREFIX,
    LANE_DROPPED_KEY,
    LANE_KEY,
    LANE_LAST,
    LANE_ROWS,
    LANE_STORED_KEY,
    LANE_TABLE,
    Lane,
)

log = logging.getLogger(__name__)

Synchronous = Literal["normal", "full"]

PAGE_SIZE = 1024  # bytes per page of a new outbox file (see _setup)
_REBUILD_MAX_BYTES = 8 * MIB  # an older file with bigger pages is rebuilt at open up to this size
_NOTICE_INTERVAL_S = 60.0  # a lane's trims are announced at most this often (merged ranges)
_PENDING_PREFIX = "outbox.dropped_pending."  # + lane.reason, in `state`
# Drops of single rows, and a destination's loss while it was left out: announced at once (trims
# are merged).
_AT_ONCE = ("damaged", "too_large", "destination_absent")
_CORRUPT = {sqlite3.SQLITE_CORRUPT, sqlite3.SQLITE_NOTADB}
_NO_ROOM = {sqlite3.SQLITE_FULL, sqlite3.SQLITE_IOERR}  # e.g. no room for the -shm (IOERR_SHMSIZE)
ADD_COUNTER = (
    "INSERT INTO counters (name, value) VALUES (?, ?) "
    "ON CONFLICT (name) DO UPDATE SET value = value + excluded.value"
)
PUT_STATE = (
    "INSERT INTO state (key, value) VALUES (?, ?) ON CONFLICT (key) DO UPDATE SET value = excluded.value"
)
_PUT_KEPT = (
    "INSERT INTO kept (kind, key, value) VALUES (?, ?, ?) "
    "ON CONFLICT (kind, key) DO UPDATE SET value = excluded.value"
)


class _CorruptError(Exception):
    """The file is damaged beyond use (SQLite: malformed / not a database / integrity check)."""


class _NoRoomError(Exception):
    """Opening failed with SQLITE_FULL or SQLITE_IOERR: most likely a full disk."""


def busy_or_store(path: str, err: sqlite3.Error) -> StoreError | StoreBusyError:
    """Classify a SQLite error: locked/full/IO may pass, the rest will not."""
    code = getattr(err, "sqlite_errorcode", None)
    if code is not None and (code & 0xFF) == sqlite3.SQLITE_FULL:
        return StoreFullError(path, str(err))
    transient = {
        getattr(sqlite3, n, -1)
        for n in ("SQLITE_BUSY", "SQLITE_LOCKED", "SQLITE_FULL", "SQLITE_IOERR", "SQLITE_CANTOPEN")
    }
    if code is not None and (code & 0xFF) in transient:
        return StoreBusyError(path, str(err))
    return StoreError(path, str(err))


class OutboxFile:
    """One SQLite connection to an outbox file, on one thread (see `Outbox`)."""

    def __init__(
        self, path: str | os.PathLike[str], *, synchronous: Synchronous = "full", clock: Clock = SYSTEM_CLOCK
    ) -> None:
        self.path = os.fspath(path)
        self.synchronous = synchronous
        self.clock = clock  # its monotonic() times the marker writes and the drop notices
        # Rows per lane, counted once on the first stats() and kept up to date after (a count(*)
        # of a full outbox is a scan of the table, which would stall commits on a Pi).
        self._rows: dict[Lane, int] | None = None
        self._tx_rows: dict[Lane, int] = {}  # rows added (+) and removed (-) by the open transaction
        self._announced_at: dict[str, float] = {}  # monotonic time of the last notice per lane.reason
        self.disk_full = False  # an append found the disk full; cleared once there is room again
        self.quarantined: str | None = None  # where a corrupt file was moved at open, if it was
        self.last_event_seq = 0  # seq of the last row this process put into the event lane
        parent = os.path.dirname(os.path.abspath(self.path))
        try:
            os.makedirs(parent, exist_ok=True)
        except OSError as err:
            raise StoreError(self.path, f"cannot create directory {parent}: {err.strerror}") from err
        marker = read_marker(self.path)
        existed = os.path.exists(self.path)
        empty = existed and os.path.getsize(self.path) == 0
        try:
            self._connect_on_full_disk()
        except _CorruptError as err:
            self.quarantined = quarantine(self.path)
            log.error(
                "outbox %s is corrupt (%s): moved aside to %s; starting a fresh one",
                self.path,
                err,
                self.quarantined,
            )
            self._connect_on_full_disk()
        self._tx_next = self._next_seq
        self._reserved = marker.reserved if marker is not None else 0  # seqs below it may be used
        self._marker_failed = False  # the last marker write failed (see _write_marker)
        self.epoch = self.get_state(EPOCH_KEY) or ""
        reason = self._new_epoch_reason(marker, existed, empty)
        if reason is not None:
            self._start_epoch(reason, marker)
        elif self._reserved > self._next_seq:  # an unclean stop: see _epoch
            log.info("outbox %s: not closed cleanly: seq goes on from %d", self.path, self._reserved)
            with self._transaction():
                self._tx_next = self._reserved
        self._marker_at = -math.inf
        self._write_marker()
        self._announce_pending()
        self._open = True

    def _connect_on_full_disk(self) -> None:
        """`_connect`; if the disk is too full for it (the -shm, the -wal), a corrupt outbox kept
        aside is deleted, and if that is not room enough the reserve file is given back and the
        outbox opens in disk-full mode (its cap applies, see CappedFile)."""
        try:
            self._connect()
            return
        except _NoRoomError as err:
            log.error("outbox %s: cannot open (%s): disk full?", self.path, err)
        if freed := remove_corrupt_copies(self.path):
            log.error("outbox %s: deleted the corrupt outbox kept aside (%d bytes)", self.path, freed)
            with contextlib.suppress(_NoRoomError):
                self._connect()
                return
        log.error("outbox %s: no room to open: giving back the reserve", self.path)
        self._give_back_reserve()
        try:
            self._connect()
        except _NoRoomError as err:
            raise StoreError(self.path, f"not a usable outbox file (disk full?): {err}") from err

    def _connect(self) -> None:
        try:
            self._conn = sqlite3.connect(self.path, isolation_level=None, timeout=10.0)
        except sqlite3.Error as err:
            raise StoreError(self.path, f"cannot open: {err}") from err
        try:
            self._setup()
            check = str(self._conn.execute("PRAGMA quick_check(1)").fetchone()[0])
            if check != "ok":
                raise _CorruptError(f"integrity check: {check}")
        except sqlite3.DatabaseError as err:
            self._conn.close()
            code = getattr(err, "sqlite_errorcode", 0) & 0xFF
            if code in _CORRUPT:
                raise _CorruptError(str(err)) from err
            if code in _NO_ROOM:
                raise _NoRoomError(str(err)) from err
            raise StoreError(self.path, f"not a usable outbox file: {err}") from err
        except BaseException:
            self._conn.close()
            raise

    def _new_epoch_reason(self, marker: Marker | None, existed: bool, empty: bool) -> str | None:
        """Why this file needs a new epoch (None: it goes on with its own)."""
        if self.quarantined is not None:
            return "corrupt outbox quarantined"
        if marker is None:
            return None if self.epoch else "created"
        if not existed:
            return "outbox missing"
        if empty:
            return "outbox empty (zero length)"
        if self.epoch != marker.epoch:
            return "outbox replaced (another epoch than the marker's)"
        if self._next_seq < marker.next_seq:
            return "outbox restored from an older copy"
        return None

    def _start_epoch(self, reason: str, marker: Marker | None) -> None:
        previous = marker.epoch if marker is not None else (self.epoch or None)
        epoch = self.epoch = new_epoch()  # (before the transaction: it may write the marker)
        with self._transaction():
            # seq never goes back: a consumer that ignores epochs sees no false duplicates.
            if marker is not None:
                self._tx_next = max(self._tx_next, marker.reserved)
            for prefix in EPOCH_STATE_PREFIXES:
                self._conn.execute("DELETE FROM state WHERE substr(key, 1, ?) = ?", (len(prefix), prefix))
            self._conn.execute(PUT_STATE, (EPOCH_KEY, epoch))
            if reason != "created":
                attrs = {
                    "epoch": epoch,
                    "previous_epoch": previous,
                    "previous_next_seq": marker.reserved if marker is not None else None,
                    "first_seq": self._tx_next,
                    "reason": reason,
                    "quarantined_as": self.quarantined,
                }
                self._insert_notice(
                    notice(
                        KIND_NEW_EPOCH, Severity.MAJOR, f"outbox: new store epoch {epoch}: {reason}", attrs
                    )
                )
        if reason != "created":
            log.error("outbox %s: new store epoch %s (was %s): %s", self.path, epoch, previous, reason)

    def _write_marker(self, reserved: int | None = None) -> None:
        """Record epoch, next seq and `reserved` (default: as recorded) beside the file (see
        citynerve.gateway.store._epoch), and make sure the reserve file is there; never raises.

        `_reserved` is raised only once the marker holds it: a commit past it tries again. No room
        for the marker (a disk filled by another writer while SQLite still commits in place) gives
        back the reserve file, as SQLITE_FULL does. Should even that fail, the commit goes on: an
        alarm is stored rather than refused, and its seq can repeat only if a crash then also loses
        the commit (docs/store.md, "Store epoch")."""
        self._marker_at = self.clock.monotonic()
        if not self.disk_full:
            make_reserve(self.path)
        marker = Marker(self.epoch, self._next_seq, self._reserved if reserved is None else reserved)
        try:
            try:
                write_marker(self.path, marker)
            except OSError as err:
                if err.errno != errno.ENOSPC or not os.path.exists(reserve_path(self.path)):
                    raise
                log.error("outbox %s: no room for the epoch marker: giving back the reserve", self.path)
                self._give_back_reserve()
                write_marker(self.path, marker)
            self._reserved, self._marker_failed = marker.reserved, False
        except OSError as err:
            if not self._marker_failed:  # once per spell, not at every commit that tries again
                log.warning("outbox %s: cannot write the epoch marker: %s", self.path, err)
            self._marker_failed = True

    def _give_back_reserve(self) -> None:
        """The disk is full: the reserve file's room goes back to the outbox (disk-full mode)."""
        with contextlib.suppress(OSError):
            os.unlink(reserve_path(self.path))
        self.disk_full = True

    def _setup(self) -> None:
        conn = self._conn
        # SD-card wear (docs/store.md, "Disk writes"): every commit writes whole pages to the WAL
        # (the header page, the seq counter, the B-tree root, the freelist, the data). Small pages
        # make that overhead small: 1 KiB pages write a third of what 4 KiB pages did at the
        # footprint load. Set here for a new file (before WAL mode); an older file is rebuilt with
        # them below when it holds little.
        conn.execute(f"PRAGMA page_size = {PAGE_SIZE:d}")
        mode = conn.execute("PRAGMA journal_mode = WAL").fetchone()[0]
        if str(mode).lower() != "wal":
            raise StoreError(self.path, f"cannot switch to WAL mode (got {mode})")
        conn.execute(f"PRAGMA synchronous = {'FULL' if self.synchronous == 'full' else 'NORMAL'}")
        # Keep the -wal file from growing without bound after a large burst.
        conn.execute(f"PRAGMA journal_size_limit = {8 * MIB:d}")
        # Deleted rows are zeroed only inside pages a commit writes anyway: with secure_delete ON
        # (Debian's build default) every freed page of an acknowledged block was written again.
        conn.execute("PRAGMA secure_delete = FAST")
        found = current_version(conn)
        if found > latest_version():
            raise SchemaVersionError(self.path, found, latest_version())
        applied = migrate(conn)
        if applied:
            log.info("outbox %s: schema migrated to version %d", self.path, applied[-1])
        self._page_size = int(conn.execute("PRAGMA page_size").fetchone()[0])
        if self._page_size != PAGE_SIZE:
            self._rebuild_pages()
        self._next_seq = self._counter("next_seq")

    def _rebuild_pages(self) -> None:
        """A file made with other pages (4 KiB before 2026-12) is rebuilt with PAGE_SIZE pages
        (VACUUM: the whole file rewritten, in rollback-journal mode, atomic) when it holds at most
        _REBUILD_MAX_BYTES; a bigger backlog waits for a start when it was drained. Any failure
        (a reader holding the file, no room for the copy) keeps the old pages."""
        conn = self._conn
        used = self._used_bytes()
        if used > _REBUILD_MAX_BYTES:
            log.info(
                "outbox %s: %d-byte pages kept while it holds %d bytes", self.path, self._page_size, used
            )
            return
        try:
            conn.execute("PRAGMA journal_mode = DELETE")
            conn.execute(f"PRAGMA page_size = {PAGE_SIZE:d}")
            conn.execute("VACUUM")
        except sqlite3.OperationalError as err:
            log.warning("outbox %s: kept %d-byte pages: %s", self.path, self._page_size, err)
        mode = conn.execute("PRAGMA journal_mode = WAL").fetchone()[0]
        if str(mode).lower() != "wal":
            raise StoreError(self.path, f"cannot switch back to WAL mode (got {mode})")
        old, self._page_size = self._page_size, int(conn.execute("PRAGMA page_size").fetchone()[0])
        if self._page_size != old:
            log.info("outbox %s: rebuilt with %d-byte pages (were %d)", self.path, self._page_size, old)

    def _counter(self, name: str) -> int:
        return int(self._conn.execute("SELECT value FROM counters WHERE name = ?", (name,)).fetchone()[0])

    @contextlib.contextmanager
    def _transaction(self) -> Iterator[None]:
        """BEGIN IMMEDIATE .. COMMIT; seqs taken inside (`_tx_next`) and row counts apply on commit."""
        conn = self._conn
        conn.execute("BEGIN IMMEDIATE")
        self._tx_next = self._next_seq
        self._tx_rows = {Lane.EVENT: 0, Lane.TELEMETRY: 0}
        try:
            yield
            if self._tx_next != self._next_seq:
                conn.execute("UPDATE counters SET value = ? WHERE name = 'next_seq'", (self._tx_next,))
            if self._tx_next > self._reserved:  # the marker reserves the seqs before they are used
                self._write_marker(self._tx_next + SEQ_RESERVE)
            conn.execute("COMMIT")
        except BaseException:
            if conn.in_transaction:
                conn.execute("ROLLBACK")
            self._tx_next = self._next_seq
            raise
        self._next_seq = self._tx_next
        for lane, delta in self._tx_rows.items():
            self._count(lane, delta)

    def _insert_notice(self, event: Event) -> None:
        """Inside a transaction: put an event about the outbox itself into the event lane."""
        seq = self._tx_next
        self._tx_next += 1
        self._conn.execute(
            "INSERT INTO events (seq, ts, body) VALUES (?, ?, ?)", (seq, event.ts, encode_event(event))
        )
        self._conn.execute(ADD_COUNTER, (LANE_STORED_KEY[Lane.EVENT], 1))
        self._tx_rows[Lane.EVENT] += 1
        self.last_event_seq = seq

    def _drop(self, lane: Lane, where: str, args: tuple[object, ...], reason: str) -> tuple[int, int]:
        """Inside a transaction: delete `lane`'s rows matching `where`, count them (per lane and per
        reason, in the file) and announce the seq range in the event lane (`outbox_dropped`).

        The one way rows leave the outbox unsent: size cap, damaged storage, disk full, a row too
        large for a broker (`drop_too_large`).
        Returns (rows of the table deleted, records dropped)."""
        table, key, count = LANE_TABLE[lane], LANE_KEY[lane], LANE_ROWS[lane]
        conn = self._conn
        n, lo, hi = conn.execute(
            f"SELECT coalesce(sum({count}), 0), min({key}), max({LANE_LAST[lane]}) FROM {table}{where}", args
        ).fetchone()
        if not n:
            return 0, 0
        per = self._dropped_for(lane, where, args)
        deleted = max(conn.execute(f"DELETE FROM {table}{where}", args).rowcount, 0)
        conn.execute("UPDATE counters SET value = value + ? WHERE name = ?", (n, LANE_DROPPED_KEY[lane]))
        conn.execute(ADD_COUNTER, (f"{DROPPED_BY_PREFIX}{reason}", n))
        for destination, k in per.items():
            conn.execute(ADD_COUNTER, (f"{LANE_DROPPED_KEY[lane]}.{destination}", k))
        self._tx_rows[lane] -= n
        self._announce(lane.name.lower(), reason, int(lo), int(hi), int(n), per)
        return deleted, int(n)

    def _announce_absent(self, destination: str, lane: Lane, position: int, lost: int) -> None:
        """Inside a transaction: `destination` wants `lane` again after it was left out of it, and
        `lost` rows of the lane after its `position` left the outbox meanwhile (the others acked
        them, or they were dropped): counted as its loss and announced to it alone
        (`destination_absent`), from its position to the row before the first one still here."""
        table, key, last_key = LANE_TABLE[lane], LANE_KEY[lane], LANE_LAST[lane]
        sql = f"SELECT min({key}) FROM {table} WHERE {last_key} > ?"
        after = self._conn.execute(sql, (position,)).fetchone()[0]
        last = after - 1 if after is not None and after - 1 > position else self._next_seq - 1
        self._conn.execute(ADD_COUNTER, (f"{LANE_DROPPED_KEY[lane]}.{destination}", lost))
        self._announce(lane.name.lower(), "destination_absent", position + 1, last, lost, {destination: lost})

    def _dropped_for(self, lane: Lane, where: str, args: tuple[object, ...]) -> dict[str, int]:
        """Inside a transaction, before a drop: how many of the rows matching `where` each
        destination had not acknowledged yet ({} with a single destination: all of them)."""
        return {}

    def _announce(
        self, lane: str, reason: str, first: int, last: int, n: int, per: dict[str, int] | None = None
    ) -> None:
        """Inside a transaction: the `outbox_dropped` event for a dropped range.

        Damaged and too large rows are announced at once. Trims (size cap, disk full) repeat with every few
        appends while the outbox is full: their ranges are merged in the `state` table (durable,
        in the same transaction) and announced at most once a minute per lane and reason (by the
        first append after the minute, with or without a drop: `_announce_due`), and when the
        outbox opens or closes, so that notices never crowd out the events they make room for.
        A merged range may hold seqs that were sent: the count says how many dropped.
        With several destinations, `destinations` says how many of them each had not received."""
        per = dict(per or {})
        key = f"{_PENDING_PREFIX}{lane}.{reason}"
        raw = self._conn.execute("SELECT value FROM state WHERE key = ?", (key,)).fetchone()
        if raw is not None:
            was = json.loads(raw[0])
            first, last, n = min(first, was["first_seq"]), max(last, was["last_seq"]), n + was["count"]
            for destination, k in was.get("destinations", {}).items():
                per[destination] = per.get(destination, 0) + int(k)
        now = self.clock.monotonic()
        if reason not in _AT_ONCE and now - self._announced_at.get(key, -math.inf) < _NOTICE_INTERVAL_S:
            pending = json.dumps({"first_seq": first, "last_seq": last, "count": n, "destinations": per})
            self._conn.execute(PUT_STATE, (key, pending))
            return
        self._announced_at[key] = now
        self._conn.execute("DELETE FROM state WHERE key = ?", (key,))
        attrs = {"lane": lane, "first_seq": first, "last_seq": last, "count": n, "reason": reason}
        attrs["epoch"] = self.epoch
        if per:
            attrs["destinations"] = per
        message = f"outbox dropped {n} {lane} rows unsent, seq {first}..{last}: {reason}"
        self._insert_notice(notice(KIND_DROPPED, Severity.WARNING, message, attrs))

    def _announce_due(self) -> None:
        """After a commit: announce the merged drops whose minute has passed, also when nothing
        more is dropped (they waited for the next drop, or for the gateway's stop)."""
        now = self.clock.monotonic()
        due = {key for key, at in self._announced_at.items() if now - at >= _NOTICE_INTERVAL_S}
        if due:
            self._announce_pending(due)

    def _announce_pending(self, due: Collection[str] | None = None) -> None:
        """Announce the merged drops not announced yet: all (at open and at close) or those of the
        keys `due` (lane.reason); never raises."""
        try:
            pending = self._conn.execute(
                "SELECT key, value FROM state WHERE substr(key, 1, ?) = ?",
                (len(_PENDING_PREFIX), _PENDING_PREFIX),
            ).fetchall()
            if due is not None:
                pending = [(key, value) for key, value in pending if key in due]
                for key in set(due).difference(key for key, _ in pending):
                    self._announced_at.pop(key, None)  # nothing waits: its next drop goes at once
            if not pending:
                return
            with self._transaction():
                for key, value in pending:
                    lane, reason = str(key)[len(_PENDING_PREFIX) :].split(".", 1)
                    was = json.loads(value)
                    self._announced_at.pop(key, None)
                    self._conn.execute("DELETE FROM state WHERE key = ?", (key,))
                    self._announce(
                        lane, reason, was["first_seq"], was["last_seq"], was["count"], was.get("destinations")
                    )
        except (sqlite3.Error, ValueError, KeyError, TypeError) as err:
            log.error("outbox %s: cannot announce the dropped ranges: %r", self.path, err)

    def _count(self, lane: Lane, delta: int) -> None:
        if self._rows is not None:
            self._rows[lane] += delta

    def _used_bytes(self) -> int:
        pages = self._conn.execute("PRAGMA page_count").fetchone()[0]
        free = self._conn.execute("PRAGMA freelist_count").fetchone()[0]
        return int(pages - free) * self._page_size

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

    def get_state(self, key: str) -> str | None:
        """A small durable value (replay counter, rule state, ack position), or None if unset."""
        try:
            row = self._conn.execute("SELECT value FROM state WHERE key = ?", (key,)).fetchone()
        except sqlite3.Error as err:
            raise busy_or_store(self.path, err) from err
        return None if row is None else str(row[0])

    def put_state(self, key: str, value: str) -> None:
        """Set a small durable value; committed when this returns."""
        try:
            self._conn.execute(PUT_STATE, (str(key), str(value)))
        except sqlite3.Error as err:
            raise busy_or_store(self.path, err) from err

    def get_kept(self, kind: str) -> dict[str, str]:
        """Every entry of the kept set `kind` (key -> value)."""
        try:
            rows = self._conn.execute("SELECT key, value FROM kept WHERE kind = ?", (kind,)).fetchall()
        except sqlite3.Error as err:
            raise busy_or_store(self.path, err) from err
        return {str(k): str(v) for k, v in rows}

    def keep(
        self,
        kind: str,
        put: Mapping[str, str],
        forget: Iterable[str] = (),
        *,
        state: Mapping[str, str | None] | None = None,
    ) -> None:
        """In one commit: set the entries `put` of the kept set `kind`, delete those in `forget`,
        and set the `state` values (None: delete). A set of many entries changes by its own rows."""
        conn = self._conn
        try:
            with self._transaction():
                conn.executemany("DELETE FROM kept WHERE kind = ? AND key = ?", [(kind, k) for k in forget])
                conn.executemany(_PUT_KEPT, [(kind, k, v) for k, v in put.items()])
                for key, value in (state or {}).items():
                    if value is None:
                        conn.execute("DELETE FROM state WHERE key = ?", (key,))
                    else:
                        conn.execute(PUT_STATE, (key, value))
        except sqlite3.Error as err:
            raise busy_or_store(self.path, err) from err

    @property
    def next_seq(self) -> int:
        """The seq the next appended row will get."""
        return self._next_seq

    def close(self) -> None:
        """Close the file (idempotent). The WAL is checkpointed by SQLite on the last close.

        Any later call raises StoreError (sqlite3 refuses a closed connection)."""
        if self._open:
            self._open = False
            self._announce_pending()
            self._write_marker(self._next_seq)  # a clean close: no seq at or above it was used
        self._conn.close()
        make_reserve(self.path)  # also after a disk-full spell: the -wal's room is free now

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
