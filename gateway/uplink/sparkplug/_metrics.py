"""Sparkplug B datatypes, how point types map onto them, and how a value goes into a metric.

Only types on which the reference decoders agree are sent. Eclipse Tahu's JavaScript codec reads
Int8/Int16 with sign extension to 32 bits and UInt32 from `long_value`, while `pysparkplug` (and the
3.0 text) keep Int8/Int16 as their own width and UInt32 in `int_value`: a negative int16 or any
uint32 would decode differently on two hosts. So int8/int16 go out as Int32 and uint32 as UInt64
(widened, exact), which every decoder reads alike.
"""

from __future__ import annotations

import enum
import math
from dataclasses import dataclass, field
from typing import Any

from citynerve.gateway.api import Value


class DataType(enum.IntEnum):
    """Sparkplug B 3.0 metric datatypes (the part the gateway uses)."""

    INT32 = 3
    INT64 = 4
    UINT16 = 6
    UINT64 = 8
    FLOAT = 9
    DOUBLE = 10
    BOOLEAN = 11
    STRING = 12


_POINT_TYPES: dict[str, DataType] = {
    "bool": DataType.BOOLEAN,
    "int8": DataType.INT32,
    "int16": DataType.INT32,
    "int32": DataType.INT32,
    "int64": DataType.INT64,
    "uint8": DataType.UINT16,
    "uint16": DataType.UINT16,
    "uint32": DataType.UINT64,
    "uint64": DataType.UINT64,
    "float32": DataType.FLOAT,
    "float64": DataType.DOUBLE,
    "str": DataType.STRING,
    "string": DataType.STRING,
}

_INT_RANGES: dict[DataType, tuple[int, int]] = {
    DataType.INT32: (-(2**31), 2**31 - 1),
    DataType.INT64: (-(2**63), 2**63 - 1),
    DataType.UINT16: (0, 2**16 - 1),
    DataType.UINT64: (0, 2**64 - 1),
}


def datatype_for_point(point_type: str, *, scaled: bool = False) -> DataType:
    """The metric datatype of a point of config type `point_type` (float32, int16, bool, str...).

    A scaled or offset integer point reports engineering values with decimals: Double. An unknown
    type is Double for numbers, the safe choice."""
    dt = _POINT_TYPES.get(point_type, DataType.DOUBLE)
    if scaled and dt in _INT_RANGES:
        return DataType.DOUBLE
    return dt


def datatype_of_value(value: Value) -> DataType:
    """The datatype of a metric first seen with `value` (a point that is not in the config)."""
    if isinstance(value, bool):
        return DataType.BOOLEAN
    if isinstance(value, int):
        return DataType.INT64
    if isinstance(value, str):
        return DataType.STRING
    return DataType.DOUBLE


class Quality(enum.IntEnum):
    """The `Quality` metric property (the codes Sparkplug hosts such as Ignition use)."""

    BAD = 0
    UNCERTAIN = 64
    GOOD = 192
    STALE = 500


@dataclass(frozen=True, slots=True)
class PointSpec:
    """One point of a device, as a metric: its name, engineering unit and datatype."""

    name: str
    datatype: DataType
    unit: str = ""


@dataclass(frozen=True, slots=True)
class DeviceSpec:
    """One device of the edge node: its points and the alarm kinds its rules may raise (declared in
    its DBIRTH so that an alarm needs no rebirth; an unforeseen kind causes one)."""

    device_id: str
    points: tuple[PointSpec, ...] = ()
    alarm_kinds: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class MetricValue:
    """A value ready for a metric: the protobuf field it goes in and what it holds (None: null)."""

    field: str | None
    value: Any = None


def metric_value(datatype: DataType, value: Value) -> MetricValue:
    """`value` in the field `datatype` uses; signed integers as two's complement of the field width.
    A value the datatype cannot hold exactly (2.5 for an Int32, NaN for a Boolean) is null."""
    if value is None:
        return MetricValue(None)
    if datatype is DataType.BOOLEAN:
        if isinstance(value, bool) or (isinstance(value, int | float) and value in (0, 1)):
            return MetricValue("boolean_value", bool(value))
        return MetricValue(None)
    if datatype is DataType.STRING:
        return MetricValue("string_value", value if isinstance(value, str) else str(value))
    if datatype in (DataType.FLOAT, DataType.DOUBLE):
        if isinstance(value, str):
            return MetricValue(None)
        field_ = "float_value" if datatype is DataType.FLOAT else "double_value"
        return MetricValue(field_, float(value))
    lo, hi = _INT_RANGES[datatype]
    inexact = isinstance(value, float) and not (math.isfinite(value) and value.is_integer())
    if isinstance(value, str) or inexact:
        return MetricValue(None)
    n = int(value)
    if not lo <= n <= hi:
        return MetricValue(None)
    if datatype is DataType.INT32:
        return MetricValue("int_value", n & 0xFFFFFFFF)
    if datatype is DataType.INT64:
        return MetricValue("long_value", n & 0xFFFFFFFFFFFFFFFF)
    return MetricValue("int_value" if datatype is DataType.UINT16 else "long_value", n)


@dataclass(slots=True)
class MetricState:
    """A declared metric of the edge node: alias, datatype, present value (for births), and the
    outbox identity of the record that gave it (`epoch`, `seq`)."""

    name: str
    alias: int
    datatype: DataType
    unit: str = ""
    value: Value = None
    ts_ms: int | None = None
    epoch: str = ""
    seq: int = -1
    properties: dict[str, tuple[DataType, Value]] = field(default_factory=dict)
