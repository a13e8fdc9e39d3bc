"""The outbox: a SQLite file (WAL) holding every reading and event until the uplink has sent it.

Synchronous and single-threaded on purpose: `AsyncOutbox` runs one of these on its own thread.
"""

from __future__ import annotations

import bisect
import contextlib
import dataclasses
import logging
import math
import os
import sqlite3
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from citynerve.gateway.api import Event, Reading
from citynerve.gateway.store._blocks import (
    CODEC_JSON_V1_Z,
    BlockError,
    Fragments,
    TelemetryBlock,
    TelemetryCursor,
    block_fragments,
    chunk_text,
    compress_fragments,
    decode_readings,
    encode_block,
    fragments_in,
    join_fragments,
    split_fragments,
)
from citynerve.gateway.store._codec import check_storable, decode_event, encode_event
from citynerve.gateway.store._config import MIB
from citynerve.gateway.store._epoch import RESERVE_BYTES, make_reserve, reserve_path
from citynerve.gateway.store._errors import RecordError, StoreFullError
from citynerve.gateway.store._file import PUT_STATE, OutboxFile, Synchronous, busy_or_store
from citynerve.gateway.store._schema import BLOCK_READINGS
from citynerve.gateway.store._stats import (
    LANE_KEY,
    LANE_TABLE,
    Lane,
    StoreStats,
    query_stats,
)

log = logging.getLogger(__name__)

# Trim a little below the cap so that a full outbox does not trim on every single append.
_TRIM_TARGET = 0.98
# What decoding a damaged row can raise (json errors are ValueError; deep nesting RecursionError).
DECODE_ERRORS = (KeyError, IndexError, ValueError, TypeError, ArithmeticError, RecursionError)
# First guesses of bytes per stored row (an event; a block of readings), refined from what each
# trim actually frees. A guess on the large side deletes fewer rows than needed at first.
_ROW_BYTES_GUESS = {Lane.EVENT: 512.0, Lane.TELEMETRY: 4096.0}
_BLOCK_COLUMNS = "first_seq, last_seq, codec, body, raw_len"
# Blocks holding seqs after ?: from the block holding it (found on the primary key) onwards.
_BLOCKS_AFTER = (
    f"SELECT {_BLOCK_COLUMNS} FROM reading_blocks WHERE first_seq >= coalesce((SELECT first_seq "
    "FROM reading_blocks WHERE first_seq <= ? ORDER BY first_seq DESC LIMIT 1), 0) AND last_seq > ? "
    "ORDER BY first_seq LIMIT ?"
)
_BLOCKS_AFTER_JOINED = (
    "SELECT count(*), "
    "group_concat(first_seq || ' ' || last_seq || ' ' || codec || ' ' || length(body) || ' ' || raw_len, "
    "','), "
    f"CAST(group_concat(body, '') AS BLOB) FROM ({_BLOCKS_AFTER})"
)
_INSERT_BLOCK = (
    "INSERT INTO reading_blocks (first_seq, last_seq, ts, codec, body, raw_len) VALUES (?, ?, ?, ?, ?, ?)"
)
_TRIM_LOG_INTERVAL_S = 60.0
_MARKER_INTERVAL_S = 60.0  # the marker file is rewritten at most this often after commits
_DISK_FULL_TRIES = 4  # tries of one append on a full disk, each with a lower cap
_FULL_CAP_STEP = 0.9  # the disk-full cap: 90 % of the pages used (again 90 % of that if still full)


@dataclass(frozen=True, slots=True)
class OutboxRow:
    """One queued record with its seq (unique per gateway across lanes, never reused)."""

    seq: int
    lane: Lane
    ts: float
    record: Reading | Event


