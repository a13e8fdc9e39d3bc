"""JSON v1 encoding: round trips (hypothesis), batch limits, the prev_seq chain, and every message
kind validated against its JSON Schema."""

from __future__ import annotations

import json
import math
from datetime import UTC, datetime

from hypothesis import given, settings
from hypothesis import strategies as st

from citynerve.gateway.api import Event, EventState, Quality, Reading, Severity
from citynerve.gateway.payload import PayloadError
from citynerve.gateway.store import Lane, OutboxRow
from citynerve.gateway.store._blocks import CODEC_NEUTRAL_Z, decode_block, encode_block
from citynerve.gateway.uplink import CommandOutcome, CommandResult, JsonV1Encoding, RejectReason
from citynerve.gateway.uplink.json_v1 import event_fragment, iso_utc, stamp
from tests.uplink.conftest import INVENTORY, validate_message

ENC = JsonV1Encoding(topic_prefix="city/nerve", gateway_id="gw-1", epoch="5e3a09c1d2b4e6f7")

_ID_CHARS = "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789"
ids = st.builds(
    lambda a, b: a + b,
    st.sampled_from(_ID_CHARS),
    st.text(alphabet=_ID_CHARS + "_.:-", max_size=20),
)
values = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(-(2**63), 2**63 - 1),
    st.floats(allow_nan=True, allow_infinity=True),
    st.text(max_size=30),
)
reading_st = st.builds(
    Reading,
    device_id=ids,
    point=ids,
    value=values,
    unit=st.text(max_size=8),
    ts=st.floats(0, 4e9),
    quality=st.sampled_from(Quality),
)
event_st = st.builds(
    Event,
    device_id=ids,
    kind=st.sampled_from(["smoke", "manhole_tilt", "water_no_use"]),
    state=st.sampled_from(EventState),
    severity=st.sampled_from(Severity),
    ts=st.floats(0, 4e9),
    rule=st.text(max_size=10),
    value=values,
    message=st.text(max_size=40),
    attrs=st.dictionaries(st.text(max_size=5), st.one_of(st.integers(), st.text(max_size=5)), max_size=3),
)


def rows_of(records: list[Reading] | list[Event], start: int, step: int) -> list[OutboxRow]:
    lane = Lane.TELEMETRY if records and isinstance(records[0], Reading) else Lane.EVENT
    return [OutboxRow(start + i * step, lane, r.ts, r) for i, r in enumerate(records)]


def _same_value(sent: object, got: object) -> bool:
    if isinstance(sent, float) and not math.isfinite(sent):
        return got is None
    if isinstance(sent, float):
        # Exactly: the shortest text that reads back as the same double (docs/upstream-contract.md).
        return type(got) is float and got == sent and math.copysign(1, got) == math.copysign(1, sent)
    return (sent == got and type(sent) is type(got)) or (isinstance(sent, float) and sent == got)


def test_messages_of_several_rows_stay_within_max_bytes_with_the_longest_ids() -> None:
    """The envelope allowance counts the gateway id and epoch: with a 64-character id and seqs of
    19 digits every message of several rows is within max_bytes (it went 60 bytes over), which the
    uplink relies on for a broker's packet size limit."""
    enc = JsonV1Encoding(topic_prefix="city", gateway_id="g" * 64, epoch="5e3a09c1d2b4e6f7")
    start = 2**63 - 10_000
    records = [Reading("d" * 64, "p" * 20, 1.0 / 3 + i, "kWh", 1_780_000_000.0 + i) for i in range(400)]
    for max_bytes in (1024, 1500, 4096):
        for lane in (Lane.TELEMETRY, Lane.EVENT):
            rows = (
                rows_of(records, start, 1)
                if lane is Lane.TELEMETRY
                else [
                    OutboxRow(
                        start + i,
                        lane,
                        1.0,
                        Event("d" * 64, "smoke", EventState.RAISED, Severity.MAJOR, 1.0 + i),
                    )
                    for i in range(200)
                ]
            )
            batches = enc.rows(lane, rows, prev_seq=start - 1, max_rows=10_000, max_bytes=max_bytes)
            assert all(len(b.message.payload) <= max_bytes for b in batches if b.message is not None)
            assert sum(b.count for b in batches) == len(rows) and len(batches) > 1
        # The drain's path: stored blocks, split where they do not fit.
        body, raw_len = encode_block(records)
        block = decode_block(start, start + len(records) - 1, CODEC_NEUTRAL_Z, body, raw_len)
        batches = enc.telemetry([block], prev_seq=start - 1, max_rows=10_000, max_bytes=max_bytes)
        assert all(len(b.message.payload) <= max_bytes for b in batches if b.message is not None)
        assert sum(b.count for b in batches) == len(records) and len(batches) > 1


