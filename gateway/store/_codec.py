"""How readings and events are laid out in rows. Readings: columns; events: compact JSON.

A reading's `kind` column packs its quality and how its value is stored, so that every value comes
back exactly as it went in: `kind = quality_code * 4 + value_code`.
  value_code 0: the value as SQLite keeps it (int, float, text, NULL=None)
  value_code 1: bool stored as 0/1 (SQLite has no bool)
  value_code 2: float NaN (SQLite would turn NaN into NULL)
  value_code 3: int beyond 64 bits, stored as decimal text
"""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from typing import Any

from citynerve.gateway.api import Event, EventState, Quality, Reading, Severity, Value
from citynerve.gateway.store._errors import RecordError

QUALITY_CODE: dict[Quality, int] = {Quality.GOOD: 0, Quality.BAD: 1, Quality.STALE: 2, Quality.SUSPECT: 3}
CODE_QUALITY: tuple[Quality, ...] = (Quality.GOOD, Quality.BAD, Quality.STALE, Quality.SUSPECT)

NATIVE, BOOL, NAN, BIGINT = 0, 1, 2, 3
_INT64_MIN, _INT64_MAX = -(2**63), 2**63 - 1


def encode_value(value: Value) -> tuple[int, Value]:
    """(value_code, column value) for a value that is not a plain finite float or small int.

    The hot path handles the common types inline and calls this for the rest.
    """
    if value is None or isinstance(value, str):
        return NATIVE, value
    if isinstance(value, bool):
        return BOOL, int(value)
    if isinstance(value, int):
        if _INT64_MIN <= value <= _INT64_MAX:
            return NATIVE, int(value)
        return BIGINT, str(int(value))
    if isinstance(value, float):
        if math.isnan(value):
            return NAN, None
        return NATIVE, float(value)
    raise RecordError("reading value", f"unsupported type {type(value).__name__}: {value!r}")


# What a record may hold to be stored (and sent): beyond these it is refused at the boundary.
MAX_ID_CHARS = 1024  # device_id, point, unit, kind, rule, event id
MAX_TEXT_CHARS = 8192  # a string value, an event message
MAX_ATTRS_CHARS = 16384  # an event's attrs as JSON
MAX_TS = 253402300799.0  # 9999-12-31T23:59:59Z: beyond it no ISO 8601 time can be written
_ID_FIELDS = {Reading: ("device_id", "point", "unit"), Event: ("device_id", "kind", "rule", "id", "subject")}


def _utf8(text: str) -> bool:
    """Whether `text` can be written as UTF-8 (a lone surrogate, which json.loads makes of
    "\\ud800", cannot: SQLite would refuse it inside the commit)."""
    if text.isascii():
        return True
    try:
        text.encode()
    except UnicodeEncodeError:
        return False
    return True


def unstorable(record: Reading | Event) -> str | None:
    """Why `record` cannot be stored, or None when it can: THE definition of storable.

    The writer refuses (and counts) such a record at its door, and `Outbox.append` refuses it with
    a RecordError before touching the file: one bad record never blocks the others. A reading's
    NaN or infinite value is storable (sent as null, its quality says why); its time is not."""
    ts = getattr(record, "ts", None)
    if isinstance(ts, bool) or not isinstance(ts, int | float) or not 0.0 <= ts <= MAX_TS:
        return f"ts {ts!r} is not a time (finite seconds since 1970, before year 10000)"
    for name in _ID_FIELDS.get(Reading if isinstance(record, Reading) else type(record), ()):
        text = getattr(record, name)
        if not isinstance(text, str) or len(text) > MAX_ID_CHARS or not _utf8(text):
            return f"{name} is not a UTF-8 string of at most {MAX_ID_CHARS} characters"
    value = record.value
    if isinstance(value, str) and (len(value) > MAX_TEXT_CHARS or not _utf8(value)):
        return f"string value not UTF-8 or longer than {MAX_TEXT_CHARS} characters"
    if isinstance(record, Reading):
        if not isinstance(record.quality, Quality):
            return f"quality {record.quality!r} is not a Quality"
        try:
            encode_value(value)
        except RecordError as err:
            return err.reason
        return None
    if value is not None and not isinstance(value, bool | int | float | str):
        return f"event value of type {type(value).__name__} is not a scalar"
    if (
        not isinstance(record.message, str)
        or len(record.message) > MAX_TEXT_CHARS
        or not _utf8(record.message)
    ):
        return f"message is not a UTF-8 string of at most {MAX_TEXT_CHARS} characters"
    if not isinstance(record.attrs, dict):
        return "attrs is not a mapping"
    if not isinstance(record.one_shot, bool):
        return "one_shot is not a bool"
    try:
        state, severity = EventState(record.state), Severity(record.severity)
        del state, severity
        attrs = json.dumps(record.attrs, ensure_ascii=False, allow_nan=True)
    except (TypeError, ValueError, RecursionError) as err:
        return f"attrs, state or severity not storable: {err}"
    if len(attrs) > MAX_ATTRS_CHARS or not _utf8(attrs):
        return f"attrs not UTF-8 or longer than {MAX_ATTRS_CHARS} characters as JSON"
    return None


