"""DL/T 645 codec: golden frames from the reference, BCD with sign bits, resync, round trips, fuzzing."""

from __future__ import annotations

import contextlib

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from citynerve.drivers.dlt645 import codec
from citynerve.drivers.dlt645.registry import (
    DI_1997,
    DI_2007,
    DataFormat,
    DataItem,
    DataRegistry,
    max_raw,
    parse_di,
)
from citynerve.gateway.api import DeviceExceptionError, FrameError


def h(text: str) -> bytes:
    return bytes.fromhex(text)


# field-protocols.md section 2, checksums verified
READ_ADDRESS = h("FE FE FE FE 68 AA AA AA AA AA AA 68 13 00 DF 16")
READ_ENERGY = h("FE FE FE FE 68 61 01 00 00 00 00 68 11 04 33 33 34 33 14 16")
REPLY_ENERGY = h("68 61 01 00 00 00 00 68 91 08 33 33 34 33 59 33 33 33 8A 16")
READ_VOLTAGE = h("FE FE FE FE 68 61 01 00 00 00 00 68 11 04 33 34 34 35 17 16")
REPLY_VOLTAGE = h("68 61 01 00 00 00 00 68 91 06 33 34 34 35 34 43 10 16")


def test_golden_requests() -> None:
    assert codec.build_read_address() == READ_ADDRESS
    assert codec.build_read("000000000161", 0x00010000) == READ_ENERGY
    assert codec.build_read("000000000161", 0x02010100) == READ_VOLTAGE


def test_golden_replies_whole_frame() -> None:
    frame = codec.parse_frame(REPLY_ENERGY)
    assert frame == codec.Frame("000000000161", 0x91, h("00 00 01 00 26 00 00 00"), REPLY_ENERGY)
    assert frame.is_reply and not frame.is_error and not frame.more_follows and frame.function == 0x11
    assert DI_2007[0x00010000].decode(frame.data[4:]) == 0.26
    frame = codec.parse_frame(REPLY_VOLTAGE)
    assert DI_2007[0x02010100].decode(frame.data[4:]) == 100.1


def test_golden_request_parses_back() -> None:
    frame = codec.parse_frame(READ_ADDRESS)
    assert (frame.address, frame.control, frame.data) == ("AAAAAAAAAAAA", 0x13, b"")


@pytest.mark.parametrize(
    ("di", "raw", "value"),
    [
        (0x02020100, "00 05 80", -0.5),  # current, top bit = sign: -000.500 A
        (0x02020100, "56 34 12", 123.456),
        (0x02030000, "34 12 80", -0.1234),  # power -00.1234 kW
        (0x02060000, "99 89", -0.999),  # power factor -0.999... top bit of 89 -> sign, 0999
        (0x02800002, "00 50", 50.0),
        (0x04000501, "01 02", 0x0201),  # status word: binary, not BCD
    ],
)
def test_bcd_sign_and_binary(di: int, raw: str, value: float) -> None:
    item = DI_2007[di]
    assert item.decode(h(raw)) == pytest.approx(value)
    assert item.decode(item.encode(value)) == pytest.approx(value)


def test_non_bcd_nibble_is_a_frame_error() -> None:
    with pytest.raises(FrameError) as info:
        DI_2007[0x00010000].decode(h("00 0A 00 00"))
    assert "not BCD" in info.value.reason


def test_wrong_length_is_a_frame_error() -> None:
    with pytest.raises(FrameError):
        DI_2007[0x00010000].decode(h("00 00 00"))


def test_1997_table_and_requests() -> None:
    assert DI_1997[0x9010].length == 4 and DI_1997[0xB611].unit == "V"
    frame = codec.parse_frame(codec.build_read("000000000161", 0x9010, "1997"))
    assert frame.function == 0x01 and frame.data == h("10 90")


