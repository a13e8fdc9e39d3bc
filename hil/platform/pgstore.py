"""The reference platform's store in PostgreSQL (psycopg 3): the same contract as `PlatformStore`
(SQLite, the zero-setup default for the demo), for several consumer processes sharing the load
through a shared subscription: rows keyed by (gateway_id, epoch, seq), the prev_seq chain and its
gaps tracked per (gateway_id, epoch, lane) in tables, one lane's update serialized by a row lock.

    store = PgPlatformStore("postgresql://user@127.0.0.1:5432/platform")
"""

from __future__ import annotations

import json
import threading
from typing import Any

from citynerve.hil.platform.store import Ingested, LaneView, check_document, check_int, check_rows

INTERRUPT_TIMEOUT_S = 5.0

SCHEMA = """
CREATE TABLE IF NOT EXISTS readings (
  gateway_id TEXT NOT NULL, epoch TEXT NOT NULL, seq BIGINT NOT NULL, device_id TEXT NOT NULL,
  point TEXT NOT NULL, value JSONB, unit TEXT NOT NULL, ts_ms BIGINT NOT NULL, quality TEXT NOT NULL,
  arrival BIGSERIAL, PRIMARY KEY (gateway_id, epoch, seq));
CREATE TABLE IF NOT EXISTS events (
  gateway_id TEXT NOT NULL, epoch TEXT NOT NULL, seq BIGINT NOT NULL, id TEXT NOT NULL,
  device_id TEXT NOT NULL, kind TEXT NOT NULL, state TEXT NOT NULL, severity TEXT NOT NULL,
  ts_ms BIGINT NOT NULL, message TEXT NOT NULL, body JSONB NOT NULL, arrival BIGSERIAL,
  PRIMARY KEY (gateway_id, epoch, seq));
CREATE TABLE IF NOT EXISTS lanes (
  gateway_id TEXT NOT NULL, epoch TEXT NOT NULL, lane TEXT NOT NULL, contiguous BIGINT NOT NULL DEFAULT 0,
  messages BIGINT NOT NULL DEFAULT 0, rows BIGINT NOT NULL DEFAULT 0,
  duplicates BIGINT NOT NULL DEFAULT 0, gaps_seen BIGINT NOT NULL DEFAULT 0,
  since TIMESTAMPTZ NOT NULL DEFAULT clock_timestamp(), PRIMARY KEY (gateway_id, epoch, lane));
CREATE TABLE IF NOT EXISTS links (
  gateway_id TEXT NOT NULL, epoch TEXT NOT NULL, lane TEXT NOT NULL, prev_seq BIGINT NOT NULL,
  last_seq BIGINT NOT NULL, PRIMARY KEY (gateway_id, epoch, lane, prev_seq, last_seq));
CREATE TABLE IF NOT EXISTS documents (
  gateway_id TEXT NOT NULL, kind TEXT NOT NULL, body JSONB NOT NULL, ts_ms BIGINT NOT NULL,
  PRIMARY KEY (gateway_id, kind));
CREATE TABLE IF NOT EXISTS command_results (
  gateway_id TEXT NOT NULL, command_id TEXT, body JSONB NOT NULL, ts_ms BIGINT NOT NULL,
  n BIGSERIAL PRIMARY KEY);
"""


