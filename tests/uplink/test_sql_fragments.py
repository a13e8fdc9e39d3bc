"""SQL-built telemetry (Outbox.peek_telemetry_json) against the Python encoder (reading_fragment):
the same JSON for every value kind and quality, in seq order, the same messages (schema-valid),
and the fallback for rows SQL cannot render."""

from __future__ import annotations

import json
import math
import sqlite3
import sys
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from gateway.api import Quality, Reading
from gateway.store import Lane, Outbox, OutboxRow, TelemetryJson
from gateway.uplink import JsonV1Encoding
from gateway.uplink.encoding import TelemetryJsonEncoding
from gateway.uplink.json_v1 import reading_fragment
from tests.uplink.conftest import validate_message

ENC = JsonV1Encoding(topic_prefix="city/nerve", gateway_id="gw-1")

text = st.text(
    st.characters(codec="utf-8"),  # no surrogates: they cannot be stored as UTF-8
    max_size=12,
)
values = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(-(2**63), 2**63 - 1),
    st.integers().filter(lambda i: not -(2**63) <= i < 2**63) | st.integers(2**63, 2**200).map(lambda i: -i),
    st.floats(allow_nan=True, allow_infinity=True),
    st.floats(-1e6, 1e6),
    text,
)
timestamps = st.one_of(
    st.floats(0, 4e9),
    st.floats(1.7e9, 1.9e9),
    st.integers(0, 4 * 10**12).map(lambda ms: ms / 1000),
    st.integers(0, 10**9).map(lambda k: k / 2000),  # exact halves of a millisecond: rounding ties
    st.floats(-1e6, 0),
)
reading_st = st.builds(
    Reading,
    device_id=text.filter(bool),
    point=text.filter(bool),
    value=values,
    unit=text,
    ts=timestamps,
    quality=st.sampled_from(Quality),
)


def strict(a: Any, b: Any) -> bool:
    """Equal JSON values with equal types (json.loads gives 1 == 1.0 == True otherwise)."""
    if type(a) is not type(b):
        return False
    if isinstance(a, dict):
        return list(a) == list(b) and all(strict(a[k], b[k]) for k in a)
    if isinstance(a, list):
        return len(a) == len(b) and all(strict(x, y) for x, y in zip(a, b, strict=True))
    return bool(a == b)


def sql_fragments(ob: Outbox, after: int = 0, limit: int = 10_000) -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = []
    for chunk in ob.peek_telemetry_json(after_seq=after, limit=limit, chunks=1000):
        assert chunk.complete
        out.extend(json.loads(b"[" + chunk.fragments + b"]"))
    return out


@pytest.fixture
def ob(tmp_path: Path) -> Any:
    with Outbox(tmp_path / "o.sqlite", synchronous="normal") as o:
        yield o


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(records=st.lists(reading_st, min_size=1, max_size=40))
def test_sql_fragment_equals_reading_fragment(ob: Outbox, records: list[Reading]) -> None:
    after = ob.next_seq - 1
    first, last = ob.append(records, [])
    want = [json.loads(reading_fragment(first + i, r)) for i, r in enumerate(records)]
    got = sql_fragments(ob, after)
    assert len(got) == len(want)
    for g, w, r in zip(got, want, records, strict=True):
        assert strict(g, w), (r, g, w)
        # and both say what the reading is: ts_ms like round(), floats to 15 significant digits
        assert g["ts_ms"] == round(r.ts * 1000)
        if isinstance(r.value, float) and math.isfinite(r.value):
            assert g["value"] == min(max(float(f"{r.value:.15g}"), -sys.float_info.max), sys.float_info.max)
    ob.ack(Lane.TELEMETRY, last)


