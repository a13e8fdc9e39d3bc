"""The reference platform's SQLite store: what arrived, deduplicated by (gateway_id, epoch, seq),
with the per-lane chain (per gateway, store epoch and lane) that tells a gap from a duplicate.
Several consumer instances may share one file. A message without `epoch` (a gateway from before
epochs) counts as epoch ""."""

from __future__ import annotations

import json
import math
import re
import sqlite3
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any

SCHEMA = """
PRAGMA journal_mode=WAL;
CREATE TABLE IF NOT EXISTS readings (
  gateway_id TEXT NOT NULL, epoch TEXT NOT NULL, seq INTEGER NOT NULL, device_id TEXT NOT NULL,
  point TEXT NOT NULL, value TEXT, unit TEXT NOT NULL, ts_ms INTEGER NOT NULL, quality TEXT NOT NULL,
  arrival INTEGER NOT NULL, PRIMARY KEY (gateway_id, epoch, seq)) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS events (
  gateway_id TEXT NOT NULL, epoch TEXT NOT NULL, seq INTEGER NOT NULL, id TEXT NOT NULL,
  device_id TEXT NOT NULL, kind TEXT NOT NULL, state TEXT NOT NULL, severity TEXT NOT NULL,
  ts_ms INTEGER NOT NULL, message TEXT NOT NULL, body TEXT NOT NULL, arrival INTEGER NOT NULL,
  PRIMARY KEY (gateway_id, epoch, seq)) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS links (
  gateway_id TEXT NOT NULL, epoch TEXT NOT NULL, lane TEXT NOT NULL, prev_seq INTEGER NOT NULL,
  last_seq INTEGER NOT NULL, PRIMARY KEY (gateway_id, epoch, lane, prev_seq, last_seq)) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS lanes (
  gateway_id TEXT NOT NULL, epoch TEXT NOT NULL, lane TEXT NOT NULL, contiguous INTEGER NOT NULL DEFAULT 0,
  messages INTEGER NOT NULL DEFAULT 0, rows INTEGER NOT NULL DEFAULT 0,
  duplicates INTEGER NOT NULL DEFAULT 0, gaps_seen INTEGER NOT NULL DEFAULT 0,
  since INTEGER NOT NULL DEFAULT 0,
  PRIMARY KEY (gateway_id, epoch, lane)) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS documents (
  gateway_id TEXT NOT NULL, kind TEXT NOT NULL, body TEXT NOT NULL, ts_ms INTEGER NOT NULL,
  PRIMARY KEY (gateway_id, kind)) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS command_results (
  gateway_id TEXT NOT NULL, command_id TEXT, body TEXT NOT NULL, ts_ms INTEGER NOT NULL);
CREATE TABLE IF NOT EXISTS arrivals (n INTEGER NOT NULL);
INSERT INTO arrivals SELECT 0 WHERE NOT EXISTS (SELECT 1 FROM arrivals);
"""


MAX_INT = 2**63 - 1  # a seq or ts_ms beyond it fits neither SQLite's INTEGER nor PostgreSQL's BIGINT
_UNSTORABLE = re.compile("[\x00\ud800-\udfff]")  # NUL, lone surrogates: PostgreSQL refuses them
ROW_TEXT = {
    "telemetry": ("device_id", "point", "unit", "quality"),
    "event": ("id", "device_id", "kind", "state", "severity", "message"),
}


class InvalidMessage(ValueError):
    """A message no store keeps the same way (SQLite and PostgreSQL must agree): refused, counted."""


