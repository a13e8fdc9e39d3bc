"""Decode plans: how the points of one planned read are decoded, worked out once per point table.

`decode_point` is the reference: one point from a reply, through the sans-I/O codec
(`codec.decode_registers`). A poll decodes every point of a read at once instead: `decode_plan`
gathers, for the numeric points (16 to 64-bit integers and floats, any word and byte order), the
reply bytes that hold them in big-endian order (one `operator.itemgetter` of byte positions) and
one `struct.Struct` that unpacks them all in one call. Bits, bools and strings keep `decode_point`.
`decode_samples` gives the same samples as `decode_point` point by point
(tests/modbus/test_modbus_tcp_native.py compares them on random maps in every order).

Why: at 1,000 meters every 10 s, decoding point by point through the codec (register tuples to
bytes, word swaps, one struct call per point) was the largest share of the gateway's CPU per
transaction (docs/benchmarks.md, "Gateway footprint").
"""

from __future__ import annotations

import math
import operator
import struct
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

from citynerve.drivers.modbus._channel import Reply
from citynerve.drivers.modbus.codec import CodecError, decode_registers, register_bit
from citynerve.drivers.modbus.config import BIT_TABLES, REGISTERS_OF_TYPE, ModbusPointConfig
from citynerve.gateway.api import Quality, Sample, shortest_float32

_FORMAT: dict[str, tuple[str, int]] = {
    "int16": ("h", 0),
    "uint16": ("H", 0),
    "int32": ("i", 0),
    "uint32": ("I", 0),
    "int64": ("q", 0),
    "uint64": ("Q", 0),
    "float32": ("f", 32),
    "float64": ("d", 64),
}
"""Numeric types a plan unpacks: (struct format character, float bits or 0 for integers)."""

_SHORTEST: dict[float, float] = {}
_SHORTEST_MAX = 4096  # meters repeat their values (totals, set points): remembered, bounded


def decode_point(point: ModbusPointConfig, offset: int, reply: Reply, name: str = "") -> Sample:
    """The raw value of one point from a read reply; Quality.BAD if the device sent no value."""
    name = name or point.name
    if point.table in BIT_TABLES:
        return Sample(name, reply.bits[offset])
    regs = reply.registers[offset : offset + point.register_count]
    if point.type == "bool":
        return Sample(name, register_bit(regs[0], point.bit or 0))
    value = decode_registers(
        regs, point.type, word_order=point.word_order, byte_order=point.byte_order, encoding=point.encoding
    )
    if isinstance(value, float) and not math.isfinite(value):
        # Meters send NaN/inf for "not available"; it must not travel as a number.
        return Sample(name, None, Quality.BAD)
    return Sample(name, value)


@dataclass(frozen=True, slots=True)
class _Slot:
    """One point of a planned read: its value's index in the unpacked numbers (-1: `decode_point`)."""

    name: str
    point: ModbusPointConfig
    offset: int  # registers from the start of the read
    index: int
    float_bits: int


@dataclass(frozen=True, slots=True)
class DecodePlan:
    """The decoding of one read of one point table: `pick` + `numbers` unpack every numeric point."""

    slots: tuple[_Slot, ...]
    pick: Callable[[bytes], tuple[int, ...]] | None  # byte values of the numbers, big-endian each
    numbers: struct.Struct | None


def _byte_positions(offset: int, registers: int, word_order: str, byte_order: str) -> list[int]:
    """Positions in the reply data of a value's bytes, most significant first (the codec's
    `_registers_to_bytes`: registers reversed for word order little, bytes swapped for byte order
    little)."""
    words = range(registers - 1, -1, -1) if word_order == "little" else range(registers)
    inside = (1, 0) if byte_order == "little" else (0, 1)
    return [2 * (offset + w) + b for w in words for b in inside]


def decode_plan(points: Mapping[str, ModbusPointConfig], names: Sequence[str], address: int) -> DecodePlan:
    """The plan of a read of the points `names` of `points` that starts at register `address`."""
    slots: list[_Slot] = []
    positions: list[int] = []
    formats: list[str] = []
    for name in names:
        point = points[name]
        offset = point.address - address
        number = _FORMAT.get(point.type)
        if point.table in BIT_TABLES or number is None:
            slots.append(_Slot(name, point, offset, -1, 0))
            continue
        slots.append(_Slot(name, point, offset, len(formats), number[1]))
        formats.append(number[0])
        size = REGISTERS_OF_TYPE[point.type]
        positions += _byte_positions(offset, size, point.word_order, point.byte_order)
    if not formats:
        return DecodePlan(tuple(slots), None, None)
    numbers = struct.Struct(">" + "".join(formats))
    return DecodePlan(tuple(slots), operator.itemgetter(*positions), numbers)


def decode_samples(plan: DecodePlan, reply: Reply) -> list[Sample]:
    """The raw samples of a read reply; the same values as `decode_point` point by point.

    The reply must hold the whole read (the driver checks the count before)."""
    numbers = plan.numbers.unpack(bytes(plan.pick(reply.data))) if plan.pick and plan.numbers else ()
    samples = []
    for slot in plan.slots:
        index = slot.index
        if index < 0:
            try:
                samples.append(decode_point(slot.point, slot.offset, reply, slot.name))
            except CodecError:
                samples.append(Sample(slot.name, None, Quality.BAD))
            continue
        value = numbers[index]
        if slot.float_bits:
            if not math.isfinite(value):  # meters send NaN/inf for "not available"
                samples.append(Sample(slot.name, None, Quality.BAD))
                continue
            if slot.float_bits == 32 and value:  # +-0.0 are their own shortest form (and equal keys)
                short = _SHORTEST.get(value)
                if short is None:
                    if len(_SHORTEST) >= _SHORTEST_MAX:
                        _SHORTEST.clear()
                    short = _SHORTEST[value] = shortest_float32(value)
                value = short
        samples.append(Sample(slot.name, value))
    return samples