@settings(max_examples=150, deadline=None)
@given(
    records=st.lists(reading_st, min_size=1, max_size=60),
    start=st.integers(1, 10**12),
    step=st.integers(1, 5),
    prev=st.integers(0, 10**6),
    max_rows=st.integers(1, 40),
    max_bytes=st.integers(1024, 8192),
)
def test_telemetry_round_trip_and_limits(
    records: list[Reading], start: int, step: int, prev: int, max_rows: int, max_bytes: int
) -> None:
    prev = min(prev, start - 1)
    rows = rows_of(records, start, step)
    batches = ENC.rows(Lane.TELEMETRY, rows, prev_seq=prev, max_rows=max_rows, max_bytes=max_bytes)
    got: list[dict[str, object]] = []
    link = prev
    for b in batches:
        body = json.loads(b.message.payload)
        validate_message("telemetry", body)
        assert b.message.topic == "city/nerve/gw-1/telemetry" and b.message.qos == 1
        assert body["prev_seq"] == link and body["first_seq"] == b.first_seq and body["seq"] == b.last_seq
        assert body["count"] == b.count == len(body["readings"]) <= max_rows
        # One oversized reading still travels alone rather than being lost.
        assert len(b.message.payload) <= max_bytes or b.count == 1
        link = b.last_seq
        got.extend(body["readings"])
    assert [g["seq"] for g in got] == [r.seq for r in rows]
    for row, g in zip(rows, got, strict=True):
        r = row.record
        assert isinstance(r, Reading)
        assert (g["device_id"], g["point"], g["unit"], g["quality"]) == (
            r.device_id,
            r.point,
            r.unit,
            r.quality.value,
        )
        assert g["ts_ms"] == round(r.ts * 1000)
        assert _same_value(r.value, g["value"])


@settings(max_examples=100, deadline=None)
@given(records=st.lists(event_st, min_size=1, max_size=20), start=st.integers(1, 10**9))
def test_events_round_trip(records: list[Event], start: int) -> None:
    rows = rows_of(records, start, 2)
    batches = ENC.rows(Lane.EVENT, rows, prev_seq=start - 1, max_rows=50, max_bytes=1 << 20)
    assert len(batches) == 1
    body = json.loads(batches[0].message.payload)
    validate_message("events", body)
    for row, g in zip(rows, body["events"], strict=True):
        e = row.record
        assert isinstance(e, Event)
        assert (g["id"], g["kind"], g["state"], g["severity_level"], g["message"]) == (
            e.id,
            e.kind,
            e.state.value,
            int(e.severity),
            e.message,
        )
        assert g["severity"] == e.severity.name.lower()
        assert g["attrs"] == e.attrs