def test_registry_extends_from_config() -> None:
    extra = DataItem(0x04000B01, "settlement day", 2, DataFormat.BCD, 0, False, "", "2007")
    reg = DataRegistry("2007", [extra])
    assert reg.get(0x04000B01) is extra and 0x00010000 in reg
    with pytest.raises(ValueError):
        DataRegistry("2013")
    assert parse_di("0x9010") == 0x9010
    with pytest.raises(ValueError):
        parse_di("123")


def test_error_reply_names_err_bits() -> None:
    frame = codec.parse_frame(codec.build_error_reply("000000000161", 0x11, 0x06))
    assert frame.is_error
    with pytest.raises(DeviceExceptionError) as info:
        codec.check_reply(frame, "em-1", ("energy",))
    err = info.value
    assert (err.device_id, err.code, err.points, err.transient) == ("em-1", 0x06, ("energy",), False)
    assert err.reason == "no such data, password error or unauthorised"
    frame97 = codec.parse_frame(codec.build_error_reply("000000000161", 0x01, 0x02))
    with pytest.raises(DeviceExceptionError) as info:
        codec.check_reply(frame97, "em-1", version="1997")
    assert info.value.reason == "data identifier error"


@pytest.mark.parametrize(
    ("data", "reason"),
    [
        (
            h("68 61 01 00 00 00 00 68 91 08 33 33 34 33 59 33 33 33 8B 16"),
            "checksum mismatch: expected 8A, found 8B",
        ),
        (h("68 61 01 00 00 00 00 68 91 08 33 33 34 33 59 33 33 33 8A 17"), "end byte is 17, expected 16"),
        (h("68 61 01 00 00 00 00 68 91 08 33 33"), "truncated"),
        (h("68 61 01 00 00 00 00 69 91 00 00 16"), "no 68 start bytes"),
        (REPLY_ENERGY + b"\x00", "1 bytes after the end"),
    ],
)
def test_parse_errors_name_the_problem(data: bytes, reason: str) -> None:
    with pytest.raises(FrameError) as info:
        codec.parse_frame(data)
    assert info.value.protocol == "dlt645" and reason in info.value.reason


def test_address_validation() -> None:
    with pytest.raises(FrameError):
        codec.encode_address("12345")
    assert codec.encode_address("000000000161") == h("61 01 00 00 00 00")


def test_stream_resync_fe_garbage_split_and_two_frames() -> None:
    parser = codec.StreamParser()
    stream = b"\x00\x68\x12garbage" + b"\xfe\xfe" + REPLY_ENERGY + b"\xfe" + REPLY_VOLTAGE
    out: list[codec.Frame] = []
    for i in range(0, len(stream), 5):  # split across reads
        out += parser.feed(stream[i : i + 5])
    assert [f.raw for f in out] == [REPLY_ENERGY, REPLY_VOLTAGE]
    assert parser.feed(REPLY_ENERGY + REPLY_VOLTAGE) == [
        codec.parse_frame(REPLY_ENERGY),
        codec.parse_frame(REPLY_VOLTAGE),
    ]


def test_stream_finds_frame_behind_noise_with_68_and_big_length() -> None:
    # noise "68 .. .. .. .. .. .. 68 91 C8" promises 200 data bytes; the real reply must not wait
    parser = codec.StreamParser()
    noise = h("68 01 02 03 04 05 06 68 91 C8")
    assert parser.feed(noise + REPLY_ENERGY) == [codec.parse_frame(REPLY_ENERGY)]
    assert parser.rejected()


def test_stream_bad_checksum_rejected_then_good() -> None:
    parser = codec.StreamParser()
    bad = REPLY_ENERGY[:-2] + b"\x00\x16"
    assert parser.feed(bad) == []
    rejected = parser.rejected()
    assert rejected and "checksum" in rejected[0].reason
    assert parser.feed(REPLY_VOLTAGE) == [codec.parse_frame(REPLY_VOLTAGE)]


addresses = st.text("0123456789", min_size=12, max_size=12)