def test_every_kind_and_quality_golden(ob: Outbox) -> None:
    vals: list[Any] = [None, True, False, 0, -7, 2**63 - 1, -(2**63), 2**80, -(2**70), 1.5, -0.0, 21.0]
    vals += [0.1 + 0.2, 1e300, 5e-324, math.nan, math.inf, -math.inf, "", 'q"\\\n\x01é€😀']
    records = [
        Reading("dev-ü", 'p"t', v, "m³", 1_780_000_000.0005 + i, q)
        for i, v in enumerate(vals)
        for q in Quality
    ]
    ob.append(records, [])
    got = sql_fragments(ob)
    want = [json.loads(reading_fragment(i + 1, r)) for i, r in enumerate(records)]
    assert all(strict(g, w) for g, w in zip(got, want, strict=True))
    by_value = {json.dumps(g["value"]) for g in got}
    assert {"true", "false", "null", str(2**80), "0.3", "1e+300"} <= by_value
    assert {g["quality"] for g in got} == {"good", "bad", "stale"}


def test_order_chunks_and_gaps(ob: Outbox) -> None:
    ob.append([Reading(f"d{i % 7}", "p", i, "u", 1000.0 + i) for i in range(1000)], [])
    ob.ack_seqs(range(3, 1000, 10))  # holes, as acks of single rows or trimming leave
    chunks = ob.peek_telemetry_json(after_seq=5, limit=64, chunks=100)
    assert all(c.complete for c in chunks)
    seqs = [f["seq"] for c in chunks for f in json.loads(b"[" + c.fragments + b"]")]
    want = [r.seq for r in ob.peek(Lane.TELEMETRY, after_seq=5, limit=10_000)]
    assert seqs == want
    assert [c.rows for c in chunks[:-1]] == [64] * (len(chunks) - 1)
    prev = 5
    for c in chunks:
        assert c.after_seq == prev and c.first_seq > prev and c.last_seq >= c.first_seq
        prev = c.last_seq
    assert ob.peek_telemetry_json(after_seq=prev) == []
    assert ob.peek_telemetry_json(after_seq=0, limit=0) == []


def test_rows_sql_cannot_render_make_the_chunk_incomplete(ob: Outbox, tmp_path: Path) -> None:
    ob.append([Reading("d", "p", float(i), "u", 10.0 + i) for i in range(10)], [])
    raw = sqlite3.connect(tmp_path / "o.sqlite", isolation_level=None)
    raw.execute("UPDATE readings SET kind = 99 WHERE seq = 4")  # unknown kind
    raw.execute("UPDATE readings SET kind = 3, value = '0012' WHERE seq = 6")  # not an exact big int
    raw.execute("UPDATE readings SET value = x'00ff' WHERE seq = 8")  # a blob
    raw.close()
    (chunk,) = ob.peek_telemetry_json(after_seq=0, limit=100)
    assert (chunk.rows, chunk.count, chunk.complete) == (10, 7, False)
    assert ENC.telemetry_from_json(chunk, prev_seq=0, max_bytes=1 << 20) is None
    # the record path over that range skips and counts what it cannot decode
    rows = ob.peek(Lane.TELEMETRY, after_seq=chunk.after_seq, limit=chunk.rows)
    assert 4 not in [r.seq for r in rows] and ob.undecodable >= 1


def test_series_from_another_connection_and_after_a_rollback(ob: Outbox, tmp_path: Path) -> None:
    ob.append([Reading("a", "p", 1, "u", 1.0)], [])
    assert sql_fragments(ob)[0]["device_id"] == "a"
    raw = sqlite3.connect(tmp_path / "o.sqlite", isolation_level=None)  # e.g. a repair tool
    sid = raw.execute("INSERT INTO series (device_id, point, unit) VALUES ('b', 'q', 'v')").lastrowid
    raw.execute("INSERT INTO readings (seq, ts, series, kind, value) VALUES (1000, 2.0, ?, 0, 2)", (sid,))
    raw.close()
    got = sql_fragments(ob)
    assert [(g["device_id"], g["point"], g["unit"]) for g in got] == [("a", "p", "u"), ("b", "q", "v")]
    with pytest.raises(Exception):  # noqa: B017 - a record that cannot be stored rolls back
        ob.append([Reading("c", "r", 3, "w", 3.0), Reading("d", "s", object(), "x", 4.0)], [])  # type: ignore[arg-type]
    ob.append([Reading("e", "t", 5, "y", 5.0)], [])
    got = sql_fragments(ob)
    assert [g["device_id"] for g in got] == ["a", "e", "b"]