class Outbox(OutboxFile):
    """Durable, ordered queue of readings (telemetry lane) and events (event lane).

    - `seq`: one counter per gateway across both lanes, strictly increasing, kept in the file, so
      it survives restarts and is never reused, even after every row was acknowledged.
    - Telemetry is stored in blocks of up to `block_readings` readings with consecutive seqs,
      rendered as JSON v1 fragments and compressed when written (citynerve.gateway.store._blocks): a drain
      sends what is stored. Events are one row each.
    - Size cap: when the used pages exceed `max_bytes`, the oldest telemetry is dropped first (whole
      blocks) and events only when no telemetry is left; every drop is counted per lane in the file.
    - `synchronous="full"` makes every commit durable on power loss, "normal" on a process crash.
    """

    def __init__(
        self,
        path: str | os.PathLike[str],
        *,
        max_bytes: int = 256 * MIB,
        synchronous: Synchronous = "full",
        block_readings: int = BLOCK_READINGS,
    ) -> None:
        self.max_bytes = max_bytes
        if block_readings < 1:
            raise ValueError("block_readings must be >= 1")
        self.block_readings = block_readings
        self._row_bytes = dict(_ROW_BYTES_GUESS)
        # End-to-end mode: rows up to here per lane are held by the platform (it acknowledged them;
        # the uplink's delete of them may still be on its way). The size cap deletes them as
        # delivered, never counts or announces them as dropped.
        self._delivered: dict[Lane, int] = {Lane.TELEMETRY: 0, Lane.EVENT: 0}
        self._dropped_unlogged: dict[Lane, int] = {}
        self._trim_logged_at = self._cap_logged_at = -math.inf
        self.undecodable = 0  # rows peek had to skip (damaged storage); see peek()
        self._undecodable_seqs: set[int] = set()
        self._full_cap: int | None = None  # bytes the outbox may use while the disk is full
        super().__init__(path, synchronous=synchronous)

    def append(self, readings: Sequence[Reading], events: Sequence[Event]) -> tuple[int, int]:
        """Store readings then events in ONE transaction; returns (first_seq, last_seq).

        Seqs are given in argument order, readings first. (0, -1) when both are empty.
        Raises RecordError (before touching the file) for a record that cannot be stored.
        """
        n = len(readings) + len(events)
        if n == 0:
            return (0, -1)
        # Check and encode everything first: a bad record fails the call before anything is written.
        check_storable(readings)
        check_storable(events)
        bodies = [encode_event(e) for e in events]
        for attempt in range(_DISK_FULL_TRIES + 1):
            # (Again after an eviction: its notice took a seq.)
            first = self._next_seq
            blocks = self._reading_blocks(readings, first) if readings else []
            try:
                self._append_rows(blocks, events, bodies, first, len(readings))
            except sqlite3.IntegrityError as err:  # defence in depth: check_storable refuses these first
                raise RecordError("reading or event", f"not storable: {err}") from err
            except sqlite3.Error as err:
                failure = busy_or_store(self.path, err)
                if not isinstance(failure, StoreFullError) or attempt == _DISK_FULL_TRIES:
                    raise failure from err
                self._disk_full(failure, attempt)
                continue
            break
        if self.disk_full:
            self._after_disk_full()
        if self._marker_at + _MARKER_INTERVAL_S <= time.monotonic():
            self._write_marker()
        return (first, first + n - 1)

    def _append_rows(
        self,
        blocks: list[tuple[object, ...]],
        events: Sequence[Event],
        bodies: list[str],
        first: int,
        nr: int,
    ) -> None:
        with self._transaction():
            conn = self._conn
            if blocks:
                conn.executemany(_INSERT_BLOCK, blocks)
                self._tx_rows[Lane.TELEMETRY] += nr
            if events:
                start = first + nr
                conn.executemany(
                    "INSERT INTO events (seq, ts, body) VALUES (?, ?, ?)",
                    [(start + i, e.ts, b) for i, (e, b) in enumerate(zip(events, bodies, strict=True))],
                )
                self._tx_rows[Lane.EVENT] += len(events)
                self.last_event_seq = start + len(events) - 1
            self._tx_next = first + nr + len(events)
            self._enforce_cap()

    def _disk_full(self, err: StoreFullError, attempt: int) -> None:
        """SQLITE_FULL: make room, then the append is tried again.

        Gives back the reserve file (made at open), checkpoints (the WAL is then reused from its
        start instead of growing) and caps the outbox below the pages it uses now: the size cap then
        evicts the oldest telemetry (events stay) inside each append, as `disk_full` (counted,
        announced), so that the file stops growing and freed pages are reused in place. Lifted once
        the disk has room for the reserve again (`_after_disk_full`)."""
        if not self.disk_full:
            self.disk_full = True
            log.error("outbox %s: disk full (%s): evicting old telemetry to go on", self.path, err.reason)
        with contextlib.suppress(OSError):
            os.unlink(reserve_path(self.path))
        with contextlib.suppress(sqlite3.Error):
            self._conn.execute("PRAGMA wal_checkpoint(RESTART)")
        used = self._used_bytes()
        if self._full_cap is None or attempt > 0:  # lower it again only when even that did not fit
            self._full_cap = int(min(self._full_cap or used, used) * _FULL_CAP_STEP)

    def _after_disk_full(self) -> None:
        # Checkpoint after every commit while the disk is full, so that the WAL never grows.
        with contextlib.suppress(sqlite3.Error):
            self._conn.execute("PRAGMA wal_checkpoint(RESTART)")
        try:
            st = os.statvfs(os.path.dirname(os.path.abspath(self.path)))
            room = st.f_bavail * st.f_frsize >= RESERVE_BYTES + MIB
        except OSError:
            room = False
        if room and make_reserve(self.path):
            self.disk_full = False
            self._full_cap = None
            log.warning("outbox %s: space again, the disk-full cap is lifted", self.path)

    def _reading_blocks(self, readings: Sequence[Reading], first: int) -> list[tuple[object, ...]]:
        # Rendered and compressed here, once (citynerve.gateway.store._blocks): the drain sends these bytes.
        out: list[tuple[object, ...]] = []
        size = self.block_readings
        for i in range(0, len(readings), size):
            part = readings[i : i + size]
            start = first + i
            try:
                body, raw_len = encode_block(start, part)
                ts = float(part[0].ts)
            except (AttributeError, TypeError, KeyError, ValueError, OverflowError) as err:
                raise RecordError("reading", f"not storable: {err!r}") from err
            out.append((start, start + len(part) - 1, ts, CODEC_JSON_V1_Z, body, raw_len))
        return out

    def _enforce_cap(self) -> None:
        """Inside the append's transaction: drop oldest telemetry, then oldest events, until the
        used pages fit under the cap again. Drops are counted in the same transaction."""
        cap, reason, target = self.max_bytes, "size_cap", int(self.max_bytes * _TRIM_TARGET)
        if self._full_cap is not None and self._full_cap < cap:
            # Far below: on a full disk each trim frees half the room (and costs one notice).
            cap, reason, target = self._full_cap, "disk_full", self._full_cap // 2
        used = self._used_bytes()
        if used <= cap:
            return
        conn = self._conn
        for lane, held in self._delivered.items():
            if held > 0:  # the platform has these already: they make room first, as deliveries
                self._tx_rows[lane] -= (
                    self._ack_telemetry(held)
                    if lane is Lane.TELEMETRY
                    else max(conn.execute("DELETE FROM events WHERE seq <= ?", (held,)).rowcount, 0)
                )
        used = self._used_bytes()
        if used <= cap:
            return
        # A full disk never costs an event: only telemetry makes room for it.
        for lane in (Lane.TELEMETRY,) if reason == "disk_full" else (Lane.TELEMETRY, Lane.EVENT):
            table, key = LANE_TABLE[lane], LANE_KEY[lane]
            while used > target:
                excess = used - target
                n = max(4, math.ceil(excess / self._row_bytes[lane]))
                # Rows of this transaction (the append, the notices of these drops) stay.
                before = self._next_seq
                cut = conn.execute(
                    f"SELECT {key} FROM {table} WHERE {key} < ? ORDER BY {key} LIMIT 1 OFFSET ?",
                    (before, n - 1),
                ).fetchone()
                where, args = (
                    (f" WHERE {key} < ?", (before,)) if cut is None else (f" WHERE {key} <= ?", (cut[0],))
                )
                deleted, dropped = self._drop(lane, where, args, reason)
                if deleted <= 0:
                    break
                self._log_trim(lane, dropped)
                now = self._used_bytes()
                freed = used - now
                if freed > 0:
                    # Learn the real row size so the next trim removes about what is needed.
                    self._row_bytes[lane] = max(8.0, freed / deleted)
                else:  # no page emptied yet: take bigger steps
                    self._row_bytes[lane] = max(8.0, self._row_bytes[lane] / 2)
                used = now
            if used <= target:
                return
        if used > cap and time.monotonic() - self._cap_logged_at >= _TRIM_LOG_INTERVAL_S:
            self._cap_logged_at = time.monotonic()
            log.error(
                "outbox %s: %d bytes used, more than the cap %d, with nothing left to drop",
                self.path,
                used,
                cap,
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
        in the file until an ack covers it; the platform sees its seq as a gap. For telemetry the
        unit is a block: its readings are skipped together.

        Readings come back as their JSON v1 fragments carry them (see citynerve.gateway.store._blocks):
        NaN and infinities as None, `ts` in whole milliseconds."""
        if limit < 1:
            return []
        try:
            if lane is Lane.TELEMETRY:
                out: list[OutboxRow] = []
                for block in self._telemetry_blocks(after_seq, limit):
                    try:
                        readings = decode_readings(block.first_seq, block.fragments, block.count)
                    except BlockError as err:
                        self._undecodable_block(block.first_seq, block.last_seq, err)
                        continue
                    for seq, rec in readings:
                        if seq > after_seq and len(out) < limit:
                            out.append(OutboxRow(seq, Lane.TELEMETRY, rec.ts, rec))
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
            raise busy_or_store(self.path, err) from err

    def peek_telemetry_blocks(self, *, after_seq: int = 0, max_readings: int = 2000) -> list[TelemetryBlock]:
        """Queued telemetry after `after_seq` as blocks of JSON v1 reading fragments, in seq order:
        whole blocks until at least `max_readings` readings (or the lane's end); [] when nothing
        follows. The first block starts after `after_seq` even when a stored block straddles it.

        The backlog drain's hot path: no Python record is built, the fragments are the bytes that
        were rendered when the readings were written. Damaged blocks are skipped as in `peek`."""
        if max_readings < 1:
            return []
        try:
            return self._telemetry_blocks(after_seq, max_readings)
        except sqlite3.Error as err:
            raise busy_or_store(self.path, err) from err

    def peek_telemetry_next(
        self, cursor: TelemetryCursor, *, max_readings: int = 2000
    ) -> tuple[int | None, list[TelemetryBlock]]:
        """`peek_telemetry_blocks` from `cursor.after`, moving the cursor: (where it started,
        blocks). Reads queued one behind the other (AsyncOutbox runs them in order on its thread)
        thus chain without a trip through the event loop. (None, []) once the cursor has no `more`.
        """
        if not cursor.more:
            return None, []
        start = cursor.after
        blocks = self.peek_telemetry_blocks(after_seq=start, max_readings=max_readings)
        if blocks:
            cursor.after = blocks[-1].last_seq
        cursor.more = sum(b.count for b in blocks) >= max_readings
        return start, blocks

    def _telemetry_blocks(self, after_seq: int, max_readings: int) -> list[TelemetryBlock]:
        out: list[TelemetryBlock] = []
        total = 0
        after = after_seq
        while total < max_readings:
            want = math.ceil((max_readings - total) / self.block_readings)
            rows, bodies = self._block_rows(after, want)
            if not rows:
                break
            after = rows[-1][1]
            blocks = self._chunk_blocks(rows, bodies)
            for block in blocks:
                if block.first_seq <= after_seq:
                    try:
                        block = block.after(after_seq)
                    except BlockError as err:
                        self._undecodable_block(block.first_seq, block.last_seq, err)
                        continue
                out.append(block)
                total += block.count
                if total >= max_readings:
                    break
            if len(rows) < want:
                break
        return out

    def _block_rows(self, after: int, limit: int) -> tuple[list[tuple[int, int, int, int, int]], bytes]:
        # One row for all `limit` blocks (their bodies concatenated by SQLite): a row fetched is a
        # trip out of and back into Python's GIL, and a drain runs beside the busy event loop.
        # -> [(first_seq, last_seq, codec, body length, raw length)], the bodies back to back.
        n, meta, bodies = self._conn.execute(_BLOCKS_AFTER_JOINED, (after, after, limit)).fetchone()
        if not n:
            return [], b""
        rows = [tuple(map(int, item.split())) for item in str(meta).split(",")]
        return rows, bytes(bodies)  # type: ignore[return-value]

    def _chunk_blocks(
        self, rows: list[tuple[int, int, int, int, int]], bodies: bytes
    ) -> list[TelemetryBlock]:
        # Fast: all bodies in one decompression (they form one deflate stream), then cut.
        text = None
        if all(codec == CODEC_JSON_V1_Z for _, _, codec, _, _ in rows):
            text = chunk_text(bodies, [raw for *_, raw in rows])
        out: list[TelemetryBlock] = []
        view = memoryview(text) if text is not None else memoryview(b"")
        pos = 0
        raw_pos = 0
        for first, last, codec, size, raw_len in rows:
            count = last - first + 1
            fragments: Fragments
            try:
                if text is not None:
                    # A view, not a copy: the loop copies the fragments once, into the message.
                    fragments = fragments_in(text, view, raw_pos, raw_len, count)
                else:  # one by one, to skip just the damaged ones
                    fragments = block_fragments(codec, bodies[pos : pos + size], count, raw_len)
            except BlockError as err:
                self._undecodable_block(first, last, err)
            else:
                out.append(TelemetryBlock(first, last, fragments))
            pos += size
            raw_pos += raw_len
        return out

    def _undecodable_row(self, lane: Lane, seq: int, err: Exception) -> None:
        self._damaged(lane, seq, seq, err)

    def _undecodable_block(self, first: int, last: int, err: Exception) -> None:
        self._damaged(Lane.TELEMETRY, first, last, err)

    def _damaged(self, lane: Lane, first: int, last: int, err: Exception) -> None:
        """A row (an event, a block of readings) that cannot be decoded: skipped, and dropped as
        `damaged` (counted, its seq range announced in the event lane) so that it never comes back."""
        if first in self._undecodable_seqs:
            return
        self._undecodable_seqs.add(first)
        self.undecodable += last - first + 1
        name = lane.name.lower()
        log.error(
            "outbox %s: %s seq %d..%d cannot be decoded, dropped: %r", self.path, name, first, last, err
        )
        where, args = f" WHERE {LANE_KEY[lane]} = ?", (first,)
        try:
            if self._conn.in_transaction:  # inside an ack: part of its commit
                self._drop(lane, where, args, "damaged")
            else:
                with self._transaction():
                    self._drop(lane, where, args, "damaged")
        except sqlite3.Error as drop_err:  # left in place; skipped again, not announced twice
            log.error("outbox %s: cannot drop damaged %s seq %d: %s", self.path, name, first, drop_err)

    def note_delivered(self, lane: Lane, upto_seq: int) -> None:
        """End-to-end mode: the platform acknowledged `lane`'s rows up to `upto_seq` (the uplink's
        `ack` deleting them may come later). If the size cap must make room before then, it deletes
        these as delivered and does not count them in `dropped`. No I/O."""
        lane = Lane(lane)
        if upto_seq > self._delivered[lane]:
            self._delivered[lane] = upto_seq

    def ack(self, lane: Lane, upto_seq: int, *, state: tuple[str, str] | None = None) -> int:
        """Delete `lane`'s rows with seq <= upto_seq (they reached the platform); returns how many.

        `state=(key, value)` also sets that state value in the same transaction (the uplink keeps
        its acknowledged position there: one commit instead of two, and never one without the other).
        """
        lane = Lane(lane)
        conn = self._conn
        try:
            with self._relaxed(), self._transaction():
                if lane is Lane.TELEMETRY:
                    n = self._ack_telemetry(upto_seq)
                else:
                    n = max(conn.execute("DELETE FROM events WHERE seq <= ?", (upto_seq,)).rowcount, 0)
                self._tx_rows[lane] -= n
                if state is not None:
                    conn.execute(PUT_STATE, (str(state[0]), str(state[1])))
        except sqlite3.Error as err:
            raise busy_or_store(self.path, err) from err
        return n

    def _ack_telemetry(self, upto_seq: int) -> int:
        # Whole blocks up to upto_seq go; a block straddling it keeps its tail (rare: the uplink
        # sends and acknowledges whole blocks unless its message limits are below the block's).
        conn = self._conn
        # `first_seq <= ?` first: a range of the primary key (there is no index on last_seq).
        n = int(
            conn.execute(
                "SELECT coalesce(sum(last_seq - first_seq + 1), 0) FROM reading_blocks "
                "WHERE first_seq <= ? AND last_seq <= ?",
                (upto_seq, upto_seq),
            ).fetchone()[0]
        )
        if n:
            conn.execute(
                "DELETE FROM reading_blocks WHERE first_seq <= ? AND last_seq <= ?", (upto_seq, upto_seq)
            )
        row = conn.execute(
            f"SELECT {_BLOCK_COLUMNS}, ts FROM reading_blocks WHERE first_seq <= ? AND last_seq > ?",
            (upto_seq, upto_seq),
        ).fetchone()
        if row is not None:
            first, last, codec, body, raw_len, ts = row
            try:
                block = TelemetryBlock(first, last, block_fragments(codec, body, last - first + 1, raw_len))
            except BlockError as err:
                self._undecodable_block(first, last, err)  # dropped whole, announced
                return n
            self._replace_block(first, [block.after(upto_seq)], ts)
            n += upto_seq - first + 1
        return n

    def _replace_block(self, first: int, keep: list[TelemetryBlock], ts: float) -> None:
        # `ts` stays the old block's (the first kept reading is not older): stats' oldest age.
        conn = self._conn
        conn.execute("DELETE FROM reading_blocks WHERE first_seq = ?", (first,))
        conn.executemany(
            _INSERT_BLOCK,
            [(b.first_seq, b.last_seq, ts, CODEC_JSON_V1_Z, *compress_fragments(b.fragments)) for b in keep],
        )

    def ack_seqs(self, seqs: Iterable[int]) -> int:
        """Delete the rows with exactly these seqs (any lane); returns how many existed."""
        wanted = sorted({int(s) for s in seqs})
        if not wanted:
            return 0
        conn = self._conn
        try:
            with self._relaxed(), self._transaction():
                cur = conn.executemany("DELETE FROM events WHERE seq = ?", [(s,) for s in wanted])
                deleted = {
                    Lane.EVENT: max(cur.rowcount, 0),
                    Lane.TELEMETRY: self._ack_reading_seqs(wanted),
                }
                for lane, k in deleted.items():
                    self._tx_rows[lane] -= k
        except sqlite3.Error as err:
            raise busy_or_store(self.path, err) from err
        return sum(deleted.values())

    def _ack_reading_seqs(self, wanted: list[int]) -> int:
        # Each block holding some of these seqs is cut into the runs of consecutive seqs it keeps.
        conn = self._conn
        gone = set(wanted)
        rows = conn.execute(
            f"SELECT {_BLOCK_COLUMNS}, ts FROM reading_blocks WHERE last_seq >= ? AND first_seq <= ? "
            "ORDER BY first_seq",
            (wanted[0], wanted[-1]),
        ).fetchall()
        n = 0
        for first, last, codec, body, raw_len, ts in rows:
            hit = bisect.bisect_right(wanted, last) - bisect.bisect_left(wanted, first)
            if not hit:
                continue
            try:
                count = last - first + 1
                parts = split_fragments(block_fragments(codec, body, count, raw_len), count)
            except BlockError as err:
                self._undecodable_block(first, last, err)
                continue
            keep: list[TelemetryBlock] = []
            run: list[bytes] = []
            run_first = first
            for i, frag in enumerate(parts):
                seq = first + i
                if seq in gone:
                    if run:
                        keep.append(TelemetryBlock(run_first, seq - 1, join_fragments(run)))
                        run = []
                    continue
                if not run:
                    run_first = seq
                run.append(frag)
            if run:
                keep.append(TelemetryBlock(run_first, last, join_fragments(run)))
            self._replace_block(first, keep, ts)
            n += hit
        return n

    def stats(self) -> StoreStats:
        if self.disk_full:  # space may be back although nothing was appended since
            self._after_disk_full()
        try:
            self._conn.execute("BEGIN")
            try:
                stats = query_stats(self._conn, self.path, self._rows)
            finally:
                self._conn.execute("COMMIT")
            if self._rows is None:
                self._rows = {s.lane: s.rows for s in stats.lanes}
            return dataclasses.replace(stats, disk_full=self.disk_full, quarantined=self.quarantined)
        except sqlite3.Error as err:
            raise busy_or_store(self.path, err) from err
