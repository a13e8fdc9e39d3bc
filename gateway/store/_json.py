"""Telemetry rows read back as JSON v1 reading fragments built by SQLite, in C.

A backlog drain spends most of its time turning rows into Python records and then into JSON; this
query skips both. One query per message: the readings after a seq, in seq order, each rendered as

    {"seq":..,"device_id":..,"point":..,"value":..,"unit":..,"ts_ms":..,"quality":..}

and joined by commas (`group_concat` over a subquery ordered by seq). The fragment is the same JSON
as `gateway.uplink.json_v1.reading_fragment` (tests compare them with json.loads for every value
kind and quality): NaN and infinities -> null, a finite value that 15 digits would round past the
largest float -> that largest float, bool -> true/false, big ints exact, ts_ms an integer
rounded half to even like Python's round(), floats with 15 significant digits (SQLite's rendering).

Any row the SQL cannot render exactly as the Python path would (an unknown kind or series, a damaged
value) becomes NULL, which `group_concat` leaves out: the result then has `count < rows` and the
caller reads that range through `Outbox.peek` instead, which skips, logs and counts such rows.
"""

from __future__ import annotations

import sqlite3
from dataclasses import dataclass

# Per series, the JSON around the value: built once (json_quote of the names), joined per row.
SERIES_JSON_TABLE = "temp.citynerve_series_json"
CREATE_SERIES_JSON = (
    f"CREATE TABLE IF NOT EXISTS {SERIES_JSON_TABLE} "
    "(id INTEGER PRIMARY KEY, head TEXT NOT NULL, mid TEXT NOT NULL)"
)
SYNC_SERIES_JSON = (
    f"INSERT OR REPLACE INTO {SERIES_JSON_TABLE} (id, head, mid) "
    "SELECT id, ',\"device_id\":' || json_quote(device_id) || ',\"point\":' || json_quote(point) "
    "|| ',\"value\":', ',\"unit\":' || json_quote(unit) || ',\"ts_ms\":' FROM series WHERE id > ?"
)

# value_code = kind % 4 (see _codec): NATIVE 0, BOOL 1, NAN 2, BIGINT 3. NULL = "not rendered here".
_VALUE = """CASE r.kind % 4
  WHEN 0 THEN CASE typeof(r.value)
    WHEN 'real' THEN CASE WHEN abs(r.value) < 1.7976931348623e308 THEN r.value
      WHEN abs(r.value) > 1.7976931348623157e308 THEN 'null'
      WHEN abs(CAST(r.value || '' AS REAL)) <= 1.7976931348623157e308 THEN r.value
      WHEN r.value > 0 THEN '1.7976931348623157e308' ELSE '-1.7976931348623157e308' END
    WHEN 'integer' THEN r.value
    WHEN 'text' THEN json_quote(r.value)
    WHEN 'null' THEN 'null' END
  WHEN 1 THEN CASE WHEN typeof(r.value) = 'integer' THEN CASE WHEN r.value THEN 'true' ELSE 'false' END END
  WHEN 2 THEN 'null'
  WHEN 3 THEN CASE WHEN typeof(r.value) = 'text'
      AND (r.value GLOB '[1-9]*' OR r.value GLOB '-[1-9]*')
      AND substr(r.value, 2) NOT GLOB '*[^0-9]*' THEN r.value END
END"""

# round(ts * 1000) exactly as Python rounds (half to even); t truncates toward zero, d is exact.
_TS_MS = """(CASE WHEN abs(r.ts) < 4.0e12 THEN CAST(r.ts * 1000 AS INTEGER) + CASE
    WHEN abs(r.ts * 1000 - CAST(r.ts * 1000 AS INTEGER)) < 0.5 THEN 0
    WHEN r.ts * 1000 - CAST(r.ts * 1000 AS INTEGER) > 0.5 THEN 1
    WHEN r.ts * 1000 - CAST(r.ts * 1000 AS INTEGER) < -0.5 THEN -1
    ELSE (CAST(r.ts * 1000 AS INTEGER) & 1) * sign(r.ts) END END)"""

_QUALITY = """CASE r.kind / 4 WHEN 0 THEN ',"quality":"good"}' WHEN 1 THEN ',"quality":"bad"}'
  WHEN 2 THEN ',"quality":"stale"}' END"""

_FRAGMENT = f"""'{{"seq":' || r.seq || s.head || {_VALUE} || s.mid || {_TS_MS} || {_QUALITY}"""

# The subquery runs as a co-routine that walks `readings` by seq (its primary key) and feeds
# group_concat row by row, so fragments come out in seq order without a sort; tests/store check it.
TELEMETRY_JSON_QUERY = f"""SELECT count(*), count(f), min(CASE WHEN f IS NOT NULL THEN seq END), max(seq),
  CAST(group_concat(f, ',') AS BLOB)
FROM (SELECT r.seq AS seq, {_FRAGMENT} AS f
      FROM readings AS r LEFT JOIN {SERIES_JSON_TABLE} AS s ON s.id = r.series
      WHERE r.seq > ? ORDER BY r.seq LIMIT ?)"""


@dataclass(frozen=True, slots=True)
class TelemetryJson:
    """Up to `limit` telemetry rows after `after_seq`, rendered as JSON v1 reading fragments.

    `rows` rows were scanned, the last being `last_seq`; `count` of them were rendered, the first
    being `first_seq`, into `fragments` (UTF-8, comma-separated, no brackets). When `complete` is
    false some rows could not be rendered in SQL: read `rows` rows after `after_seq` with
    `Outbox.peek` instead.
    """

    after_seq: int
    first_seq: int
    last_seq: int
    rows: int
    count: int
    fragments: bytes

    @property
    def complete(self) -> bool:
        """Every scanned row is in `fragments`."""
        return self.count == self.rows


def query_telemetry_json(conn: sqlite3.Connection, after_seq: int, limit: int) -> TelemetryJson | None:
    """One chunk (None when no row follows `after_seq`). The series table must be synced first."""
    rows, count, first, last, frags = conn.execute(TELEMETRY_JSON_QUERY, (after_seq, limit)).fetchone()
    if not rows:
        return None
    return TelemetryJson(
        after_seq=after_seq,
        first_seq=int(first) if first is not None else 0,
        last_seq=int(last),
        rows=int(rows),
        count=int(count),
        fragments=bytes(frags) if frags is not None else b"",
    )
