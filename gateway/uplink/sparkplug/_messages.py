"""What the edge node puts on the wire: message types, the records it is fed, and how a birth's
and a data message's metrics are built into a Sparkplug B payload."""

from __future__ import annotations

import enum
from dataclasses import dataclass
from typing import Any

from citynerve.gateway.api import Event, PermanentError, Quality, Reading, Value
from citynerve.gateway.uplink.sparkplug._metrics import DataType, MetricState, metric_value
from citynerve.gateway.uplink.sparkplug._metrics import Quality as SpQuality

_QUALITY = {Quality.BAD: SpQuality.BAD, Quality.STALE: SpQuality.STALE, Quality.SUSPECT: SpQuality.UNCERTAIN}


class Verb(enum.StrEnum):
    """Sparkplug B message types (the topic's third level)."""

    NBIRTH = "NBIRTH"
    NDEATH = "NDEATH"
    DBIRTH = "DBIRTH"
    DDEATH = "DDEATH"
    NDATA = "NDATA"
    DDATA = "DDATA"
    NCMD = "NCMD"
    DCMD = "DCMD"


Entry = tuple[MetricState, Value, "StoredRecord", bool, int]
"""One metric of a data message: the metric, its value, its record, historical or not, and the
record's `prev_seq` (the seq of the record of its lane sent before it)."""


@dataclass(frozen=True, slots=True)
class Chain:
    """Per lane, the outbox seq of the last record a destination was sent in `epoch`: the next
    record's `prev_seq`, as JSON v1's chain (docs/upstream-contract.md, "Gaps")."""

    epoch: str = ""
    event: int = 0
    telemetry: int = 0


class SparkplugNameError(PermanentError):
    """A group, edge node or device id that cannot be a Sparkplug topic level."""

    def __init__(self, what: str, name: str) -> None:
        self.what = what
        self.name = name
        super().__init__(f"sparkplug {what} {name!r}: must be non-empty, without '/', '+' or '#'")


class SessionStateError(PermanentError):
    """Data asked for outside a session (before `start_session` and `birth`): a caller's bug."""


@dataclass(frozen=True, slots=True)
class StoredRecord:
    """An outbox record with its identity: `epoch` and `seq` travel as metric properties (with
    `prev_seq`, the edge node's chain), so that a platform tells a gap from a duplicate and from a
    skip. `replayed`: from the backlog (sent as historical)."""

    epoch: str
    seq: int
    record: Reading | Event
    replayed: bool = False
    state_only: bool = False
    """A `device_offline` raise or clear that tells the device's state alone (DDEATH / DBIRTH),
    without its alarm metrics: the gateway's offline set, for a destination whose filter leaves
    those events out (no outbox row; its seq is 0)."""


@dataclass(frozen=True, slots=True)
class SparkplugMessage:
    """One MQTT publish of the edge node."""

    topic: str
    payload: bytes
    qos: int
    retain: bool
    verb: Verb
    device_id: str | None = None
    seq: int | None = None


def check_name(what: str, name: str) -> str:
    if not name or any(c in name for c in "/+#"):
        raise SparkplugNameError(what, name)
    return name


def ms(ts: float) -> int:
    """Seconds since the epoch (a record's ts) as Sparkplug's milliseconds."""
    return round(ts * 1000)


def birth_metric(payload: Any, m: MetricState, now_ms: int) -> None:
    """`m` as a birth metric of `payload`: name, alias, datatype, its last value (null when none)."""
    metric = payload.metrics.add(
        name=m.name,
        alias=m.alias,
        datatype=m.datatype,
        timestamp=m.ts_ms if m.ts_ms is not None else now_ms,
    )
    mv = metric_value(m.datatype, m.value)
    if mv.field is None:
        metric.is_null = True
    else:
        setattr(metric, mv.field, mv.value)
    if m.unit:
        metric.properties.keys.append("engUnit")
        metric.properties.values.add(type=DataType.STRING, string_value=m.unit)


def add_data_metrics(payload: Any, entries: list[Entry]) -> None:
    """`entries` as data metrics of `payload`: by alias, with the record's identity as properties."""
    add = payload.metrics.add  # metrics built in place: twice as fast as building then copying
    for m, value, stored, historical, prev_seq in entries:
        rec = stored.record
        mv = metric_value(m.datatype, value)
        if mv.field is None:
            metric = add(alias=m.alias, datatype=m.datatype, timestamp=ms(rec.ts), is_null=True)
        else:
            metric = add(alias=m.alias, datatype=m.datatype, timestamp=ms(rec.ts), **{mv.field: mv.value})
        if historical:
            metric.is_historical = True
        props = metric.properties
        props.keys.extend(("epoch", "seq", "prev_seq"))
        props.values.add(type=DataType.STRING, string_value=stored.epoch)
        props.values.add(type=DataType.UINT64, long_value=stored.seq)
        props.values.add(type=DataType.UINT64, long_value=prev_seq)
        quality = _QUALITY.get(rec.quality) if isinstance(rec, Reading) else None
        if quality is not None:
            props.keys.append("Quality")
            props.values.add(type=DataType.INT32, int_value=int(quality))
