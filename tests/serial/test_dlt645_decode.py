"""`citynerve.drivers.dlt645.decode.decode`: every field of captured frames, for `citynerve diag decode`."""

from __future__ import annotations

import pytest

from citynerve.drivers.dlt645 import codec
from citynerve.drivers.dlt645.decode import decode
from citynerve.gateway.api import FrameError

REPLY_ENERGY = bytes.fromhex("68 61 01 00 00 00 00 68 91 08 33 33 34 33 59 33 33 33 8A 16")


def test_golden_reply_whole_object() -> None:
    assert decode(b"\xfe\xfe" + REPLY_ENERGY) == {
        "protocol": "DL/T 645",
        "version": "2007",
        "preamble_fe": 2,
        "address": "000000000161",
        "control": {
            "hex": "91",
            "direction": "reply (slave to master)",
            "abnormal": False,
            "more_follows": False,
            "function": "11",
            "function_name": "read data",
        },
        "length": 8,
        "data_on_wire": "33 33 34 33 59 33 33 33",
        "data": "00 00 01 00 26 00 00 00",
        "checksum": {"expected": "8A", "found": "8A", "ok": True},
        "end": {"found": "16", "ok": True},
        "trailing_bytes": 0,
        "di": "00010000",
        "di_name": "forward active total energy",
        "value_bytes": "26 00 00 00",
        "value": 0.26,
        "unit": "kWh",
    }


def test_request_error_and_address_replies() -> None:
    req = decode(bytes.fromhex("FE FE FE FE 68 AA AA AA AA AA AA 68 13 00 DF 16"))
    assert req["control"]["function_name"] == "read address" and req["preamble_fe"] == 4
    err = decode(codec.build_error_reply("000000000161", 0x11, 0x02))
    assert err["control"]["abnormal"] and err["error"] == {"code": "02", "bits": ["no such data"]}
    addr = decode(codec.build_reply("123456789012", 0x13, codec.encode_address("123456789012")))
    assert addr["meter_address"] == "123456789012"
    follow = decode(codec.build_reply("000000000161", 0x12, bytes.fromhex("00 00 01 00 26 00") + b"\x01"))
    assert follow["seq"] == 1 and follow["value_bytes"] == "26 00"
    assert "value_error" in follow  # half a value: shown, not decoded


def test_value_problems_are_reported_not_raised() -> None:
    not_bcd = decode(codec.build_reply("000000000161", 0x11, bytes.fromhex("00 00 01 00 AA 00 00 00")))
    assert "not BCD" in not_bcd["value_error"]
    unknown = decode(codec.build_reply("000000000161", 0x11, bytes.fromhex("99 99 99 99 01")))
    assert unknown["di_name"] == "not in the built-in table" and "value" not in unknown


def test_1997_guess_and_override() -> None:
    frame = codec.build_reply("000000000161", 0x01, bytes.fromhex("11 B6 29 02"))
    out = decode(frame)
    assert (out["version"], out["di"], out["value"], out["unit"]) == ("1997", "B611", 229, "V")


@pytest.mark.parametrize("data", [b"", b"\xfe\xfe", bytes(12), REPLY_ENERGY[:15]])
def test_not_a_frame_raises_frame_error(data: bytes) -> None:
    with pytest.raises(FrameError):
        decode(data)
