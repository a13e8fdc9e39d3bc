"""decode_rtu and RTU framing: golden frames (CRCs computed here, never copied), fuzzing, round trips."""

from __future__ import annotations

import json

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from pymodbus.framer.rtu import FramerRTU

from citynerve.drivers.modbus.codec import (
    FUNCTIONS,
    Direction,
    build_rtu_frame,
    crc16,
    parse_rtu_frame,
    read_request_pdu,
    read_response_pdu,
)
from citynerve.drivers.modbus.decode import decode_rtu
from citynerve.gateway.api import FrameError


def crc_bitwise(data: bytes) -> int:
    """Modbus CRC-16 written out bit by bit (the spec's algorithm), independent of the table."""
    crc = 0xFFFF
    for byte in data:
        crc ^= byte
        for _ in range(8):
            crc = (crc >> 1) ^ 0xA001 if crc & 1 else crc >> 1
    return crc


def frame(hex_body: str) -> bytes:
    body = bytes.fromhex(hex_body)
    return body + crc_bitwise(body).to_bytes(2, "little")


@given(st.binary(max_size=300))
def test_crc_matches_bitwise_and_pymodbus(data: bytes) -> None:
    assert crc16(data) == crc_bitwise(data)
    # pymodbus returns the CRC byte-swapped (as it appears on the wire, big-endian int).
    assert FramerRTU.compute_CRC(data) == int.from_bytes(crc16(data).to_bytes(2, "little"), "big")


def test_crc_check_value() -> None:
    # CRC-16/MODBUS catalogue check value: crc("123456789") = 0x4B37.
    assert crc16(b"123456789") == 0x4B37


def test_read_holding_request() -> None:
    out = decode_rtu(frame("01 03 00 6b 00 03"))
    assert out["unit"] == 1
    assert out["function"] == 3
    assert out["function_name"] == "read holding registers"
    assert out["direction"] == "request"
    assert out["fields"] == {"address": 0x6B, "count": 3}
    assert out["crc"]["ok"] is True
    json.dumps(out)


def test_read_holding_response_with_typed_values() -> None:
    # SDM630 style answer: two float32 (ABCD) 230.5 V and 231.0 V.
    out = decode_rtu(frame("01 04 08 4366 8000 4367 0000"), type="float32", order="ABCD")
    assert out["direction"] == "response"
    assert out["registers"] == [0x4366, 0x8000, 0x4367, 0x0000]
    assert out["values"] == {"type": "float32", "order": "ABCD", "values": [230.5, 231.0]}
    assert out["fields"]["byte_count"] == 8


def test_cdab_values_from_hex_text() -> None:
    text = frame("02 03 04 0000 4120").hex(" ")
    out = decode_rtu(text, type="float32", order="CDAB")
    assert out["values"]["values"] == [10.0]
    assert decode_rtu("0x" + text.replace(" ", ",0x"), type="float32", order="CDAB")["unit"] == 2


def test_read_coils_response_bits() -> None:
    out = decode_rtu(frame("11 01 01 cd"), direction="response")
    assert out["bits"] == [1, 0, 1, 1, 0, 0, 1, 1]


def test_exception_response() -> None:
    out = decode_rtu(frame("0a 83 02"))
    assert out["direction"] == "response"
    assert out["fields"] == {"exception_code": 2, "exception": "illegal data address"}


def test_write_single_coil_and_register() -> None:
    coil = decode_rtu(frame("01 05 00 ac ff 00"))
    assert coil["fields"] == {"address": 0xAC, "value": 0xFF00, "coil": "on"}
    reg = decode_rtu(frame("01 06 00 01 00 03"), direction="response")
    assert reg["direction"] == "response" and reg["fields"] == {"address": 1, "value": 3}


def test_write_multiple_registers_request_and_response() -> None:
    req = decode_rtu(frame("01 10 00 01 00 02 04 000a 0102"))
    assert req["direction"] == "request"
    assert req["fields"]["count"] == 2 and req["registers"] == [0x000A, 0x0102]
    resp = decode_rtu(frame("01 10 00 01 00 02"))
    assert resp["direction"] == "response" and resp["fields"] == {"address": 1, "count": 2}


def test_write_multiple_coils_request() -> None:
    out = decode_rtu(frame("01 0f 00 13 00 0a 02 cd 01"))
    assert out["fields"]["count"] == 10
    assert out["bits"] == [1, 0, 1, 1, 0, 0, 1, 1, 1, 0]