def check_int(value: object, what: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= MAX_INT:
        raise InvalidMessage(f"{what} is not an integer in 0..2**63-1: {value!r:.40}")
    return value


def _storable(value: object, depth: int = 0) -> None:
    """Every text (keys too) without NUL or lone surrogates, every float finite (JSON has no NaN)."""
    if depth > 64:
        raise InvalidMessage("nested more than 64 deep")
    if isinstance(value, str):
        if _UNSTORABLE.search(value):
            raise InvalidMessage(f"text with NUL or a lone surrogate: {value!r:.60}")
    elif isinstance(value, float):
        if not math.isfinite(value):
            raise InvalidMessage(f"a number that is not finite: {value!r}")
    elif isinstance(value, dict):
        for k, v in value.items():
            _storable(k, depth + 1)
            _storable(v, depth + 1)
    elif isinstance(value, list):
        for v in value:
            _storable(v, depth + 1)


def check_document(msg: dict[str, Any]) -> None:
    """What every stored message needs: a string gateway_id, a storable ts_ms and text."""
    if not isinstance(msg.get("gateway_id"), str):
        raise InvalidMessage("gateway_id is not a string")
    check_int(msg.get("ts_ms", 0), "ts_ms")
    acked = msg.get("acked")  # a status: where the lanes' chains start (settle)
    if isinstance(acked, dict):
        for seq in acked.values():
            if isinstance(seq, int):
                check_int(seq, "acked")
    _storable(msg)


def check_rows(msg: dict[str, Any]) -> None:
    """Check a telemetry or events message before storing it."""
    check_document(msg)
    lane = msg.get("lane")
    if lane not in ROW_TEXT:
        raise InvalidMessage(f"lane is not telemetry or event: {lane!r:.40}")
    if not isinstance(msg.get("epoch", ""), str):
        raise InvalidMessage("epoch is not a string")
    check_int(msg.get("seq"), "seq")
    check_int(msg.get("prev_seq"), "prev_seq")
    rows = msg.get("readings" if lane == "telemetry" else "events")
    if not isinstance(rows, list) or not all(isinstance(r, dict) for r in rows):
        raise InvalidMessage("rows are not a list of objects")
    for r in rows:
        check_int(r.get("seq"), "a row's seq")
        check_int(r.get("ts_ms"), "a row's ts_ms")
        for key in ROW_TEXT[lane]:
            if not isinstance(r.get(key), str):
                raise InvalidMessage(f"a row's {key} is not a string")


@dataclass(frozen=True, slots=True)
class LaneView:
    """What the platform knows about one lane of one gateway in one store epoch."""

    gateway_id: str
    lane: str
    contiguous: int  # every row of the lane up to this seq is stored
    rows: int  # distinct rows stored
    messages: int
    duplicates: int  # rows received again (same gateway_id, seq)
    gaps_seen: int  # messages that arrived with a chain link beyond `contiguous`
    open_gap: tuple[int, int] | None  # (after_seq, up_to_seq) missing right now, or None
    epoch: str = ""  # the gateway's store epoch ("" for a gateway from before epochs)


@dataclass(frozen=True, slots=True)
class Ingested:
    """What storing one message did."""

    lane: str
    new_rows: int
    duplicates: int
    gap: bool
    contiguous_before: int
    contiguous: int
    epoch: str = ""  # the store epoch of the message ("" from a gateway before epochs)


class PlatformStore:
    """Synchronous; call from one thread at a time (the consumer runs it in a worker thread)."""

    def __init__(self, path: str | Path) -> None:
        self.path = str(path)
        self._conn = sqlite3.connect(self.path, timeout=30, check_same_thread=False, isolation_level=None)
        self._conn.executescript(SCHEMA)
        columns = {row[1] for row in self._conn.execute("PRAGMA table_info(readings)")}
        if "epoch" not in columns:
            self._conn.close()
            raise ValueError(f"{self.path} was made before store epochs: start a new platform database")
        # FULL: WAL fsynced at every commit, so a row is on disk before its end-to-end ack goes (the
        # contract: ack after a durable store; NORMAL lets a power cut lose acked rows the gateway
        # has deleted). The cost: one fsync per message, a few ms on an SSD, more on a card.
        self._conn.execute("PRAGMA synchronous=FULL")
        self._lock = threading.Lock()

    def close(self) -> None:
        self._conn.close()

    def interrupt(self) -> None:
        """From another thread: abort the statement in progress (its transaction rolls back)."""
        self._conn.interrupt()

    def ingest(self, msg: dict[str, Any]) -> Ingested:
        """Store a telemetry or events message; duplicates are ignored and counted. InvalidMessage
        for one neither store could keep the same way (the consumer counts it and goes on)."""
        check_rows(msg)
        gw, lane, epoch = msg["gateway_id"], msg["lane"], msg.get("epoch", "")
        c = self._conn
        with self._lock:
            c.execute("BEGIN IMMEDIATE")
            try:
                (arrival,) = c.execute("UPDATE arrivals SET n = n + 1 RETURNING n").fetchone()
                c.execute(
                    "INSERT OR IGNORE INTO lanes (gateway_id, epoch, lane, since) VALUES (?, ?, ?, ?)",
                    (gw, epoch, lane, arrival),
                )
                rows: list[tuple[Any, ...]]
                if lane == "telemetry":
                    rows = [
                        (
                            gw,
                            epoch,
                            r["seq"],
                            r["device_id"],
                            r["point"],
                            json.dumps(r["value"]),
                            r["unit"],
                            r["ts_ms"],
                            r["quality"],
                            arrival,
                        )
                        for r in msg["readings"]
                    ]
                    before = c.total_changes
                    c.executemany("INSERT OR IGNORE INTO readings VALUES (?,?,?,?,?,?,?,?,?,?)", rows)
                else:
                    rows = [
                        (
                            gw,
                            epoch,
                            e["seq"],
                            e["id"],
                            e["device_id"],
                            e["kind"],
                            e["state"],
                            e["severity"],
                            e["ts_ms"],
                            e["message"],
                            json.dumps(e, separators=(",", ":")),
                            arrival,
                        )
                        for e in msg["events"]
                    ]
                    before = c.total_changes
                    c.executemany("INSERT OR IGNORE INTO events VALUES (?,?,?,?,?,?,?,?,?,?,?,?)", rows)
                new = c.total_changes - before
                dup = len(rows) - new
                key = (gw, epoch, lane)
                (contig,) = c.execute(
                    "SELECT contiguous FROM lanes WHERE gateway_id=? AND epoch=? AND lane=?", key
                ).fetchone()
                gap = msg["prev_seq"] > contig
                c.execute(
                    "INSERT OR IGNORE INTO links VALUES (?,?,?,?,?)", (*key, msg["prev_seq"], msg["seq"])
                )
                new_contig = self._follow_links(key, contig)
                c.execute(
                    "UPDATE lanes SET contiguous=?, messages=messages+1, rows=rows+?, "
                    "duplicates=duplicates+?, gaps_seen=gaps_seen+? "
                    "WHERE gateway_id=? AND epoch=? AND lane=?",
                    (new_contig, new, dup, int(gap), *key),
                )
                c.execute("COMMIT")
            except BaseException:
                c.execute("ROLLBACK")
                raise
        return Ingested(lane, new, dup, gap, contig, new_contig, epoch)

    def _follow_links(self, key: tuple[str, str, str], contig: int) -> int:
        """`contiguous` after following the stored messages whose `prev_seq` it covers."""
        c = self._conn
        while True:
            (nxt,) = c.execute(
                "SELECT max(last_seq) FROM links WHERE gateway_id=? AND epoch=? AND lane=? "
                "AND prev_seq<=? AND last_seq>?",
                (*key, contig, contig),
            ).fetchone()
            if nxt is None:
                break
            contig = nxt
        c.execute(
            "DELETE FROM links WHERE gateway_id=? AND epoch=? AND lane=? AND last_seq<=?", (*key, contig)
        )
        return int(contig)

    def settle(self, gateway_id: str, epoch: str, lane: str, acked: int) -> int:
        """The gateway says (status `acked`) that rows of `lane` up to `acked` are settled: acknowledged
        and deleted, never sent again. Where the chain starts for a new platform, and the end of a
        gap no one will fill. Returns the lane's `contiguous`."""
        check_int(acked, "acked")
        c = self._conn
        key = (gateway_id, epoch, lane)
        with self._lock:
            c.execute("BEGIN IMMEDIATE")
            try:
                (arrival,) = c.execute("UPDATE arrivals SET n = n + 1 RETURNING n").fetchone()
                c.execute(
                    "INSERT OR IGNORE INTO lanes (gateway_id, epoch, lane, since) VALUES (?, ?, ?, ?)",
                    (*key, arrival),
                )
                (contig,) = c.execute(
                    "SELECT contiguous FROM lanes WHERE gateway_id=? AND epoch=? AND lane=?", key
                ).fetchone()
                new_contig = self._follow_links(key, max(contig, acked))
                c.execute(
                    "UPDATE lanes SET contiguous=? WHERE gateway_id=? AND epoch=? AND lane=?",
                    (new_contig, *key),
                )
                c.execute("COMMIT")
            except BaseException:
                c.execute("ROLLBACK")
                raise
        return new_contig

    def put_document(self, kind: str, msg: dict[str, Any]) -> None:
        """Keep the latest status / inventory of a gateway."""
        check_document(msg)
        with self._lock:
            self._conn.execute(
                "INSERT OR REPLACE INTO documents VALUES (?,?,?,?)",
                (msg["gateway_id"], kind, json.dumps(msg), msg.get("ts_ms", 0)),
            )

    def put_result(self, msg: dict[str, Any]) -> None:
        check_document(msg)
        with self._lock:
            self._conn.execute(
                "INSERT INTO command_results VALUES (?,?,?,?)",
                (msg["gateway_id"], msg.get("command_id"), json.dumps(msg), msg.get("ts_ms", 0)),
            )

    # ---------------------------------------------------------------- queries
    def document(self, gateway_id: str, kind: str) -> dict[str, Any] | None:
        row = self._conn.execute(
            "SELECT body FROM documents WHERE gateway_id=? AND kind=?", (gateway_id, kind)
        ).fetchone()
        return None if row is None else json.loads(row[0])  # type: ignore[no-any-return]

    def results(self, gateway_id: str) -> list[dict[str, Any]]:
        return [
            json.loads(b)
            for (b,) in self._conn.execute(
                "SELECT body FROM command_results WHERE gateway_id=? ORDER BY rowid", (gateway_id,)
            )
        ]

    def lanes(self) -> list[LaneView]:
        out = []
        # Per gateway and lane, the epochs in the order they were first seen (the current one last).
        for gw, epoch, lane, contig, messages, rows, dups, gaps in self._conn.execute(
            "SELECT gateway_id, epoch, lane, contiguous, messages, rows, duplicates, gaps_seen "
            "FROM lanes ORDER BY gateway_id, lane, since"
        ):
            (nxt,) = self._conn.execute(
                "SELECT min(prev_seq) FROM links WHERE gateway_id=? AND epoch=? AND lane=? AND prev_seq>?",
                (gw, epoch, lane, contig),
            ).fetchone()
            gap = None if nxt is None else (contig, nxt)
            out.append(LaneView(gw, lane, contig, rows, messages, dups, gaps, gap, epoch))
        return out

    def lane(self, gateway_id: str, lane: str, epoch: str | None = None) -> LaneView | None:
        """The lane in `epoch`, or in the gateway's latest epoch (the last one first seen)."""
        views = [v for v in self.lanes() if v.gateway_id == gateway_id and v.lane == lane]
        if epoch is not None:
            views = [v for v in views if v.epoch == epoch]
        return views[-1] if views else None

    def reading_seqs(self, gateway_id: str, epoch: str | None = None) -> list[int]:
        """Seqs of stored readings in the order they first arrived (of one store epoch, or all)."""
        where, args = ("", (gateway_id,)) if epoch is None else (" AND epoch=?", (gateway_id, epoch))
        return [
            s
            for (s,) in self._conn.execute(
                f"SELECT seq FROM readings WHERE gateway_id=?{where} ORDER BY arrival, seq", args
            )
        ]

    def event_seqs(self, gateway_id: str) -> list[int]:
        return [
            s
            for (s,) in self._conn.execute(
                "SELECT seq FROM events WHERE gateway_id=? ORDER BY arrival, seq", (gateway_id,)
            )
        ]

    def readings(self, gateway_id: str, limit: int = 1_000_000) -> list[dict[str, Any]]:
        cur = self._conn.execute(
            "SELECT seq, device_id, point, value, unit, ts_ms, quality FROM readings WHERE gateway_id=? "
            "ORDER BY seq LIMIT ?",
            (gateway_id, limit),
        )
        return [
            {
                "seq": s,
                "device_id": d,
                "point": p,
                "value": json.loads(v),
                "unit": u,
                "ts_ms": t,
                "quality": q,
            }
            for s, d, p, v, u, t, q in cur
        ]

    def events(self, gateway_id: str) -> list[dict[str, Any]]:
        return [
            json.loads(b)
            for (b,) in self._conn.execute(
                "SELECT body FROM events WHERE gateway_id=? ORDER BY seq", (gateway_id,)
            )
        ]
