"""The outbox: a SQLite file (WAL) holding every reading and event until the uplink has sent it.

Synchronous and single-threaded on purpose: `AsyncOutbox` runs one of these on its own thread.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import logging
import math
import os
import sqlite3
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass

from citynerve.gateway.api import SYSTEM_CLOCK, Clock, Event, Reading
from citynerve.gateway.store._blocks import (
    CODEC_NEUTRAL_Z,
    BlockError,
    ReadingBlock,
    ReadingMark,
    decode_block,
    encode_block,
)
from citynerve.gateway.store._cap import CappedFile
from citynerve.gateway.store._codec import check_storable, decode_event, encode_event
from citynerve.gateway.store._config import MIB
from citynerve.gateway.store._destinations import (
    DEFAULT_DESTINATION,
    KNOWN_KEY,
    Destinations,
    RecordFilter,
    absences,
    position_key,
    wanted_after,
)
from citynerve.gateway.store._errors import RecordError, StoreFullError
from citynerve.gateway.store._file import ADD_COUNTER, PUT_STATE, Synchronous, busy_or_store
from citynerve.gateway.store._schema import BLOCK_READINGS
from citynerve.gateway.store._stats import LANE_KEY, LANE_STORED_KEY, Lane, StoreStats, query_stats

log = logging.getLogger(__name__)

# What decoding a damaged row can raise (json errors are ValueError; deep nesting RecursionError).
DECODE_ERRORS = (KeyError, IndexError, ValueError, TypeError, ArithmeticError, RecursionError)
_BLOCK_COLUMNS = "first_seq, last_seq, codec, body, raw_len"
# Blocks holding seqs after ?: from the block holding it (found on the primary key) onwards.
_BLOCKS_AFTER = (
    f"SELECT {_BLOCK_COLUMNS} FROM reading_blocks WHERE first_seq >= coalesce((SELECT first_seq "
    "FROM reading_blocks WHERE first_seq <= ? ORDER BY first_seq DESC LIMIT 1), 0) AND last_seq > ? "
    "ORDER BY first_seq LIMIT ?"
)
_READINGS_AFTER = "coalesce(sum(last_seq - max(first_seq, ? + 1) + 1), 0)"  # readings of blocks after ?
_INSERT_BLOCK = (
    "INSERT INTO reading_blocks (first_seq, last_seq, ts, codec, body, raw_len) VALUES (?, ?, ?, ?, ?, ?)"
)
_MARKER_INTERVAL_S = 60.0  # the marker file is rewritten at most this often after commits
_DISK_FULL_TRIES = 4  # tries of one append on a full disk, each with a lower cap


@dataclass(frozen=True, slots=True)
class OutboxRow:
    """One queued record with its seq (unique per gateway across lanes, never reused)."""

    seq: int
    lane: Lane
    ts: float
    record: Reading | Event
    mark: ReadingMark | None = None
    """A reading stamped while the wall clock was not synchronised (docs/store.md)."""


class Outbox(CappedFile):
    """Durable, ordered queue of readings (telemetry lane) and events (event lane).

    - `seq`: one counter per gateway across both lanes, strictly increasing, kept in the file, so
      it survives restarts and is never reused, even after every row was acknowledged.
    - Telemetry is stored in blocks of up to `block_readings` readings with consecutive seqs, in a
      neutral compact form (citynerve.gateway.store._blocks): encodings render them when they
      publish. Events are one row each.
    - Size cap: when the used pages exceed `max_bytes`, the oldest telemetry is dropped first (whole
      blocks) and events only when no telemetry is left; every drop is counted per lane in the file.
    - `synchronous="full"` makes every commit durable on power loss, "normal" on a process crash.
    - `clock`: its `monotonic()` times the marker writes and the merged drop notices.
    """

    def __init__(
        self,
        path: str | os.PathLike[str],
        *,
        max_bytes: int = 256 * MIB,
        synchronous: Synchronous = "full",
        block_readings: int = BLOCK_READINGS,
        clock: Clock = SYSTEM_CLOCK,
    ) -> None:
        if block_readings < 1:
            raise ValueError("block_readings must be >= 1")
        self.block_readings = block_readings
        self.undecodable = 0  # rows peek had to skip (damaged storage); see peek()
        self._undecodable_seqs: set[int] = set()
        self._destinations = Destinations()
        super().__init__(path, max_bytes=max_bytes, synchronous=synchronous, clock=clock)
        self._dests()  # the default destination's positions, read here (on the outbox's thread)

    def append(
        self,
        readings: Sequence[Reading],
        events: Sequence[Event],
        *,
        marks: Sequence[ReadingMark | None] | None = None,
    ) -> tuple[int, int]:
        """Store readings then events in ONE transaction; returns (first_seq, last_seq).

        Seqs are given in argument order, readings first. (0, -1) when both are empty.
        `marks[i]`: reading i's clock mark (stamped while the wall clock was not synchronised).
        Raises RecordError (before touching the file) for a record that cannot be stored.
        """
        if marks is not None and len(marks) != len(readings):
            raise ValueError("one mark (or None) per reading")
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
            blocks = self._reading_blocks(readings, first, marks) if readings else []
            try:
                self._append_rows(blocks, events, bodies, first, len(readings))
            except sqlite3.IntegrityError as err:  # defence in depth: check_storable refuses these first
                raise RecordError("reading or event", f"not storable: {err}") from err
            except UnicodeError as err:  # text SQLite cannot bind (check_storable refuses it first)
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
        if self._marker_at + _MARKER_INTERVAL_S <= self.clock.monotonic():
            self._write_marker()
        self._announce_due()
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
                conn.execute(ADD_COUNTER, (LANE_STORED_KEY[Lane.TELEMETRY], nr))
                self._tx_rows[Lane.TELEMETRY] += nr
            if events:
                conn.execute(ADD_COUNTER, (LANE_STORED_KEY[Lane.EVENT], len(events)))
                start = first + nr
                conn.executemany(
                    "INSERT INTO events (seq, ts, body) VALUES (?, ?, ?)",
                    [(start + i, e.ts, b) for i, (e, b) in enumerate(zip(events, bodies, strict=True))],
                )
                self._tx_rows[Lane.EVENT] += len(events)
                self.last_event_seq = start + len(events) - 1
            self._tx_next = first + nr + len(events)
            self._enforce_cap()

    def _reading_blocks(
        self, readings: Sequence[Reading], first: int, marks: Sequence[ReadingMark | None] | None
    ) -> list[tuple[object, ...]]:
        out: list[tuple[object, ...]] = []
        size = self.block_readings
        for i in range(0, len(readings), size):
            part = readings[i : i + size]
            start = first + i
            try:
                body, raw_len = encode_block(part, None if marks is None else marks[i : i + size])
                ts = float(part[0].ts)
            except (AttributeError, TypeError, KeyError, ValueError, OverflowError) as err:
                raise RecordError("reading", f"not storable: {err!r}") from err
            out.append((start, start + len(part) - 1, ts, CODEC_NEUTRAL_Z, body, raw_len))
        return out

    # -- reading and acknowledging ---------------------------------------------------------------

    def peek(self, lane: Lane, *, after_seq: int = 0, limit: int = 1000) -> list[OutboxRow]:
        """Up to `limit` queued rows of `lane` with seq > after_seq, in seq order.

        A row that cannot be decoded (damaged storage) is skipped and dropped as `damaged`
        (counted, its seq range announced in the event lane): one bad row must not stop the uplink
        forever. For telemetry the unit is a block: its readings are skipped together."""
        if limit < 1:
            return []
        try:
            if lane is Lane.TELEMETRY:
                out: list[OutboxRow] = []
                for block in self._telemetry_blocks(after_seq, limit):
                    for seq, rec in block.readings():
                        if len(out) < limit:
                            out.append(OutboxRow(seq, Lane.TELEMETRY, rec.ts, rec, block.mark_of(seq)))
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

    def peek_telemetry_blocks(self, *, after_seq: int = 0, max_readings: int = 2000) -> list[ReadingBlock]:
        """Queued telemetry after `after_seq` as `ReadingBlock`s in seq order: whole blocks until at
        least `max_readings` readings (or the lane's end); [] when nothing follows. The first block
        starts after `after_seq` even when a stored block straddles it. Damaged blocks are
        skipped (and dropped) as in `peek`. The drain's read: encodings render the blocks."""
        if max_readings < 1:
            return []
        try:
            return self._telemetry_blocks(after_seq, max_readings)
        except sqlite3.Error as err:
            raise busy_or_store(self.path, err) from err

    def _telemetry_blocks(self, after_seq: int, max_readings: int) -> list[ReadingBlock]:
        out: list[ReadingBlock] = []
        total = 0
        after = after_seq
        while total < max_readings:
            want = math.ceil((max_readings - total) / self.block_readings)
            rows = self._conn.execute(_BLOCKS_AFTER, (after, after, want)).fetchall()
            for first, last, codec, body, raw_len in rows:
                after = last
                try:
                    block = decode_block(first, last, codec, body, raw_len).after(after_seq)
                except BlockError as err:
                    self._undecodable_block(first, last, err)
                    continue
                out.append(block)
                total += block.count
                if total >= max_readings:
                    break
            if len(rows) < want:
                break
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

    # -- destinations ------------------------------------------------------------------------------

    def set_destinations(
        self, wants: Mapping[str, Iterable[Lane]], keeps: Mapping[str, RecordFilter] | None = None
    ) -> None:
        """The destinations this outbox feeds and the lanes each wants (citynerve.gateway.store.
        _destinations): a row is deleted once every destination wanting its lane acknowledged it.
        `keeps`: the filters of destinations that want only some rows of their lanes (their drops
        count only those rows). Call before any `ack`; positions come from the file. Unset: one,
        `default`, wanting both.

        Rows no destination waits for any more leave now (not at the next ack). A destination that
        wants a lane again after it was left out of it (removed from the config, disabled) goes on
        from its position, and is told of the rows after it that left meanwhile (never sent to it):
        an `outbox_dropped` notice, reason `destination_absent`, counted as its loss."""
        self._use_destinations(wants, keeps)
        dests = self._destinations
        try:
            with self._transaction():
                for gone in absences(self._conn, dests.wants, self._rows_after):
                    self._announce_absent(gone.destination, gone.lane, gone.position, gone.lost)
                for lane in Lane:
                    floor = dests.floor(lane)
                    self._tx_rows[lane] -= self._delete_upto(lane, self._next_seq if floor is None else floor)
        except sqlite3.Error as err:
            raise busy_or_store(self.path, err) from err

    def _use_destinations(
        self, wants: Mapping[str, Iterable[Lane]], keeps: Mapping[str, RecordFilter] | None = None
    ) -> None:
        positions = {}
        for destination in wants:
            for lane in Lane:
                raw = self.get_state(position_key(destination, lane))
                with contextlib.suppress(ValueError, TypeError):
                    positions[(destination, lane)] = int(raw) if raw else 0
        self._destinations.set(wants, positions, keeps)

    def _dests(self) -> Destinations:
        if not self._destinations.wants:
            self._use_destinations({DEFAULT_DESTINATION: tuple(Lane)})
        return self._destinations

    def position(self, destination: str, lane: Lane) -> int:
        """`destination`'s acknowledged position in `lane` (0: nothing yet)."""
        return self._dests().acked.get(destination, {}).get(Lane(lane), 0)

    def note_delivered(self, lane: Lane, upto_seq: int, *, destination: str = DEFAULT_DESTINATION) -> None:
        """End-to-end mode: `destination`'s platform acknowledged `lane`'s rows up to `upto_seq` (the
        uplink's `ack` deleting them may come later). If the size cap must make room before then, it
        deletes rows every destination's platform holds as delivered, not as dropped. No I/O."""
        held = self._dests().delivered.get(destination)
        if held is not None and upto_seq > held[Lane(lane)]:
            held[Lane(lane)] = upto_seq

    def _held_by_platforms(self, lane: Lane) -> int:
        return self._dests().delivered_floor(lane)

    def _dropped_for(self, lane: Lane, where: str, args: tuple[object, ...]) -> dict[str, int]:
        dests = self._dests()
        if list(dests.wants) == [DEFAULT_DESTINATION] and not self._knew_others():
            return {}
        out = {}
        for d in dests.wanting(lane):
            keep, after = dests.keeps.get(d), dests.acked[d][lane]
            if keep is None:
                out[d] = self._rows_after(lane, after, where, args)
            else:  # only the rows it wanted (decoded: drops are rare)
                out[d] = wanted_after(self._conn, lane, after, where, args, keep)
        return out

    def _knew_others(self) -> bool:
        """Another destination than `default` was given to this outbox before (`KNOWN_KEY`). Put
        back, it is told of what it missed (`destination_absent`), so the notices of default's
        drops meanwhile say whose loss they are (`destinations`), or they would reach it too."""
        row = self._conn.execute("SELECT value FROM state WHERE key = ?", (KNOWN_KEY,)).fetchone()
        try:
            return any(d != DEFAULT_DESTINATION for d in json.loads(row[0]))
        except (TypeError, ValueError):  # none, or damaged (`absences` then knows none either)
            return False

    def _rows_after(self, lane: Lane, after: int, where: str = "", args: tuple[object, ...] = ()) -> int:
        """Records of `lane` after seq `after` (among the rows matching `where`, if given)."""
        where = f"{where} AND" if where else " WHERE"
        if lane is Lane.EVENT:
            sql = f"SELECT count(*) FROM events{where} seq > ?"
            return int(self._conn.execute(sql, (*args, after)).fetchone()[0])
        # the part of each block after `after`
        sql = f"SELECT {_READINGS_AFTER} FROM reading_blocks{where} last_seq > ?"
        return int(self._conn.execute(sql, (after, *args, after)).fetchone()[0])

    def destination_stats(self) -> dict[str, dict[str, dict[str, int]]]:
        """Per destination: its acknowledged position, backlog (rows after it) and rows dropped
        before it got them, per lane it wants."""
        dests = self._dests()
        try:
            counters = dict(self._conn.execute("SELECT name, value FROM counters").fetchall())
            out: dict[str, dict[str, dict[str, int]]] = {}
            for destination, lanes in dests.wants.items():
                info: dict[str, dict[str, int]] = {"acked": {}, "backlog": {}, "dropped": {}}
                for lane in sorted(lanes):
                    name = "event" if lane is Lane.EVENT else "telemetry"
                    after = dests.acked[destination][lane]
                    info["acked"][name] = after
                    info["backlog"][name] = self._rows_after(lane, after)
                    key = f"dropped.{name}"
                    info["dropped"][name] = int(
                        counters.get(
                            key if list(dests.wants) == [DEFAULT_DESTINATION] else f"{key}.{destination}", 0
                        )
                    )
                out[destination] = info
            return out
        except sqlite3.Error as err:
            raise busy_or_store(self.path, err) from err

    def ack(
        self,
        lane: Lane,
        upto_seq: int,
        *,
        destination: str = DEFAULT_DESTINATION,
        state: tuple[str, str] | None = None,
    ) -> int:
        """`destination` acknowledged `lane`'s rows with seq <= upto_seq (they reached its platform):
        its position is stored, and the rows every destination wanting the lane has acknowledged
        are deleted; returns how many were deleted. Rows of a lane no destination wants go too.

        `state=(key, value)` also sets that state value in the same transaction (the uplink keeps
        its chain position there: one commit instead of two, and never one without the other).
        """
        lane = Lane(lane)
        dests = self._dests()
        if lane not in dests.wants.get(destination, ()):
            raise ValueError(f"destination {destination!r} does not take the {lane.name.lower()} lane")
        acked = dests.acked[destination]
        pos = max(acked[lane], upto_seq)
        conn = self._conn
        n = 0
        try:
            with self._relaxed(), self._transaction():
                conn.execute(PUT_STATE, (position_key(destination, lane), str(pos)))
                floor = min(pos if d == destination else dests.acked[d][lane] for d in dests.wanting(lane))
                n = self._delete_upto(lane, floor)
                self._tx_rows[lane] -= n
                for other in Lane:
                    if dests.floor(other) is None:  # nobody wants these rows
                        self._tx_rows[other] -= self._delete_upto(other, self._next_seq)
                if state is not None:
                    conn.execute(PUT_STATE, (str(state[0]), str(state[1])))
        except sqlite3.Error as err:
            raise busy_or_store(self.path, err) from err
        acked[lane] = pos
        return n

    def _delete_upto(self, lane: Lane, upto_seq: int) -> int:
        if lane is Lane.EVENT:
            return max(self._conn.execute("DELETE FROM events WHERE seq <= ?", (upto_seq,)).rowcount, 0)
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
                block = decode_block(first, last, codec, body, raw_len)
            except BlockError as err:
                self._undecodable_block(first, last, err)  # dropped whole, announced
                return n
            self._replace_block(block, [block.after(upto_seq)], ts)
            n += upto_seq - first + 1
        return n

    def _replace_block(self, block: ReadingBlock, keep: list[ReadingBlock], ts: float) -> None:
        """`block` replaced by the parts of it that are kept. `ts` stays the old block's (the first
        kept reading is not older): stats' oldest age."""
        conn = self._conn
        conn.execute("DELETE FROM reading_blocks WHERE first_seq = ?", (block.first_seq,))
        conn.executemany(
            _INSERT_BLOCK,
            [(b.first_seq, b.last_seq, ts, CODEC_NEUTRAL_Z, *b.encode()) for b in keep if b.count > 0],
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
        gone = set(wanted)
        rows = self._conn.execute(
            f"SELECT {_BLOCK_COLUMNS}, ts FROM reading_blocks WHERE last_seq >= ? AND first_seq <= ? "
            "ORDER BY first_seq",
            (wanted[0], wanted[-1]),
        ).fetchall()
        n = 0
        for first, last, codec, body, raw_len, ts in rows:
            hit = sum(1 for s in range(first, last + 1) if s in gone)
            if not hit:
                continue
            try:
                block = decode_block(first, last, codec, body, raw_len)
            except BlockError as err:
                self._undecodable_block(first, last, err)
                continue
            keep: list[ReadingBlock] = []
            start = 0
            for k in range(block.count + 1):
                if k == block.count or first + k in gone:
                    if k > start:
                        keep.append(block.slice(start, k))
                    start = k + 1
            self._replace_block(block, keep, ts)
            n += hit
        return n

    def drop_too_large(self, lane: Lane, seq: int) -> int:
        """Drop row `seq` of `lane` unsent, as `too_large`: an uplink found that alone it does not
        fit in a message its broker accepts (the broker's Maximum Packet Size), so it would block
        the lane for ever. Counted and announced at once (`outbox_dropped`), as every drop; a
        reading is first cut out of its block. Returns the rows dropped (0: it is gone already)."""
        lane = Lane(lane)
        try:
            with self._transaction():
                if lane is Lane.TELEMETRY:
                    self._cut_out(seq)
                return self._drop(lane, f" WHERE {LANE_KEY[lane]} = ?", (seq,), "too_large")[1]
        except sqlite3.Error as err:
            raise busy_or_store(self.path, err) from err

    def _cut_out(self, seq: int) -> None:
        """Inside a transaction: the reading `seq` becomes a block of its own (the others stay)."""
        row = self._conn.execute(
            f"SELECT {_BLOCK_COLUMNS}, ts FROM reading_blocks WHERE first_seq <= ? "
            "ORDER BY first_seq DESC LIMIT 1",
            (seq,),
        ).fetchone()
        if row is None or row[1] < seq or row[0] == row[1]:
            return
        first, last, codec, body, raw_len, ts = row
        try:
            block = decode_block(first, last, codec, body, raw_len)
        except BlockError as err:
            self._undecodable_block(first, last, err)  # dropped whole, announced
            return
        k = seq - first
        self._replace_block(
            block, [block.slice(0, k), block.slice(k, k + 1), block.slice(k + 1, block.count)], ts
        )

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