def test_crc_mismatch_is_reported_not_raised() -> None:
    good = frame("01 03 00 00 00 0a")
    bad = good[:-1] + bytes([good[-1] ^ 0xFF])
    out = decode_rtu(bad)
    assert out["crc"]["ok"] is False
    assert out["crc"]["expected"] == f"{crc_bitwise(good[:-2]):#06x}"
    assert out["crc"]["found"] != out["crc"]["expected"]


def test_ambiguous_bit_read_is_flagged() -> None:
    # FC 1, 8 bytes: a request (address 0x03xx) or a response carrying 3 bytes of bits.
    out = decode_rtu(frame("01 01 03 00 00 01"))
    assert out["ambiguous"] is True and out["direction"] == "request"
    assert decode_rtu(frame("01 01 03 00 00 01"), direction="response")["bits"][:8] == [0] * 8


@pytest.mark.parametrize(
    ("data", "options"),
    [
        (b"", {}),
        (b"\x01\x03\x00", {}),
        (frame("01 03 00 00 00"), {}),  # 7 bytes fits no FC 3 frame
        (frame("01 03 04 00 01"), {}),  # byte count says 4, 2 follow
        (frame("01 03 03 00 01 02"), {"direction": "response"}),  # odd byte count for registers
        (frame("01 10 00 01 00 02 02 00 0a"), {}),  # quantity 2 needs 4 bytes
        (frame("01 2b 0e 01 00"), {}),  # function 43 (device id) not decoded
        (frame("01 80 01"), {}),
        (frame("01 03 00 00 00 0a"), {"direction": "sideways"}),
        (frame("01 03 04 0000 4120"), {"type": "float24"}),
        (frame("01 03 04 0000 4120"), {"type": "float32", "order": "ACBD"}),
        ("zz 01", {}),
    ],
)
def test_undecodable_input_raises_frame_error(data: bytes | str, options: dict[str, str]) -> None:
    with pytest.raises(FrameError) as info:
        decode_rtu(data, **options)
    assert info.value.protocol == "modbus-rtu"
    assert info.value.reason


@settings(max_examples=500)
@given(st.binary(max_size=64), st.sampled_from([None, "request", "response"]))
def test_fuzz_decode_only_ever_raises_frame_error(data: bytes, direction: str | None) -> None:
    try:
        out = decode_rtu(data, direction=direction) if direction else decode_rtu(data)
    except FrameError:
        return
    json.dumps(out)
    assert out["length"] == len(data)


@given(
    st.integers(1, 247),
    st.sampled_from([1, 2, 3, 4]),
    st.integers(0, 65535),
    st.data(),
)
def test_read_frames_round_trip(unit: int, function: int, address: int, data: st.DataObject) -> None:
    registers = FUNCTIONS[function].registers
    count = data.draw(st.integers(1, 125 if registers else 2000))
    req = parse_rtu_frame(
        build_rtu_frame(unit, read_request_pdu(function, address, count)), Direction.REQUEST
    )
    assert (req.unit, req.function, req.address, req.count, req.crc_ok) == (
        unit,
        function,
        address,
        count,
        True,
    )
    if registers:
        values = data.draw(st.lists(st.integers(0, 0xFFFF), min_size=1, max_size=125))
        resp = parse_rtu_frame(build_rtu_frame(unit, read_response_pdu(function, values)), Direction.RESPONSE)
        assert list(resp.registers) == values
    else:
        bits = data.draw(st.lists(st.booleans(), min_size=1, max_size=800))
        resp = parse_rtu_frame(build_rtu_frame(unit, read_response_pdu(function, bits)), Direction.RESPONSE)
        assert list(resp.bits[: len(bits)]) == bits
    assert resp.crc_ok


@given(st.binary(min_size=4, max_size=40), st.integers(0, 39), st.integers(1, 255))
def test_any_corrupted_byte_breaks_the_crc(body: bytes, pos: int, flip: int) -> None:
    good = build_rtu_frame(body[0], body[1:])
    i = pos % len(good)
    bad = good[:i] + bytes([good[i] ^ flip]) + good[i + 1 :]
    # CRC-16 detects every single-byte error.
    assert crc16(bad[:-2]) != int.from_bytes(bad[-2:], "little")