class PgPlatformStore:
    """`PlatformStore`'s interface over one PostgreSQL connection (one per consumer process)."""

    def __init__(self, dsn: str) -> None:
        import psycopg  # the `postgres` extra; SQLite needs nothing

        self.dsn = dsn
        self._conn = psycopg.connect(dsn, autocommit=True)
        with self._conn.transaction():
            # One schema creation at a time when several consumers start together.
            self._conn.execute("SELECT pg_advisory_xact_lock(7158)")
            self._conn.execute(SCHEMA)
        self._lock = threading.Lock()

    def close(self) -> None:
        self._conn.close()

    def interrupt(self) -> None:
        """From another thread: cancel the statement in progress (a wait on another session's row
        lock, a slow server); the call raises and its transaction rolls back. Bounded."""
        self._conn.cancel_safe(timeout=INTERRUPT_TIMEOUT_S)

    def _lane_row(self, key: tuple[str, str, str]) -> int:
        """Lock the lane's row for this transaction (created when new); its `contiguous`."""
        self._conn.execute(
            "INSERT INTO lanes (gateway_id, epoch, lane) VALUES (%s, %s, %s) ON CONFLICT DO NOTHING", key
        )
        row = self._conn.execute(
            "SELECT contiguous FROM lanes WHERE gateway_id=%s AND epoch=%s AND lane=%s FOR UPDATE", key
        ).fetchone()
        assert row is not None
        return int(row[0])

    def _follow_links(self, key: tuple[str, str, str], contig: int) -> int:
        while True:
            row = self._conn.execute(
                "SELECT max(last_seq) FROM links WHERE gateway_id=%s AND epoch=%s AND lane=%s "
                "AND prev_seq<=%s AND last_seq>%s",
                (*key, contig, contig),
            ).fetchone()
            if row is None or row[0] is None:
                break
            contig = int(row[0])
        self._conn.execute(
            "DELETE FROM links WHERE gateway_id=%s AND epoch=%s AND lane=%s AND last_seq<=%s", (*key, contig)
        )
        return contig

    def ingest(self, msg: dict[str, Any]) -> Ingested:
        """Store a telemetry or events message; duplicates are ignored and counted. InvalidMessage
        for one neither store could keep the same way (the consumer counts it and goes on)."""
        check_rows(msg)
        gw, lane, epoch = msg["gateway_id"], msg["lane"], msg.get("epoch", "")
        key = (gw, epoch, lane)
        c = self._conn
        with self._lock, c.transaction():
            contig = self._lane_row(key)  # serializes this lane among the consumers
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
                    )
                    for r in msg["readings"]
                ]
                sql = (
                    "INSERT INTO readings (gateway_id, epoch, seq, device_id, point, value, unit, ts_ms, "
                    "quality) VALUES (%s,%s,%s,%s,%s,%s,%s,%s,%s) ON CONFLICT DO NOTHING"
                )
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
                        json.dumps(e),
                    )
                    for e in msg["events"]
                ]
                sql = (
                    "INSERT INTO events (gateway_id, epoch, seq, id, device_id, kind, state, severity, "
                    "ts_ms, message, body) VALUES (%s,%s,%s,%s,%s,%s,%s,%s,%s,%s,%s) ON CONFLICT DO NOTHING"
                )
            new = 0
            with c.cursor() as cur:
                for row in rows:  # rowcount per row: which ones were new
                    cur.execute(sql, row)
                    new += cur.rowcount
            dup = len(rows) - new
            gap = msg["prev_seq"] > contig
            c.execute(
                "INSERT INTO links VALUES (%s,%s,%s,%s,%s) ON CONFLICT DO NOTHING",
                (*key, msg["prev_seq"], msg["seq"]),
            )
            new_contig = self._follow_links(key, contig)
            c.execute(
                "UPDATE lanes SET contiguous=%s, messages=messages+1, rows=rows+%s, "
                "duplicates=duplicates+%s, gaps_seen=gaps_seen+%s "
                "WHERE gateway_id=%s AND epoch=%s AND lane=%s",
                (new_contig, new, dup, int(gap), *key),
            )
        return Ingested(lane, new, dup, gap, contig, new_contig, epoch)

    def settle(self, gateway_id: str, epoch: str, lane: str, acked: int) -> int:
        """Rows up to `acked` are settled at the gateway (status `acked`): the chain starts there."""
        check_int(acked, "acked")
        key = (gateway_id, epoch, lane)
        with self._lock, self._conn.transaction():
            contig = self._lane_row(key)
            new_contig = self._follow_links(key, max(contig, acked))
            self._conn.execute(
                "UPDATE lanes SET contiguous=%s WHERE gateway_id=%s AND epoch=%s AND lane=%s",
                (new_contig, *key),
            )
        return new_contig

    def put_document(self, kind: str, msg: dict[str, Any]) -> None:
        check_document(msg)
        with self._lock:
            self._conn.execute(
                "INSERT INTO documents VALUES (%s,%s,%s,%s) ON CONFLICT (gateway_id, kind) "
                "DO UPDATE SET body=EXCLUDED.body, ts_ms=EXCLUDED.ts_ms",
                (msg["gateway_id"], kind, json.dumps(msg), msg.get("ts_ms", 0)),
            )

    def put_result(self, msg: dict[str, Any]) -> None:
        check_document(msg)
        with self._lock:
            self._conn.execute(
                "INSERT INTO command_results (gateway_id, command_id, body, ts_ms) VALUES (%s,%s,%s,%s)",
                (msg["gateway_id"], msg.get("command_id"), json.dumps(msg), msg.get("ts_ms", 0)),
            )

    # ---------------------------------------------------------------- queries
    def document(self, gateway_id: str, kind: str) -> dict[str, Any] | None:
        row = self._conn.execute(
            "SELECT body FROM documents WHERE gateway_id=%s AND kind=%s", (gateway_id, kind)
        ).fetchone()
        return None if row is None else dict(row[0])

    def results(self, gateway_id: str) -> list[dict[str, Any]]:
        rows = self._conn.execute(
            "SELECT body FROM command_results WHERE gateway_id=%s ORDER BY n", (gateway_id,)
        ).fetchall()
        return [dict(b) for (b,) in rows]

    def lanes(self) -> list[LaneView]:
        out = []
        rows = self._conn.execute(
            "SELECT gateway_id, epoch, lane, contiguous, messages, rows, duplicates, gaps_seen "
            "FROM lanes ORDER BY gateway_id, lane, since"
        ).fetchall()
        for gw, epoch, lane, contig, messages, nrows, dups, gaps in rows:
            nxt = self._conn.execute(
                "SELECT min(prev_seq) FROM links "
                "WHERE gateway_id=%s AND epoch=%s AND lane=%s AND prev_seq>%s",
                (gw, epoch, lane, contig),
            ).fetchone()
            gap = None if nxt is None or nxt[0] is None else (int(contig), int(nxt[0]))
            out.append(
                LaneView(gw, lane, int(contig), int(nrows), int(messages), int(dups), int(gaps), gap, epoch)
            )
        return out

    def lane(self, gateway_id: str, lane: str, epoch: str | None = None) -> LaneView | None:
        views = [v for v in self.lanes() if v.gateway_id == gateway_id and v.lane == lane]
        if epoch is not None:
            views = [v for v in views if v.epoch == epoch]
        return views[-1] if views else None

    def events(self, gateway_id: str) -> list[dict[str, Any]]:
        rows = self._conn.execute(
            "SELECT body FROM events WHERE gateway_id=%s ORDER BY seq", (gateway_id,)
        ).fetchall()
        return [dict(b) for (b,) in rows]

    def reading_seqs(self, gateway_id: str, epoch: str | None = None) -> list[int]:
        return self._seqs("readings", gateway_id, epoch)

    def event_seqs(self, gateway_id: str, epoch: str | None = None) -> list[int]:
        return self._seqs("events", gateway_id, epoch)

    def _seqs(self, table: str, gateway_id: str, epoch: str | None) -> list[int]:
        where, args = ("", (gateway_id,)) if epoch is None else (" AND epoch=%s", (gateway_id, epoch))
        sql = f"SELECT seq FROM {table} WHERE gateway_id=%s{where} ORDER BY arrival, seq"  # table: ours
        return [int(s) for (s,) in self._conn.execute(sql, args).fetchall()]
