"""BTHome v2 codec: published bytes, round trips, the bthome-ble parser as oracle, fuzzing."""

from __future__ import annotations

import contextlib
from collections import Counter
from datetime import datetime
from typing import Any

import pytest
from ble_support import manhole_device
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from pydantic import ValidationError

from citynerve.drivers.bthome import codec
from citynerve.drivers.bthome.decode import decode
from citynerve.drivers.bthome.errors import (
    BTHomeFrameError,
    DecryptionError,
    MalformedAdvertError,
    MissingKeyError,
    RejectReason,
)
from citynerve.drivers.bthome.objects import OBJECTS, ValueFormat
from citynerve.hil.sim.ble.oracle import OracleParser, bthome_ble_values

DOC_KEY = bytes.fromhex("231d39c1d7cc1ab1aee224cd096db932")
DOC_MAC = "54:48:E6:8F:80:A5"


# -- published bytes -------------------------------------------------------------------------


def test_published_plain_temperature_humidity() -> None:
    advert = codec.parse(bytes.fromhex("4002CA0903BF13"))
    assert advert == codec.Advert(
        device_info=0x40,
        mac="",
        encrypted=False,
        trigger_based=False,
        counter=None,
        measurements=(
            codec.Measurement(0x02, "temperature", 0, 25.06, "°C", bytes.fromhex("CA09")),
            codec.Measurement(0x03, "humidity", 0, 50.55, "%", bytes.fromhex("BF13")),
        ),
    )


def test_published_encrypted_example() -> None:
    # bthome.io encryption example, as the bthome-ble test suite carries it.
    data = bytes.fromhex("41a47266c95f730011223378237214")
    advert = codec.parse(data, mac=DOC_MAC, key=DOC_KEY)
    assert advert.encrypted and advert.counter == 0x33221100
    assert [(m.name, m.value) for m in advert.measurements] == [("temperature", 25.06), ("humidity", 50.55)]
    # and the encoder gives exactly the published bytes back
    assert codec.build(bytes.fromhex("02CA0903BF13"), mac=DOC_MAC, key=DOC_KEY, counter=0x33221100) == data


@pytest.mark.parametrize(
    ("hex_objects", "name", "value"),
    [
        ("3F020C", "rotation", 307.4),
        ("0C020C", "voltage", 3.074),
        ("4F87562A01", "water", 19551.879),
        ("2B01", "tamper", True),
        ("2900", "smoke", False),
        ("400C00", "distance_mm", 12),
        ("3FF6FF", "rotation", -1.0),
        ("57EA", "temperature", -22),
        ("530C48656C6C6F20576F726C6421", "text", "Hello World!"),
        ("F100010204", "firmware_version", "4.2.1.0"),
        ("F2000106", "firmware_version", "6.1.0"),
        ("3A04", "button", "long_press"),
        ("3C0103", "dimmer", -3),
    ],
)
def test_object_values(hex_objects: str, name: str, value: Any) -> None:
    (m,) = codec.parse(bytes.fromhex("40" + hex_objects)).measurements
    assert (m.name, m.value) == (name, value)


def test_repeated_objects_are_indexed() -> None:
    advert = codec.parse(bytes.fromhex("40" + "02CA09" + "02C409" + "3F6400"))
    temps = [(m.index, m.value) for m in advert.measurements if m.name == "temperature"]
    assert temps == [(0, 25.06), (1, 25.0)]
    assert advert.find("temperature", 1) is not None and advert.find("temperature", 1).value == 25.0  # type: ignore[union-attr]
    assert advert.find(0x3F) is not None and advert.find(0x3F).value == 10.0  # type: ignore[union-attr]
    assert advert.find("temperature", 2) is None


def test_mac_included_flag_is_used_for_the_nonce() -> None:
    data = codec.build([(0x02, 21.5)], mac=DOC_MAC, key=DOC_KEY, counter=7, include_mac=True)
    assert data[0] & codec.FLAG_MAC_INCLUDED
    advert = codec.parse(data, mac="00:00:00:00:00:00", key=DOC_KEY)  # the included one wins
    assert advert.mac == DOC_MAC and advert.find("temperature").value == 21.5  # type: ignore[union-attr]


def test_packet_id_and_trigger_flag() -> None:
    advert = codec.parse(codec.build([(0x00, 77), (0x29, True)], trigger_based=True))
    assert advert.packet_id == 77 and advert.trigger_based