def check_storable(records: Sequence[Reading] | Sequence[Event]) -> None:
    """Raise RecordError naming the first record that `unstorable` refuses."""
    for r in records:
        why = unstorable(r)
        if why is not None:
            raise RecordError(_what(r), why)


def _what(r: Reading | Event) -> str:
    def short(name: str) -> str:
        return str(getattr(r, name, "?"))[:64]

    if isinstance(r, Event):
        return f"event {short('id')} ({short('kind')} on {short('device_id')})"
    return f"reading {short('device_id')}/{short('point')}"


def decode_value(code: int, raw: Any) -> Value:
    if code == NATIVE:
        return raw  # type: ignore[no-any-return]
    if code == BOOL:
        return bool(raw)
    if code == NAN:
        return math.nan
    if code == BIGINT:
        if not isinstance(raw, str):
            raise ValueError(f"big int stored as {type(raw).__name__}")
        return int(raw)
    raise ValueError(f"unknown value code {code}")


def decode_reading(device_id: str, point: str, unit: str, ts: float, kind: int, raw: Any) -> Reading:
    if not 0 <= kind < 4 * len(CODE_QUALITY):
        raise ValueError(f"unknown reading kind {kind}")
    quality_code, value_code = divmod(kind, 4)
    value = raw if value_code == NATIVE else decode_value(value_code, raw)
    return Reading(device_id, point, value, unit, ts, CODE_QUALITY[quality_code])


def encode_event(event: Event) -> str:
    """Compact JSON array (positional: short rows, fast to parse). `ts` has its own column.

    9 elements, and `subject` and `one_shot` as two more when they are not "" and False: an older
    release (after an update's rollback) reads the 9 of every other event."""
    try:
        fields = [
            event.device_id,
            event.kind,
            event.state.value,
            int(event.severity),
            event.rule,
            event.value,
            event.message,
            event.attrs,
            event.id,
        ]
        if event.subject or event.one_shot:
            fields += [event.subject, event.one_shot]
        return json.dumps(
            fields,
            separators=(",", ":"),
            ensure_ascii=False,
            allow_nan=True,
        )
    except (TypeError, ValueError, AttributeError) as err:
        ident = (getattr(event, name, "?") for name in ("id", "kind", "device_id"))
        what = "event {} ({} on {})".format(*ident)
        raise RecordError(what, f"not storable: {err}") from err


def decode_event(ts: float, body: str) -> Event:
    fields = json.loads(body)
    if not isinstance(fields, list) or len(fields) not in (9, 11):
        raise ValueError("an event row is a list of 9 or 11 fields")
    device_id, kind, state, severity, rule, value, message, attrs, event_id = fields[:9]
    subject, one_shot = fields[9:] or ("", False)
    if not all(isinstance(x, str) for x in (device_id, kind, rule, message, event_id, subject)):
        raise ValueError("event text fields are not strings")
    if not isinstance(one_shot, bool):
        raise ValueError("event one_shot is not a bool")
    if not isinstance(attrs, dict) or isinstance(value, list | dict):
        raise ValueError("event attrs is not an object or value is not a scalar")
    return Event(
        device_id=device_id,
        kind=kind,
        state=EventState(state),
        severity=Severity(severity),
        ts=ts,
        rule=rule,
        value=value,
        message=message,
        attrs=attrs,
        id=event_id,
        subject=subject,
        one_shot=one_shot,
    )
