"""Outbox figures for people and programs: rows, oldest age and drops per lane, file size."""

from __future__ import annotations

import enum
import os
import sqlite3
from dataclasses import dataclass, field
from typing import Any

from citynerve.gateway.store._epoch import corrupt_copies


class Lane(enum.IntEnum):
    """An outbox lane. Lower value = higher priority: events never wait behind telemetry."""

    EVENT = 0
    TELEMETRY = 1


# Events are one row each (`seq`); readings are blocks of consecutive seqs (`first_seq..last_seq`).
LANE_TABLE: dict[Lane, str] = {Lane.EVENT: "events", Lane.TELEMETRY: "reading_blocks"}
LANE_KEY: dict[Lane, str] = {Lane.EVENT: "seq", Lane.TELEMETRY: "first_seq"}
LANE_LAST: dict[Lane, str] = {Lane.EVENT: "seq", Lane.TELEMETRY: "last_seq"}
LANE_ROWS: dict[Lane, str] = {Lane.EVENT: "1", Lane.TELEMETRY: "last_seq - first_seq + 1"}
LANE_DROPPED_KEY: dict[Lane, str] = {Lane.EVENT: "dropped.event", Lane.TELEMETRY: "dropped.telemetry"}
# Rows ever stored per lane (appended and notices): how many left while a destination was left out.
LANE_STORED_KEY: dict[Lane, str] = {Lane.EVENT: "stored.event", Lane.TELEMETRY: "stored.telemetry"}
DROPPED_BY_PREFIX = "dropped_by."  # + reason (size_cap, damaged, disk_full, too_large): dropped unsent


@dataclass(frozen=True, slots=True)
class LaneStats:
    lane: Lane
    rows: int
    oldest_ts: float | None  # ts of the first queued row (lowest seq); None when empty
    dropped: int  # rows removed by the size cap since the file was created

    def to_dict(self) -> dict[str, Any]:
        return {
            "lane": self.lane.name.lower(),
            "rows": self.rows,
            "oldest_ts": self.oldest_ts,
            "dropped": self.dropped,
        }


@dataclass(frozen=True, slots=True)
class CorruptCopy:
    """The corrupt outbox kept aside (the newest; older ones are deleted): for a technician to look
    at or recover rows from. Deleted when the disk fills up."""

    path: str
    bytes: int  # with its -wal and -shm
    mtime: float  # when it was last written

    def to_dict(self) -> dict[str, Any]:
        return {"path": self.path, "bytes": self.bytes, "mtime": self.mtime}


@dataclass(frozen=True, slots=True)
class StoreStats:
    path: str
    file_bytes: int  # the main database file
    schema_version: int
    next_seq: int  # the seq the next appended row will get
    lanes: tuple[LaneStats, ...]
    wal_bytes: int = 0  # the -wal file beside it (0 when absent)
    epoch: str = ""  # the store epoch (citynerve.gateway.store._epoch); "" before the file had one
    dropped_by: dict[str, int] = field(default_factory=dict)  # records dropped unsent, per reason
    disk_full: bool = False  # the last commit found the disk full (known to the running gateway only)
    quarantined: str | None = None  # where a corrupt outbox was moved when this one was opened
    corrupt_copy: CorruptCopy | None = None  # a corrupt outbox kept aside, this run or before

    @property
    def state(self) -> str:
        """`disk_full` while commits find no space, `degraded` after a quarantine this run, else `ok`."""
        if self.disk_full:
            return "disk_full"
        return "degraded" if self.quarantined else "ok"

    def lane(self, lane: Lane) -> LaneStats:
        return next(s for s in self.lanes if s.lane is lane)

    def to_dict(self) -> dict[str, Any]:
        return {
            "path": self.path,
            "file_bytes": self.file_bytes,
            "wal_bytes": self.wal_bytes,
            "schema_version": self.schema_version,
            "next_seq": self.next_seq,
            "lanes": [s.to_dict() for s in self.lanes],
            "epoch": self.epoch,
            "state": self.state,
            "dropped_by": dict(self.dropped_by),
            "disk_full": self.disk_full,
            "quarantined": self.quarantined,
            "corrupt_copy": None if self.corrupt_copy is None else self.corrupt_copy.to_dict(),
        }


def _size(path: str) -> int:
    try:
        return os.path.getsize(path)
    except OSError:
        return 0


def corrupt_copy(path: str) -> CorruptCopy | None:
    """The newest corrupt outbox moved aside beside `path`, if there is one."""
    copies = corrupt_copies(path)
    if not copies:
        return None
    newest = copies[-1]
    try:
        mtime = os.path.getmtime(newest)
    except OSError:  # deleted meanwhile
        return None
    return CorruptCopy(newest, sum(_size(newest + s) for s in ("", "-wal", "-shm")), mtime)


def query_stats(conn: sqlite3.Connection, path: str, rows: dict[Lane, int] | None = None) -> StoreStats:
    """Stats read through `conn` (any connection to a migrated file; runs in a read transaction).

    `rows`: row counts per lane the caller already knows (counting a big table is a full scan)."""
    version = int(conn.execute("PRAGMA user_version").fetchone()[0])
    counters = dict(conn.execute("SELECT name, value FROM counters").fetchall())
    lanes = []
    for lane, table in LANE_TABLE.items():
        if rows is not None:
            n = rows[lane]
        else:
            n = int(conn.execute(f"SELECT coalesce(sum({LANE_ROWS[lane]}), 0) FROM {table}").fetchone()[0])
        first = conn.execute(f"SELECT ts FROM {table} ORDER BY {LANE_KEY[lane]} LIMIT 1").fetchone()
        lanes.append(
            LaneStats(
                lane,
                n,
                None if first is None else float(first[0]),
                int(counters.get(LANE_DROPPED_KEY[lane], 0)),
            )
        )
    epoch = conn.execute("SELECT value FROM state WHERE key = 'outbox.epoch'").fetchone()
    return StoreStats(
        path=path,
        file_bytes=_size(path),
        schema_version=version,
        next_seq=int(counters["next_seq"]),
        lanes=tuple(lanes),
        wal_bytes=_size(path + "-wal"),
        epoch=str(epoch[0]) if epoch else "",
        dropped_by={
            k[len(DROPPED_BY_PREFIX) :]: int(v)
            for k, v in counters.items()
            if k.startswith(DROPPED_BY_PREFIX)
        },
        corrupt_copy=corrupt_copy(path),
    )
