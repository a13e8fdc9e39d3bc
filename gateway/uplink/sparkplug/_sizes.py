"""Upper bounds of the size of the edge node's data messages: what splits messages within a
broker's packet size limit, and what decides that a record can never fit (dropped as too large)."""

from __future__ import annotations

from citynerve.gateway.api import Event, Reading, Value

DATA_BYTES = 32
"""At most this much of a data message besides its metrics (timestamp, seq)."""
METRIC_BYTES = 128
"""At most this much of a data metric besides its value's text: alias, datatype, timestamp, the
historical flag and the epoch, seq and Quality properties (about 70 bytes measured)."""


def value_bytes(value: Value) -> int:
    """An upper bound of a data metric's encoded size with `value` (numbers take at most 10 bytes)."""
    return METRIC_BYTES + (len(value.encode()) if isinstance(value, str) else 10)


def record_bytes(record: Reading | Event) -> int:
    """An upper bound of the size of a data message carrying `record` alone (an event's cleared
    subjects "*" counted as one, its message as in its kind's folder, where it starts with the
    subject): what decides whether a broker's packet size limit can ever take it."""
    if isinstance(record, Reading):
        return DATA_BYTES + value_bytes(record.value)
    message = record.message
    if record.subject not in ("", "*"):
        message = subject_message(record.subject, record.message)
    fields: tuple[Value, ...] = (True, int(record.severity), record.rule, message, record.id)
    return DATA_BYTES + sum(map(value_bytes, fields))


def subject_message(subject: str, message: str) -> str:
    """The Message of a subject's event in its kind's folder (no room for the subject's own): the
    subject first, so that the host tells which loop-device, meter or door it is."""
    return f"{subject}: {message}" if message else subject
