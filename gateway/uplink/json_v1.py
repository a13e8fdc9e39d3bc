"""JSON v1 encoding: the contract in docs/upstream-contract.md, schemas in schemas/v1/.

Topics, under `<prefix>/<gateway_id>/`: `telemetry`, `events`, `status` (retained), `inventory`
(retained), `cmd` (platform -> gateway), `cmd/result`, `ack` (platform -> gateway, end-to-end mode).
"""

from __future__ import annotations

import io
import json
import logging
import math
import operator
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from datetime import UTC, datetime
from itertools import repeat
from typing import Any

from citynerve.gateway.api import Event, Reading
from citynerve.gateway.payload import PayloadError, load_json
from citynerve.gateway.store import QUALITIES, Lane, OutboxRow, ReadingBlock, ReadingMark
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


def value_json(v: object) -> str:
    """A reading value as JSON: the shortest text that reads back as the same float, ints exact
    (beyond 64 bits too), NaN and infinities as null (JSON has neither; the quality says why)."""
    t = type(v)
    if t is float:
        return repr(v) if math.isfinite(v) else "null"  # type: ignore[arg-type]
    if t is int:
        return repr(v)
    if v is None:
        return "null"
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, float):  # float subclasses
        return repr(float(v)) if math.isfinite(v) else "null"
    if isinstance(v, int):  # IntEnum and other int subclasses
        return repr(int(v))
    if isinstance(v, str):
        return _dumps(str(v))
    raise TypeError(f"unsupported reading value type {type(v).__name__}: {v!r}")


_QUALITY_TAILS = [f',"quality":"{q.value}"' for q in QUALITIES]


_CACHE_MAX = 50_000
_device_parts: dict[str, str] = {}
_point_parts: dict[tuple[str, str], tuple[str, str]] = {}


def _series_parts(device_id: str, point: str, unit: str) -> tuple[str, str]:
    # The JSON around a reading's value: the device's part and the point's, each built once. (Held
    # per device and per point, not per series: 1,000 meters x 11 points held 5 MB as series.)
    dev = _device_parts.get(device_id)
    if dev is None:
        if len(_device_parts) >= _CACHE_MAX:
            _device_parts.clear()
        dev = _device_parts[device_id] = f',"device_id":{_dumps(device_id)},"point":'
    pt = _point_parts.get((point, unit))
    if pt is None:
        if len(_point_parts) >= _CACHE_MAX:
            _point_parts.clear()
        pt = _point_parts[(point, unit)] = (f'{_dumps(point)},"value":', f',"unit":{_dumps(unit)},"ts_ms":')
    return dev + pt[0], pt[1]


def _mark_json(mark: ReadingMark) -> str:
    mono = round(mark.capture_mono, 3)
    return f',"clock_unsynced":true,"capture_mono":{mono!r},"boot_id":{_dumps(mark.boot_id)}'


def reading_fragment(seq: int, r: Reading, mark: ReadingMark | None = None) -> str:
    """One reading as compact JSON: {"seq","device_id","point","value","unit","ts_ms","quality"},
    and for a reading stamped before the clock was synchronised `clock_unsynced`, `capture_mono`
    and `boot_id` (docs/upstream-contract.md). `ts_ms` is round(ts * 1000), half to even."""
    head, mid = _series_parts(r.device_id, r.point, r.unit)
    tail = _QUALITY_TAILS[QUALITIES.index(r.quality)]
    extra = _mark_json(mark) if mark is not None else ""
    return f'{{"seq":{seq}{head}{value_json(r.value)}{mid}{_ms(r.ts)}{tail}{extra}}}'


def block_fragments(block: ReadingBlock) -> list[str]:
    """The JSON v1 fragment of each reading of `block`, in seq order. The drain's hot path: the
    text around the values is built once per device and point, and the columns are turned into text by
    C-level passes (`map`) where every value is a plain number."""
    parts = [_series_parts(*s) for s in block.series]
    values = block.values
    kinds = set(map(type, values))
    if kinds <= _NUMBERS and (float not in kinds or all(map(math.isfinite, values))):
        texts: Iterable[str] = map(repr, values)
    else:
        texts = [value_json(v) for v in values]
    out = [
        f'{{"seq":{seq}{head}{text}{mid}{ms}{tail}}}'
        for seq, (head, mid), text, ms, tail in zip(
            range(block.first_seq, block.last_seq + 1),
            map(parts.__getitem__, block.sidx),
            texts,
            map(round, map(operator.mul, block.ts, repeat(1000))),
            map(_QUALITY_TAILS.__getitem__, block.quality),
            strict=True,
        )
    ]
    for k, mark in block.marks.items():
        out[k] = f"{out[k][:-1]}{_mark_json(mark)}}}"
    return out


_NUMBERS = {int, float}


def _utf8_len(text: str) -> int:
    return len(text) if text.isascii() else len(text.encode())


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