def test_status_inventory_result_and_ack_schemas() -> None:
    for online in (True, False):
        m = ENC.status(online=online, seq=7, details={"dropped": {"event": 0, "telemetry": 3}})
        assert m.retain and m.topic == "city/nerve/gw-1/status"
        body = json.loads(m.payload)
        validate_message("status", body)
        assert body["state"] == ("online" if online else "offline")
    inv = ENC.inventory(seq=7, devices=INVENTORY)
    assert inv.retain
    validate_message("inventory", json.loads(inv.payload))
    for res in (
        CommandResult("c1", "read_point", CommandOutcome.OK, result={"value": 1.5}),
        CommandResult(None, None, CommandOutcome.REJECTED, RejectReason.MALFORMED, "not JSON"),
    ):
        validate_message("cmd/result", json.loads(ENC.command_result(res, seq=1).payload))
    ack = ENC.decode_ack(b'{"schema":"citynerve.ack/1","gateway_id":"gw-1","lane":"telemetry","seq":5}')
    assert (ack.lane, ack.seq, ack.epoch) == (Lane.TELEMETRY, 5, None)
    with_epoch = b'{"schema":"citynerve.ack/1","gateway_id":"gw-1","epoch":"ab","lane":"event","seq":5}'
    ack = ENC.decode_ack(with_epoch)
    assert (ack.lane, ack.seq, ack.epoch) == (Lane.EVENT, 5, "ab")
    for bad in (
        b"{}",
        b'{"schema":"citynerve.ack/1","gateway_id":"gw-2","lane":"telemetry","seq":5}',
        b'{"schema":"citynerve.ack/1","gateway_id":"gw-1","lane":"x","seq":5}',
        b'{"schema":"citynerve.ack/1","gateway_id":"gw-1","lane":"event","seq":true}',
        b'{"schema":"citynerve.ack/1","gateway_id":"gw-1","epoch":7,"lane":"event","seq":1}',
    ):
        try:
            ENC.decode_ack(bad)
        except PayloadError:
            continue
        raise AssertionError(f"accepted {bad!r}")


def test_golden_telemetry_payload() -> None:
    """A fixed reading encodes to these exact bytes apart from the message's own timestamp."""
    rows = [
        OutboxRow(42, Lane.TELEMETRY, 1_780_000_000.5, Reading("wm-1", "flow", 1.25, "m3/h", 1_780_000_000.5))
    ]
    (b,) = ENC.rows(Lane.TELEMETRY, rows, prev_seq=40, max_rows=10, max_bytes=4096)
    body = json.loads(b.message.payload)
    body.pop("ts"), body.pop("ts_ms")
    assert body == {
        "schema": "citynerve.telemetry/1",
        "gateway_id": "gw-1",
        "epoch": "5e3a09c1d2b4e6f7",
        "lane": "telemetry",
        "seq": 42,
        "first_seq": 42,
        "prev_seq": 40,
        "count": 1,
        "readings": [
            {
                "seq": 42,
                "device_id": "wm-1",
                "point": "flow",
                "value": 1.25,
                "unit": "m3/h",
                "ts_ms": 1780000000500,
                "quality": "good",
            }
        ],
    }


@settings(max_examples=300, deadline=None, derandomize=True)
@given(st.floats(0, 4e9))
def test_ts_and_ts_ms_are_one_instant(ts: float) -> None:
    ts_ms, text = stamp(ts)
    assert ts_ms == round(ts * 1000)
    assert iso_utc(ts) == text
    parsed = datetime.fromisoformat(text.replace("Z", "+00:00"))
    assert int(parsed.timestamp()) * 1000 + parsed.microsecond // 1000 == ts_ms


def test_ts_rounds_like_ts_ms_in_events_and_envelopes() -> None:
    ts = 1_796_400_000.1239  # truncation would say .123, rounding says .124
    frag = json.loads(
        event_fragment(7, Event("smoke-3f", "smoke", EventState.RAISED, Severity.CRITICAL, ts=ts))
    )
    assert frag["ts_ms"] == 1_796_400_000_124 and frag["ts"].endswith(":00.124Z")
    status = json.loads(ENC.status(online=True, seq=1, details={}).payload)
    assert status["ts"] == datetime.fromtimestamp(status["ts_ms"] / 1000, UTC).isoformat(
        timespec="milliseconds"
    ).replace("+00:00", "Z")
