"""JSON v1 encoding: the contract in docs/upstream-contract.md, schemas in schemas/v1/.

Topics, under `<prefix>/<gateway_id>/`: `telemetry`, `events`, `status` (retained), `inventory`
(retained), `cmd` (platform -> gateway), `cmd/result`, `ack` (platform -> gateway, end-to-end mode).
"""

from __future__ import annotations

import json
import logging
import math
import time
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from typing import Any

from citynerve.gateway.api import Event, Reading
from citynerve.gateway.payload import PayloadError, load_json
from citynerve.gateway.store import (
    BlockError,
    Lane,
    OutboxRow,
    TelemetryBlock,
    reading_fragment,
    split_fragments,
)
from citynerve.gateway.uplink.encoding import CommandResult, MqttMessage, PlatformAck, RejectReason, RowBatch
from citynerve.gateway.uplink.errors import CommandRejectedError

log = logging.getLogger(__name__)

SCHEMA_VERSION = 1
SCHEMAS = {
    "telemetry": "citynerve.telemetry/1",
    "events": "citynerve.events/1",
    "status": "citynerve.status/1",
    "inventory": "citynerve.inventory/1",
    "command": "citynerve.command/1",
    "command_result": "citynerve.command_result/1",
    "ack": "citynerve.ack/1",
}
LANE_NAMES = {Lane.EVENT: "event", Lane.TELEMETRY: "telemetry"}
LANES_BY_NAME = {v: k for k, v in LANE_NAMES.items()}
MAX_COMMAND_BYTES = 16 * 1024
MAX_ACK_BYTES = 4 * 1024

_dumps = json.JSONEncoder(ensure_ascii=False, separators=(",", ":"), allow_nan=False).encode


def _ms(ts: float) -> int:
    """The one rounding rule of the contract: whole milliseconds, round(ts * 1000) (half to even),
    as `reading_fragment` stores them."""
    return round(ts * 1000)


def iso_ms(ms: int) -> str:
    """`2026-11-28T12:00:00.123Z`: the ISO text of exactly the millisecond `ms` (so `ts` and
    `ts_ms` are one instant in every message)."""
    sec, milli = divmod(ms, 1000)
    return f"{datetime.fromtimestamp(sec, UTC).strftime('%Y-%m-%dT%H:%M:%S')}.{milli:03d}Z"


def iso_utc(ts: float) -> str:
    """`ts` (seconds) as the ISO text of its `ts_ms`."""
    return iso_ms(_ms(ts))


def stamp(ts: float) -> tuple[int, str]:
    """(`ts_ms`, `ts`) for a wall-clock time: the same instant."""
    ms = _ms(ts)
    return ms, iso_ms(ms)


def _json_value(v: Any) -> Any:
    # NaN and infinities are not JSON; the platform gets null (the reading's quality says why).
    if isinstance(v, float) and not math.isfinite(v):
        return None
    return v


def event_fragment(seq: int, e: Event) -> str:
    return _dumps(
        {
            "seq": seq,
            "id": e.id,
            "device_id": e.device_id,
            "kind": e.kind,
            "state": e.state.value,
            "severity": e.severity.name.lower(),
            "severity_level": int(e.severity),
            "ts_ms": (ms := _ms(e.ts)),
            "ts": iso_ms(ms),
            "rule": e.rule,
            "value": _json_value(e.value),
            "message": e.message,
            "attrs": _jsonable(e.attrs),
        }
    )


def _jsonable(obj: Any) -> Any:
    # attrs come from rules; keep what JSON can carry and stringify the rest rather than fail a batch.
    if isinstance(obj, Mapping):
        return {str(k): _jsonable(v) for k, v in obj.items()}
    if isinstance(obj, list | tuple):
        return [_jsonable(v) for v in obj]
    if isinstance(obj, float):
        return _json_value(obj)
    if obj is None or isinstance(obj, bool | int | str):
        return obj
    return str(obj)