@settings(deadline=None)  # a shared, noisy CI machine: no per-example deadline
@given(addresses, st.integers(0, 0xFF), st.binary(max_size=200), st.booleans())
def test_roundtrip_any_frame(address: str, control: int, data: bytes, preamble: bool) -> None:
    wire = codec.encode_frame(address, control, data, preamble=preamble)
    frame = codec.parse_frame(wire)
    assert (frame.address, frame.control, frame.data) == (address, control, data)
    assert codec.StreamParser().feed(b"\xfe\x00" + wire) == [frame]


@settings(deadline=None)  # a shared, noisy CI machine: no per-example deadline
@given(
    st.sampled_from(
        sorted(DI_2007.values(), key=lambda i: i.di) + sorted(DI_1997.values(), key=lambda i: i.di)
    ),
    st.data(),
)
def test_roundtrip_every_registry_item(item: DataItem, data: st.DataObject) -> None:
    if item.fmt is DataFormat.BINARY:
        value: float | int | str = data.draw(st.integers(0, 256**item.length - 1))
    elif item.fmt is DataFormat.HEX:
        value = data.draw(st.binary(min_size=item.length, max_size=item.length)).hex().upper()
    elif item.fmt is DataFormat.ASCII:
        value = data.draw(st.text("ABC123", min_size=1, max_size=item.length))
    else:
        top = max_raw(item)
        raw = data.draw(st.integers(-top if item.signed else 0, top))
        value = raw / 10**item.decimals if item.decimals else raw
    decoded = item.decode(item.encode(value))
    if isinstance(value, float):
        assert decoded == pytest.approx(value, abs=10**-item.decimals / 2)
    else:
        assert decoded == value


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=300))
def test_fuzz_random_bytes_only_frame_error(data: bytes) -> None:
    with contextlib.suppress(FrameError):
        codec.parse_frame(data)
    parser = codec.StreamParser()
    for frame in parser.feed(data):
        assert codec.parse_frame(frame.raw) == frame
    for err in parser.rejected():
        assert isinstance(err, FrameError)


@settings(max_examples=300, deadline=None)
@given(st.sampled_from([REPLY_ENERGY, REPLY_VOLTAGE, READ_ENERGY, READ_ADDRESS]), st.data())
def test_fuzz_mutated_golden_frames(frame: bytes, data: st.DataObject) -> None:
    mutated = bytearray(frame)
    for _ in range(data.draw(st.integers(1, 4))):
        op = data.draw(st.sampled_from(["flip", "drop", "insert"]))
        pos = data.draw(st.integers(0, max(0, len(mutated) - 1)))
        if op == "flip" and mutated:
            mutated[pos] ^= data.draw(st.integers(1, 255))
        elif op == "drop" and mutated:
            del mutated[pos]
        else:
            mutated.insert(pos, data.draw(st.integers(0, 255)))
    try:
        parsed = codec.parse_frame(bytes(mutated))
        codec.check_reply(parsed, "em-1")
    except (FrameError, DeviceExceptionError):
        pass
    parser = codec.StreamParser()
    frames = parser.feed(bytes(mutated))
    assert all(isinstance(f, codec.Frame) for f in frames)


@settings(deadline=None)  # a shared, noisy CI machine: no per-example deadline
@given(
    st.lists(st.tuples(addresses, st.binary(max_size=40)), min_size=1, max_size=5),
    st.lists(st.integers(1, 30), min_size=1, max_size=50),
    st.binary(max_size=20).filter(lambda b: 0x68 not in b),
)
def test_stream_any_chunking_gives_the_same_frames(
    frames: list[tuple[str, bytes]], cuts: list[int], junk: bytes
) -> None:
    wires = [codec.build_reply(a, 0x11, d, preamble=i % 2 == 0) for i, (a, d) in enumerate(frames)]
    stream = junk + b"".join(wires)
    parser = codec.StreamParser()
    out: list[codec.Frame] = []
    pos, i = 0, 0
    while pos < len(stream):
        step = cuts[i % len(cuts)]
        out += parser.feed(stream[pos : pos + step])
        pos, i = pos + step, i + 1
    assert [f.raw for f in out] == [w.lstrip(b"\xfe") for w in wires]
