"""Codec: every data type in every word/byte order, against pymodbus' own converters as an oracle."""

from __future__ import annotations

import math
import struct
from typing import Any, cast

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from pymodbus.client.mixin import ModbusClientMixin

from citynerve.drivers.modbus.codec import (
    ORDERS,
    TYPES,
    CodecError,
    decode_registers,
    encode_value,
    register_bit,
)

DT = ModbusClientMixin.DATATYPE
ORACLE_TYPE = {
    "int16": DT.INT16,
    "uint16": DT.UINT16,
    "int32": DT.INT32,
    "uint32": DT.UINT32,
    "int64": DT.INT64,
    "uint64": DT.UINT64,
    "float32": DT.FLOAT32,
    "float64": DT.FLOAT64,
}
orders = st.sampled_from(sorted(ORDERS))


def ints_for(type_: str) -> st.SearchStrategy[int]:
    info = TYPES[type_]
    assert info.minimum is not None and info.maximum is not None
    return st.integers(info.minimum, info.maximum)


def swap_bytes(regs: list[int]) -> list[int]:
    return [((r & 0xFF) << 8) | (r >> 8) for r in regs]


@pytest.mark.parametrize("type_", ["int16", "uint16", "int32", "uint32", "int64", "uint64"])
@given(data=st.data(), order=orders)
def test_integers_round_trip_and_match_pymodbus(type_: str, data: st.DataObject, order: str) -> None:
    value = data.draw(ints_for(type_))
    word_order, byte_order = ORDERS[order]
    regs = encode_value(value, type_, word_order=word_order, byte_order=byte_order)
    assert len(regs) == TYPES[type_].registers
    assert decode_registers(regs, type_, word_order=word_order, byte_order=byte_order) == value
    oracle = ModbusClientMixin.convert_to_registers(value, ORACLE_TYPE[type_], cast(Any, word_order))
    if byte_order == "little":
        oracle = swap_bytes(oracle)
    assert list(regs) == oracle
    plain = list(regs) if byte_order == "big" else swap_bytes(list(regs))
    assert ModbusClientMixin.convert_from_registers(plain, ORACLE_TYPE[type_], cast(Any, word_order)) == value


@pytest.mark.parametrize("type_", ["float32", "float64"])
@given(data=st.data(), order=orders)
def test_floats_round_trip_and_match_pymodbus(type_: str, data: st.DataObject, order: str) -> None:
    width = 32 if type_ == "float32" else 64
    value = data.draw(st.floats(width=cast(Any, width), allow_nan=False))
    word_order, byte_order = ORDERS[order]
    regs = encode_value(value, type_, word_order=word_order, byte_order=byte_order)
    back = decode_registers(regs, type_, word_order=word_order, byte_order=byte_order)
    fmt = "<f" if type_ == "float32" else "<d"
    assert isinstance(back, float) and struct.pack(fmt, back) == struct.pack(fmt, value)
    oracle = ModbusClientMixin.convert_to_registers(value, ORACLE_TYPE[type_], cast(Any, word_order))
    if byte_order == "little":
        oracle = swap_bytes(oracle)
    assert list(regs) == oracle


@given(st.floats(width=32, allow_nan=True, allow_infinity=True), orders)
def test_nan_and_infinity_survive(value: float, order: str) -> None:
    word_order, byte_order = ORDERS[order]
    regs = encode_value(value, "float32", word_order=word_order, byte_order=byte_order)
    back = decode_registers(regs, "float32", word_order=word_order, byte_order=byte_order)
    assert isinstance(back, float)
    assert (math.isnan(back) and math.isnan(value)) or struct.pack("<f", back) == struct.pack("<f", value)


@given(st.floats(width=32, allow_nan=False, allow_infinity=False), orders)
def test_float32_decodes_to_the_shortest_decimal_of_the_same_float32(value: float, order: str) -> None:
    word_order, byte_order = ORDERS[order]
    regs = encode_value(value, "float32", word_order=word_order, byte_order=byte_order)
    back = decode_registers(regs, "float32", word_order=word_order, byte_order=byte_order)
    assert isinstance(back, float) and struct.pack("<f", back) == struct.pack("<f", value)
    digits = len(repr(back).split("e")[0].replace("-", "").replace(".", "").strip("0"))
    if digits > 1:  # one digit fewer would name another float32
        shorter = float(f"{back:.{digits - 1}g}")
        assert (
            not math.isfinite(shorter)
            or abs(shorter) > 3.4028235e38
            or (struct.pack("<f", shorter) != struct.pack("<f", value))
        )