# -- typed errors ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("hex_data", "offset"),
    [
        ("", None),
        ("20", 0),  # version 1
        ("6002CA09", 0),  # version 3
        ("4002CA", 1),  # truncated temperature
        ("40FE00", 1),  # unknown object id
        ("4002CA0955", 4),  # unknown id after a good object
        ("4053", 1),  # text without its length byte
        ("40530548", 1),  # text shorter than its length
        ("4053028081", 1),  # text that is not UTF-8
        ("42A5808F", 1),  # MAC-included flag with a truncated MAC
        ("4102CA09", 1),  # encrypted, shorter than counter + MIC
    ],
)
def test_malformed(hex_data: str, offset: int | None) -> None:
    with pytest.raises(MalformedAdvertError) as info:
        codec.parse(bytes.fromhex(hex_data), mac=DOC_MAC, key=DOC_KEY)
    assert info.value.offset == offset
    assert info.value.reason_code is RejectReason.MALFORMED
    assert info.value.protocol == "bthome"


def test_wrong_key_and_missing_key() -> None:
    data = bytes.fromhex("41a47266c95f730011223378237214")
    with pytest.raises(DecryptionError) as info:
        codec.parse(data, mac=DOC_MAC, key=bytes(16))
    assert info.value.reason_code is RejectReason.WRONG_KEY and info.value.mac == DOC_MAC
    with pytest.raises(DecryptionError):
        codec.parse(data, mac="54:48:E6:8F:80:A6", key=DOC_KEY)  # MAC is in the nonce
    tampered = bytearray(data)
    tampered[3] ^= 1
    with pytest.raises(DecryptionError):
        codec.parse(bytes(tampered), mac=DOC_MAC, key=DOC_KEY)
    with pytest.raises(MissingKeyError) as missing:
        codec.parse(data, mac=DOC_MAC)
    assert missing.value.reason_code is RejectReason.NO_KEY


def test_key_and_mac_parsing() -> None:
    assert codec.parse_key("23:1d:39:c1:d7:cc:1a:b1:ae:e2:24:cd:09:6d:b9:32") == DOC_KEY
    with pytest.raises(ValueError, match="16 bytes"):
        codec.parse_key("abcd")
    assert codec.normalize_mac("5448e68f80a5") == DOC_MAC
    assert codec.normalize_mac(" 54-48-e6-8f-80-a5 ") == codec.normalize_mac("54:48:e6:8f:80:a5") == DOC_MAC
    with pytest.raises(ValueError):
        codec.normalize_mac("54:48:E6")


@pytest.mark.parametrize(
    "bad",
    [
        "0x5448e68f80",
        "+5448e68f80a",
        "5448_e68f80a",
        "54:48:e6:8f:80:a5:",
        "54:48-e6:8f:80:a5",
        "5448e6 8f80a5",
    ],
)
def test_a_mac_is_twelve_hex_digits_and_nothing_else(bad: str) -> None:
    """int(digits, 16) took a '0x' prefix, a sign and '_' separators as hex: a config with such a
    MAC passed, and the decoder then raised an untyped ValueError on it."""
    with pytest.raises(ValueError, match="not 6 bytes"):
        codec.normalize_mac(bad)
    with pytest.raises(ValidationError, match="not 6 bytes"):
        manhole_device(mac=bad)  # a config naming it is refused
    payload = bytes.fromhex("41a47266c95f730011223378237214")
    with pytest.raises(MalformedAdvertError, match="bad MAC"):
        decode(payload, mac=bad, key=DOC_KEY.hex())


@given(st.text(alphabet="0123456789abcdefABCDEFxX:-_+ ", max_size=20))
def test_normalize_mac_gives_a_mac_or_a_value_error(text: str) -> None:
    try:
        mac = codec.normalize_mac(text)
    except ValueError:
        return
    assert codec.normalize_mac(mac) == mac and len(codec.mac_bytes(mac)) == 6
    assert mac.replace(":", "") == text.strip().replace(":", "").replace("-", "").upper()


def test_decoder_entry_point() -> None:
    out = decode(bytes.fromhex("41a47266c95f730011223378237214"), mac=DOC_MAC, key=DOC_KEY.hex())
    assert out["protocol"] == "bthome" and out["encrypted"] and out["mic_ok"]
    assert out["counter"] == 0x33221100
    assert [(o["name"], o["value"], o["unit"]) for o in out["objects"]] == [
        ("temperature", 25.06, "°C"),
        ("humidity", 50.55, "%"),
    ]
    with pytest.raises(MalformedAdvertError):
        decode(b"\x41", key="zz")


def test_table_covers_the_format() -> None:
    # Every id of the BTHome v2 format document, 0x00-0x2F and 0x3A-0x65, plus device info.
    expected = set(range(0x00, 0x30)) | set(range(0x3A, 0x66)) | {0xF0, 0xF1, 0xF2}
    assert set(OBJECTS) == expected
    from bthome_ble.const import MEAS_TYPES

    assert set(MEAS_TYPES) == expected  # the oracle's table, the same ids


# -- properties: round trip, oracle, fuzz ----------------------------------------------------

_ORACLE_CLASS: dict[int, str] = {}


def _oracle_group(obj_id: int) -> str:
    """The key bthome-ble files a value under: one id per key, or it overwrites values."""
    from bthome_ble.const import MEAS_TYPES

    fmt = MEAS_TYPES[obj_id].meas_format
    return str(getattr(fmt, "device_class", fmt))


