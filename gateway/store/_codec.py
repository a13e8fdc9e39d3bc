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
from typing import Any

from gateway.api import Event, EventState, Quality, Reading, Severity, Value
from gateway.store._errors import RecordError

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
    """Compact JSON array (positional: short rows, fast to parse). `ts` has its own column."""
    try:
        return json.dumps(
            [
                event.device_id,
                event.kind,
                event.state.value,
                int(event.severity),
                event.rule,
                event.value,
                event.message,
                event.attrs,
                event.id,
            ],
            separators=(",", ":"),
            ensure_ascii=False,
            allow_nan=True,
        )
    except (TypeError, ValueError, AttributeError) as err:
        ident = (getattr(event, name, "?") for name in ("id", "kind", "device_id"))
        what = "event {} ({} on {})".format(*ident)
        raise RecordError(what, f"not storable: {err}") from err


def decode_event(ts: float, body: str) -> Event:
    device_id, kind, state, severity, rule, value, message, attrs, event_id = json.loads(body)
    if not all(isinstance(x, str) for x in (device_id, kind, rule, message, event_id)):
        raise ValueError("event text fields are not strings")
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
    )