@pytest.mark.parametrize(
    ("text", "expected"), [("230.1", "230.1"), ("0.1", "0.1"), ("49.95", "49.95"), ("-0.001", "-0.001")]
)
def test_float32_register_reads_as_the_number_written(text: str, expected: str) -> None:
    regs = encode_value(float(text), "float32")
    assert struct.unpack(">f", struct.pack(">f", float(text)))[0] != float(text)  # widening adds noise
    assert repr(decode_registers(regs, "float32")) == expected
    assert repr(decode_registers(encode_value(float(text), "float64"), "float64")) == expected


# Published layouts of 123456789.0 as float32 (0x4CEB79A3) and of 0x11223344 as int32.
@pytest.mark.parametrize(
    ("order", "float_regs", "int_regs"),
    [
        ("ABCD", (0x4CEB, 0x79A3), (0x1122, 0x3344)),
        ("CDAB", (0x79A3, 0x4CEB), (0x3344, 0x1122)),
        ("BADC", (0xEB4C, 0xA379), (0x2211, 0x4433)),
        ("DCBA", (0xA379, 0xEB4C), (0x4433, 0x2211)),
    ],
)
def test_vendor_orders_golden(order: str, float_regs: tuple[int, int], int_regs: tuple[int, int]) -> None:
    word_order, byte_order = ORDERS[order]
    assert struct.pack(">f", 123456789.0).hex() == "4ceb79a3"
    assert encode_value(123456789.0, "float32", word_order=word_order, byte_order=byte_order) == float_regs
    assert (
        decode_registers(float_regs, "float32", word_order=word_order, byte_order=byte_order) == 123456790.0
    )  # the shortest decimal naming the nearest float32 (123456792)
    assert encode_value(0x11223344, "uint32", word_order=word_order, byte_order=byte_order) == int_regs


def test_int64_word_order_reverses_all_four_registers() -> None:
    regs = encode_value(0x0102030405060708, "int64", word_order="little")
    assert regs == (0x0708, 0x0506, 0x0304, 0x0102)


@given(st.text(alphabet=st.characters(min_codepoint=33, max_codepoint=126), max_size=20), orders)
def test_strings_round_trip(text: str, order: str) -> None:
    word_order, byte_order = ORDERS[order]
    regs = encode_value(text, "string", word_order=word_order, byte_order=byte_order, length=10)
    assert len(regs) == 10
    assert decode_registers(regs, "string", word_order=word_order, byte_order=byte_order) == text


def test_string_matches_pymodbus_and_strips_padding() -> None:
    regs = ModbusClientMixin.convert_to_registers("SDM630", DT.STRING)
    assert decode_registers(regs, "string") == "SDM630"
    assert decode_registers([0x4142, 0x2020, 0x0000], "string") == "AB"
    assert encode_value("AB", "string", length=3) == (0x4142, 0, 0)
    assert decode_registers(encode_value("AB", "string", byte_order="little", length=1), "string") == "BA"


@pytest.mark.parametrize(
    ("value", "type_"),
    [
        (70000, "uint16"),
        (-1, "uint16"),
        (40000, "int16"),
        (2**32, "uint32"),
        (1.5, "int32"),
        (1e39, "float32"),
        ("12", "uint16"),
        (None, "float32"),
        ("x" * 7, "string"),
        ("温度", "string"),
    ],
)
def test_values_that_do_not_fit_raise_codec_error(value: object, type_: str) -> None:
    with pytest.raises(CodecError):
        encode_value(value, type_, length=3)  # type: ignore[arg-type]


def test_whole_floats_are_accepted_for_integer_types() -> None:
    assert encode_value(12.0, "uint16") == (12,)


def test_decode_rejects_wrong_register_counts_and_values() -> None:
    with pytest.raises(CodecError):
        decode_registers([1], "float32")
    with pytest.raises(CodecError):
        decode_registers([70000], "uint16")
    with pytest.raises(CodecError):
        decode_registers([1], "bogus")


@given(st.integers(0, 0xFFFF), st.integers(0, 15))
def test_register_bit(register: int, bit: int) -> None:
    assert register_bit(register, bit) == bool(register & (1 << bit))


@settings(max_examples=300)
@given(st.lists(st.integers(0, 0xFFFF), min_size=1, max_size=4), st.sampled_from(sorted(TYPES)), orders)
def test_decode_never_crashes_on_any_registers(regs: list[int], type_: str, order: str) -> None:
    word_order, byte_order = ORDERS[order]
    try:
        decode_registers(regs, type_, word_order=word_order, byte_order=byte_order)
    except CodecError:
        assert len(regs) != TYPES[type_].registers