_CROSS_IDS = sorted(
    i
    for i, o in OBJECTS.items()
    if o.format
    in (
        ValueFormat.UINT,
        ValueFormat.SINT,
        ValueFormat.BINARY,
        ValueFormat.TEXT,
        ValueFormat.RAW,
        ValueFormat.TIMESTAMP,
    )
    and i != 0x00
)


@st.composite
def object_raw(draw: st.DrawFn, obj_id: int) -> bytes:
    obj = OBJECTS[obj_id]
    if obj.format is ValueFormat.TEXT:
        text = draw(st.text(min_size=1, max_size=6)).encode()  # whole characters: valid UTF-8
        return codec.encode_raw(obj_id, text or b"x")
    if obj.format is ValueFormat.RAW:
        return codec.encode_raw(obj_id, draw(st.binary(min_size=1, max_size=8)))
    if obj.format is ValueFormat.BINARY:
        return codec.encode_raw(obj_id, bytes([draw(st.integers(0, 1))]))
    if obj.format is ValueFormat.TIMESTAMP:
        return codec.encode_raw(obj_id, draw(st.integers(0, 2**31)).to_bytes(4, "little"))
    return codec.encode_raw(obj_id, draw(st.binary(min_size=obj.length, max_size=obj.length)))


@st.composite
def payload_objects(draw: st.DrawFn) -> list[bytes]:
    groups: dict[str, list[int]] = {}
    for i in _CROSS_IDS:
        groups.setdefault(_oracle_group(i), []).append(i)
    chosen_groups = draw(st.lists(st.sampled_from(sorted(groups)), min_size=1, max_size=5, unique=True))
    ids = sorted(draw(st.sampled_from(groups[g])) for g in chosen_groups)
    out = []
    for i in ids:
        for _ in range(draw(st.integers(1, 2))):
            out.append(draw(object_raw(i)))
    return out


def _norm(v: Any) -> Any:
    if isinstance(v, datetime):
        return int(v.timestamp())
    return v


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    objs=payload_objects(),
    encrypted=st.booleans(),
    counter=st.integers(0, 2**32 - 1),
    key=st.binary(min_size=16, max_size=16),
)
def test_matches_bthome_ble(objs: list[bytes], encrypted: bool, counter: int, key: bytes) -> None:
    body = b"".join(objs)
    mac = "A4:C1:38:12:34:56"
    data = codec.build(body, mac=mac, key=key if encrypted else None, counter=counter)
    ours = codec.parse(data, mac=mac, key=key if encrypted else None)
    assert b"".join(codec.encode_raw(m.object_id, m.raw) for m in ours.measurements) == body
    theirs = OracleParser(key if encrypted else None).values(data, mac)
    assert Counter(m.value for m in ours.measurements) == Counter(_norm(v) for v in theirs.values())


@settings(max_examples=300, deadline=None)
@given(data=st.binary(max_size=40), key=st.one_of(st.none(), st.binary(min_size=16, max_size=16)))
def test_fuzz_only_typed_errors(data: bytes, key: bytes | None) -> None:
    with contextlib.suppress(BTHomeFrameError):
        codec.parse(data, mac="A4:C1:38:12:34:56", key=key)


@settings(max_examples=200, deadline=None)
@given(objs=payload_objects(), cut=st.integers(1, 30))
def test_truncation_is_malformed_never_a_crash(objs: list[bytes], cut: int) -> None:
    data = codec.build(b"".join(objs))
    truncated = data[: max(1, len(data) - cut)]
    try:
        advert = codec.parse(truncated)
    except MalformedAdvertError:
        return
    assert isinstance(advert, codec.Advert)


@settings(max_examples=100, deadline=None)
@given(
    tilt=st.floats(-3276.8, 3276.7).map(lambda v: round(v, 1)),
    battery=st.integers(0, 100),
    volts=st.integers(0, 65535).map(lambda n: round(n * 0.001, 3)),
    water=st.integers(0, 65535),
    flags=st.tuples(st.booleans(), st.booleans(), st.booleans()),
)
def test_value_round_trip(
    tilt: float, battery: int, volts: float, water: int, flags: tuple[bool, bool, bool]
) -> None:
    objs = [
        (0x01, battery),
        (0x0C, volts),
        (0x11, flags[0]),
        (0x20, flags[1]),
        (0x2B, flags[2]),
        (0x3F, tilt),
        (0x40, water),
    ]
    advert = codec.parse(codec.build(objs, mac=DOC_MAC, key=DOC_KEY, counter=5), mac=DOC_MAC, key=DOC_KEY)
    assert [(m.object_id, m.value) for m in advert.measurements] == objs
    assert bthome_ble_values(codec.build(objs), DOC_MAC)["rotation"] == tilt