def test_message_from_fragments_is_the_contract() -> None:
    assert isinstance(ENC, TelemetryJsonEncoding)
    frags = ",".join(reading_fragment(10 + i, Reading("d", "p", i * 0.5, "u", 1.0 + i)) for i in range(3))
    chunk = TelemetryJson(after_seq=7, first_seq=10, last_seq=12, rows=3, count=3, fragments=frags.encode())
    batch = ENC.telemetry_from_json(chunk, prev_seq=7, max_bytes=4096)
    assert batch is not None
    body = json.loads(batch.message.payload)
    validate_message("telemetry", body)
    assert (body["seq"], body["first_seq"], body["prev_seq"], body["count"]) == (12, 10, 7, 3)
    assert (batch.first_seq, batch.last_seq, batch.count, batch.lane) == (10, 12, 3, Lane.TELEMETRY)
    assert batch.message.topic == "city/nerve/gw-1/telemetry" and batch.message.qos == 1
    # the same readings through the record path give the same message apart from its own time
    rows = [
        OutboxRow(10 + i, Lane.TELEMETRY, 1.0 + i, Reading("d", "p", i * 0.5, "u", 1.0 + i)) for i in range(3)
    ]
    (obj,) = ENC.rows(Lane.TELEMETRY, rows, prev_seq=7, max_rows=10, max_bytes=4096)
    other = json.loads(obj.message.payload)
    for b in (body, other):
        b.pop("ts"), b.pop("ts_ms")
    assert strict(body, other)
    assert ENC.telemetry_from_json(chunk, prev_seq=7, max_bytes=len(batch.message.payload) - 1) is None
    assert ENC.telemetry_from_json(chunk, prev_seq=7, max_bytes=len(batch.message.payload)) is not None


raw_values = st.one_of(
    st.none(),
    st.integers(-(2**63), 2**63 - 1),
    st.floats(allow_nan=False),
    st.text(max_size=25),
    st.from_regex(r"-?[0-9]{1,30}", fullmatch=True),
    st.binary(max_size=4),
)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(kind=st.integers(-3, 15), value=raw_values, ts=timestamps)
def test_fuzz_any_stored_row_renders_like_the_record_path_or_not_at_all(
    ob: Outbox, tmp_path: Path, kind: int, value: Any, ts: float
) -> None:
    """Whatever a row holds (damaged storage included), SQL either renders exactly what the record
    path would, or leaves the row out and marks the chunk incomplete; it never raises."""
    ob.append([Reading("d", "p", 0, "u", 1.0)], [])
    seq = ob.next_seq - 1
    raw = sqlite3.connect(tmp_path / "o.sqlite", isolation_level=None)
    raw.execute("UPDATE readings SET kind = ?, value = ?, ts = ? WHERE seq = ?", (kind, value, ts, seq))
    raw.close()
    (chunk,) = ob.peek_telemetry_json(after_seq=seq - 1, limit=5)
    rows = ob.peek(Lane.TELEMETRY, after_seq=seq - 1, limit=5)
    if chunk.complete:
        (row,) = rows
        assert isinstance(row.record, Reading)
        want = json.loads(reading_fragment(seq, row.record))
        assert strict(json.loads(chunk.fragments), want), (kind, value)
    else:
        assert chunk.count == 0 and chunk.fragments == b""
    ob.ack(Lane.TELEMETRY, seq)