# A list or mapping whose JSON is at least this long is rendered once per object (the devices of
# one profile share their point list); shorter ones (tags, location) are rendered where they stand.
_MEMO_MIN = 256


def _inventory_device(
    device: Mapping[str, Any], memo: dict[int, tuple[object, bytes]], write: Callable[[bytes], object]
) -> None:
    """Write the JSON of one inventory device (what `_dumps(_jsonable(device))` gives). `memo` keeps
    each object it renders alive with its bytes, so an id is never reused for another object while
    the devices come one at a time."""
    text: list[str] = []
    for k, v in device.items():
        text.append(f"{',' if text else '{'}{_dumps(str(k))}:")
        if isinstance(v, Mapping | list | tuple):
            hit = memo.get(id(v))
            if hit is None:
                rendered = _dumps(_jsonable(v)).encode()
                if len(rendered) < _MEMO_MIN:
                    text.append(rendered.decode())
                    continue
                hit = memo[id(v)] = (v, rendered)
            write("".join(text).encode())
            write(hit[1])
            text = [""]  # the next key is preceded by a comma
        else:
            text.append(_dumps(_jsonable(v)))
    write(("".join(text) + "}" if text else "{}").encode())


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
        # A message's envelope: at most 240 bytes (seqs of 19 digits) besides gateway_id and epoch
        # (a 64-character gateway id made 320 against the 256 allowed for it before: the message
        # went over max_bytes, and over a broker's packet size limit when derived from it).
        self._envelope_bytes = 256 + len(self._gw.encode())

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

    def inventory(self, *, seq: int, devices: Iterable[Mapping[str, Any]]) -> MqttMessage:
        # The document (1.4 MB at 1,000 meters) is written device by device into one buffer, whose
        # bytes become the payload without a copy: it never exists as converted dicts, text and
        # bytes at once (5.2 MB traced at its peak once, then 1.6 MB with the pieces joined), and
        # with an iterator of devices their dicts never exist all at once either.
        envelope = _dumps(self._envelope("inventory", seq))
        buf = io.BytesIO()
        buf.write(f'{envelope[:-1]},"devices":['.encode())
        memo: dict[int, tuple[object, bytes]] = {}
        for i, d in enumerate(devices):
            if i:
                buf.write(b",")
            _inventory_device(d, memo, buf.write)
        buf.write(b"]}")
        return MqttMessage(self.inventory_topic, buf.getvalue(), qos=1, retain=True)

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
        budget = max_bytes - self._envelope_bytes  # so a message of several rows never exceeds max_bytes
        for row in rows:
            rec = row.record
            frag = (
                reading_fragment(row.seq, rec, row.mark)
                if isinstance(rec, Reading)
                else event_fragment(row.seq, rec)
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

    def telemetry(
        self, blocks: Sequence[ReadingBlock], *, prev_seq: int, max_rows: int, max_bytes: int
    ) -> list[RowBatch]:
        """Telemetry messages carrying every reading of `blocks` in seq order, each within
        max_rows readings and max_bytes (a single reading larger than that goes alone). A block
        that fits goes whole into a message (usually it is one: the outbox's blocks hold as many
        readings as a message), else its readings are split between messages."""
        out: list[RowBatch] = []
        texts: list[str] = []
        count = size = 0
        first = last = 0
        budget = max_bytes - self._envelope_bytes
        ts_ms, ts = stamp(time.time())  # one build time for the messages built together
        time_part = f'"ts":"{ts}","ts_ms":{ts_ms},"readings":['

        def add(text: str, tlen: int, n: int, seq: int) -> None:
            nonlocal count, size, first, last, prev_seq, texts
            if texts and (count + n > max_rows or size + tlen + 1 > budget):
                out.append(self._telemetry(texts, first, last, count, prev_seq, time_part))
                prev_seq, texts, count, size = last, [], 0, 0
            if not texts:
                first = seq
            texts.append(text)
            count += n
            size += tlen + 1
            last = seq + n - 1

        for block in blocks:
            frags = block_fragments(block)
            whole = ",".join(frags)
            wlen = _utf8_len(whole)
            if block.count <= max_rows and wlen < budget:
                add(whole, wlen, block.count, block.first_seq)
            else:
                for k, frag in enumerate(frags):
                    add(frag, _utf8_len(frag), 1, block.first_seq + k)
        if texts:
            out.append(self._telemetry(texts, first, last, count, prev_seq, time_part))
        return out

    def _telemetry(
        self, texts: list[str], first: int, last: int, count: int, prev_seq: int, time_part: str
    ) -> RowBatch:
        head = (
            f'{{"schema":"{SCHEMAS["telemetry"]}","gateway_id":{self._gw},"lane":"telemetry",'
            f'"seq":{last},"first_seq":{first},"prev_seq":{prev_seq},"count":{count},'
        )
        payload = "".join((head, time_part, ",".join(texts), "]}")).encode()
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