class JsonV1Encoding:
    """The JSON v1 contract. Stateless apart from its topic names."""

    name = "json-v1"

    def __init__(self, *, topic_prefix: str, gateway_id: str, epoch: str = "") -> None:
        self.gateway_id = gateway_id
        self.epoch = epoch  # the outbox's store epoch: (gateway_id, epoch, seq) names a row
        self.base = f"{topic_prefix}/{gateway_id}"
        self.topics = {
            Lane.EVENT: f"{self.base}/events",
            Lane.TELEMETRY: f"{self.base}/telemetry",
        }
        self.status_topic = f"{self.base}/status"
        self.inventory_topic = f"{self.base}/inventory"
        self.result_topic = f"{self.base}/cmd/result"
        self._gw = f'{_dumps(gateway_id)},"epoch":{_dumps(epoch)}'

    @property
    def command_topic(self) -> str:
        return f"{self.base}/cmd"

    @property
    def ack_topic(self) -> str:
        return f"{self.base}/ack"

    def _envelope(self, kind: str, seq: int, now: float | None = None) -> dict[str, Any]:
        ts_ms, ts = stamp(time.time() if now is None else now)
        return {
            "schema": SCHEMAS[kind],
            "gateway_id": self.gateway_id,
            "epoch": self.epoch,
            "seq": seq,
            "ts": ts,
            "ts_ms": ts_ms,
        }

    def status(self, *, online: bool, seq: int, details: Mapping[str, Any]) -> MqttMessage:
        body = self._envelope("status", seq)
        body["state"] = "online" if online else "offline"
        body.update({k: _jsonable(v) for k, v in details.items() if k not in body})
        return MqttMessage(self.status_topic, _dumps(body).encode(), qos=1, retain=True)

    def inventory(self, *, seq: int, devices: Sequence[Mapping[str, Any]]) -> MqttMessage:
        body = self._envelope("inventory", seq)
        body["devices"] = [_jsonable(d) for d in devices]
        return MqttMessage(self.inventory_topic, _dumps(body).encode(), qos=1, retain=True)

    def command_result(self, result: CommandResult, *, seq: int) -> MqttMessage:
        body = self._envelope("command_result", seq)
        body.update(
            {
                "command_id": result.command_id,
                "action": result.action,
                "outcome": result.outcome.value,
                "reason": result.reason.value if result.reason else None,
                "detail": result.detail,
                "result": _jsonable(result.result) if result.result is not None else None,
            }
        )
        return MqttMessage(self.result_topic, _dumps(body).encode(), qos=1, retain=False)

    def rows(
        self, lane: Lane, rows: Sequence[OutboxRow], *, prev_seq: int, max_rows: int, max_bytes: int
    ) -> list[RowBatch]:
        topic = self.topics[lane]
        key = "readings" if lane is Lane.TELEMETRY else "events"
        kind = "telemetry" if lane is Lane.TELEMETRY else "events"
        lane_name = LANE_NAMES[lane]
        out: list[RowBatch] = []
        frags: list[str] = []
        first = last = 0
        size = 0
        # Envelope size is bounded (~220 bytes); keep a margin so a message never exceeds max_bytes.
        budget = max_bytes - 256
        for row in rows:
            rec = row.record
            frag = (
                reading_fragment(row.seq, rec) if isinstance(rec, Reading) else event_fragment(row.seq, rec)
            )
            flen = len(frag.encode()) if not frag.isascii() else len(frag)
            if frags and (len(frags) >= max_rows or size + flen + 1 > budget):
                out.append(self._batch(kind, key, lane, lane_name, topic, frags, first, last, prev_seq))
                prev_seq = last
                frags, size = [], 0
            if not frags:
                first = row.seq
            frags.append(frag)
            size += flen + 1
            last = row.seq
        if frags:
            out.append(self._batch(kind, key, lane, lane_name, topic, frags, first, last, prev_seq))
        return out

    def _batch(
        self,
        kind: str,
        key: str,
        lane: Lane,
        lane_name: str,
        topic: str,
        frags: list[str],
        first: int,
        last: int,
        prev_seq: int,
    ) -> RowBatch:
        ts_ms, ts = stamp(time.time())
        # Hand-built envelope: json.dumps of the fragments again would double the encoding cost.
        head = (
            f'{{"schema":"{SCHEMAS[kind]}","gateway_id":{self._gw},"lane":"{lane_name}","seq":{last},'
            f'"first_seq":{first},"prev_seq":{prev_seq},"count":{len(frags)},'
            f'"ts":"{ts}","ts_ms":{ts_ms},"{key}":['
        )
        payload = (head + ",".join(frags) + "]}").encode()
        return RowBatch(MqttMessage(topic, payload, qos=1), lane, first, last, len(frags))

    def telemetry_from_blocks(
        self, blocks: Sequence[TelemetryBlock], *, prev_seq: int, max_rows: int, max_bytes: int
    ) -> list[RowBatch]:
        """`TelemetryBlockEncoding`: stored fragments wrapped into messages; a block goes whole into
        a message when it fits, else it is split between messages."""
        out: list[RowBatch] = []
        parts: list[bytes | memoryview] = []
        count = size = 0
        first = last = 0
        budget = max_bytes - 256  # the envelope is bounded (~220 bytes)
        # one build time for the messages of one read (they are built together)
        ts_ms, ts = stamp(time.time())
        time_part = f'"ts":"{ts}","ts_ms":{ts_ms},"readings":['.encode()
        for block in blocks:
            pieces: Sequence[bytes | memoryview] = (block.fragments,)
            if count + block.count > max_rows or size + len(block.fragments) + 1 > budget:
                if parts and block.count <= max_rows and len(block.fragments) + 1 <= budget:
                    out.append(self._telemetry(parts, first, last, count, prev_seq, time_part))
                    prev_seq, parts, count, size = last, [], 0, 0
                else:
                    try:
                        pieces = split_fragments(block.fragments, block.count)
                    except BlockError as err:  # damaged storage: the platform sees a gap
                        log.error(
                            "uplink: telemetry seq %d..%d not sent: %s", block.first_seq, block.last_seq, err
                        )
                        continue
            seq = block.first_seq
            for piece in pieces:
                n = block.count if len(pieces) == 1 else 1
                if parts and (count + n > max_rows or size + len(piece) + 1 > budget):
                    out.append(self._telemetry(parts, first, last, count, prev_seq, time_part))
                    prev_seq, parts, count, size = last, [], 0, 0
                if not parts:
                    first = seq
                parts.append(piece)
                count += n
                size += len(piece) + 1
                seq += n
                last = seq - 1
        if parts:
            out.append(self._telemetry(parts, first, last, count, prev_seq, time_part))
        return out

    def _telemetry(
        self,
        parts: list[bytes | memoryview],
        first: int,
        last: int,
        count: int,
        prev_seq: int,
        time_part: bytes,
    ) -> RowBatch:
        head = (
            f'{{"schema":"{SCHEMAS["telemetry"]}","gateway_id":{self._gw},"lane":"telemetry",'
            f'"seq":{last},"first_seq":{first},"prev_seq":{prev_seq},"count":{count},'
        ).encode()
        # One copy of the fragments, straight into the payload (a message is usually one block).
        body = parts[0] if len(parts) == 1 else b",".join(parts)
        payload = b"".join((head, time_part, body, b"]}"))
        msg = MqttMessage(self.topics[Lane.TELEMETRY], payload, qos=1)
        return RowBatch(msg, Lane.TELEMETRY, first, last, count)

    def decode_command(self, payload: bytes) -> dict[str, Any]:
        try:
            obj = load_json(payload, where="uplink.cmd", max_bytes=MAX_COMMAND_BYTES)
        except PayloadError as err:
            raise CommandRejectedError(RejectReason.MALFORMED, err.reason) from err
        if not isinstance(obj, dict):
            raise CommandRejectedError(RejectReason.MALFORMED, "not a JSON object")
        cid = obj.get("id") if isinstance(obj.get("id"), str) else None
        if obj.get("schema") != SCHEMAS["command"]:
            raise CommandRejectedError(RejectReason.MALFORMED, f"schema must be {SCHEMAS['command']}", cid)
        return obj

    def decode_ack(self, payload: bytes) -> PlatformAck:
        obj = load_json(payload, where="uplink.ack", max_bytes=MAX_ACK_BYTES)
        if not isinstance(obj, dict) or obj.get("schema") != SCHEMAS["ack"]:
            raise PayloadError("uplink.ack", "not a citynerve.ack/1 message")
        lane = LANES_BY_NAME.get(obj.get("lane"))  # type: ignore[arg-type]
        seq = obj.get("seq")
        gw = obj.get("gateway_id")
        epoch = obj.get("epoch")
        if (
            lane is None
            or not isinstance(seq, int)
            or isinstance(seq, bool)
            or seq < 0
            or gw != self.gateway_id
            or not isinstance(epoch, str | None)
        ):
            raise PayloadError(
                "uplink.ack",
                "ack needs gateway_id (ours), lane (event|telemetry), seq >= 0, epoch a string",
            )
        return PlatformAck(gw, lane, seq, epoch, body=obj)
