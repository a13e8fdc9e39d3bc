"""BTHome v2 service data (UUID 0xFCD2): parse and build. Pure: no I/O, no asyncio, no clock.

Layout: `[device info][objects...]` or, encrypted, `[device info][ciphertext][counter:4][MIC:4]`.
Device info: bit0 encrypted, bit1 MAC included (6 bytes, reversed, follow), bit2 trigger-based,
bits 5-7 version (2). Encryption is AES-CCM with a 16-byte key and a 4-byte MIC; the nonce is
MAC(6) + `D2 FC` + device info + counter(4).
"""

from __future__ import annotations

import re
import struct
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESCCM

from citynerve.drivers.bthome.errors import DecryptionError, MalformedAdvertError, MissingKeyError
from citynerve.drivers.bthome.objects import (
    BUTTON_EVENTS,
    DIMMER_EVENTS,
    OBJECTS,
    VARIABLE_LENGTH,
    ObjectType,
    ValueFormat,
)

UUID16 = 0xFCD2
UUID128 = "0000fcd2-0000-1000-8000-00805f9b34fb"

FLAG_ENCRYPTED = 0x01
FLAG_MAC_INCLUDED = 0x02
FLAG_TRIGGER_BASED = 0x04
VERSION = 2

Scalar = bool | int | float | str


@dataclass(frozen=True, slots=True)
class Measurement:
    """One decoded object. `index` counts earlier objects of the same name in the payload."""

    object_id: int
    name: str
    index: int
    value: Scalar
    unit: str
    raw: bytes


@dataclass(frozen=True, slots=True)
class Advert:
    """One decoded BTHome v2 payload."""

    device_info: int
    mac: str  # the MAC the nonce used (from the payload if included, else the given one)
    encrypted: bool
    trigger_based: bool
    counter: int | None  # encryption counter, None when plaintext
    measurements: tuple[Measurement, ...]

    @property
    def packet_id(self) -> int | None:
        """Object 0x00, which devices bump for every new reading (duplicates share it)."""
        return next((int(m.value) for m in self.measurements if m.object_id == 0x00), None)

    def find(self, name_or_id: str | int, index: int = 0) -> Measurement | None:
        """The `index`-th measurement with this object name or id, or None."""
        hits = [
            m
            for m in self.measurements
            if (m.object_id == name_or_id if isinstance(name_or_id, int) else m.name == name_or_id)
        ]
        return hits[index] if index < len(hits) else None


_MAC = re.compile(r"[0-9A-Fa-f]{2}([:-]?)[0-9A-Fa-f]{2}(?:\1[0-9A-Fa-f]{2}){4}")
"""Six hex pairs, all separated by ':' or all by '-' or not at all (no '0x', sign or '_')."""


def normalize_mac(mac: str) -> str:
    """`a4c138000001` / `a4-c1-38-00-00-01` -> `A4:C1:38:00:00:01`. Raises ValueError."""
    text = mac.strip()
    if _MAC.fullmatch(text) is None:
        raise ValueError(
            f"MAC {mac!r} is not 6 bytes in hex (like 'A4:C1:38:12:34:56', 'a4-c1-38-12-34-56' "
            "or 'a4c138123456')"
        )
    digits = text.replace(":", "").replace("-", "")
    return ":".join(digits[i : i + 2] for i in range(0, 12, 2)).upper()


def mac_bytes(mac: str) -> bytes:
    """MAC string -> 6 bytes in display order (as the nonce wants them)."""
    return bytes.fromhex(normalize_mac(mac).replace(":", ""))


def parse_key(key: str | bytes) -> bytes:
    """A 16-byte AES key from 32 hex digits (spaces/colons allowed) or bytes. Raises ValueError
    saying what is wrong in words ("31 hex digits, expected 32"), never showing the key."""
    if isinstance(key, bytes):
        if len(key) != 16:
            raise ValueError(f"a BTHome key is 16 bytes (32 hex digits), got {len(key)} bytes")
        return key
    text = key.strip()
    digits = text.replace(":", "").replace(" ", "")
    if (at := next((i for i, c in enumerate(text) if c not in _KEY_CHARS), None)) is not None:
        raise ValueError(
            f"character {at + 1} is not a hex digit: a BTHome key is 32 hex digits (0-9, a-f), "
            "with ':' or spaces between bytes at most"
        )
    if len(digits) != 32:
        raise ValueError(f"{len(digits)} hex digits, expected 32 (a BTHome key is 16 bytes)")
    return bytes.fromhex(digits)


_KEY_CHARS = frozenset("0123456789abcdefABCDEF: ")


def nonce(mac: bytes, device_info: int, counter: int) -> bytes:
    """The 13-byte AES-CCM nonce: MAC + UUID (LE) + device info + counter (LE)."""
    return mac + struct.pack("<HBI", UUID16, device_info, counter)


# -- parsing -----------------------------------------------------------------------------------


def parse(
    data: bytes, *, mac: str | None = None, key: bytes | None = None, cipher: AESCCM | None = None
) -> Advert:
    """Decode one service-data payload (the bytes after the 0xFCD2 UUID).

    `mac` (the advertiser's address) is needed for encrypted payloads that do not include it.
    `cipher` may be passed instead of `key` to reuse a prepared AESCCM (it is costly to build).
    Raises MalformedAdvertError, MissingKeyError, DecryptionError.
    """
    data = bytes(data)
    if not data:
        raise MalformedAdvertError("empty service data", data)
    info = data[0]
    version = info >> 5
    if version != VERSION:
        raise MalformedAdvertError(f"BTHome version {version}, expected 2", data, offset=0)
    body = data[1:]
    if info & FLAG_MAC_INCLUDED:
        if len(body) < 6:
            raise MalformedAdvertError("truncated included MAC", data, offset=1)
        payload_mac = ":".join(f"{b:02X}" for b in reversed(body[:6]))
        body = body[6:]
        mac = payload_mac
    elif mac is not None:
        try:
            mac = normalize_mac(mac)
        except ValueError as err:
            raise MalformedAdvertError(f"bad MAC {mac!r}", data) from err
    counter: int | None = None
    encrypted = bool(info & FLAG_ENCRYPTED)
    if encrypted:
        if mac is None:
            raise MalformedAdvertError("encrypted payload and no MAC to build the nonce", data)
        if len(body) < 9:  # at least one byte of ciphertext + counter + MIC
            raise MalformedAdvertError("encrypted payload shorter than counter and MIC", data, offset=1)
        if cipher is None:
            if key is None:
                raise MissingKeyError(mac, data)
            cipher = AESCCM(parse_key(key), tag_length=4)
        counter = int.from_bytes(body[-8:-4], "little")
        try:
            body = cipher.decrypt(nonce(mac_bytes(mac), info, counter), body[:-8] + body[-4:], None)
        except InvalidTag as err:
            raise DecryptionError(mac, data) from err
    measurements = parse_objects(body, frame=data)
    return Advert(
        device_info=info,
        mac=mac or "",
        encrypted=encrypted,
        trigger_based=bool(info & FLAG_TRIGGER_BASED),
        counter=counter,
        measurements=measurements,
    )


def parse_objects(body: bytes, *, frame: bytes = b"") -> tuple[Measurement, ...]:
    """Decode a plaintext object list. Raises MalformedAdvertError (naming the byte offset)."""
    frame = frame or body
    shift = len(frame) - len(body) if frame is not body else 0
    out: list[Measurement] = []
    seen: dict[str, int] = {}
    pos = 0
    while pos < len(body):
        obj_id = body[pos]
        obj = OBJECTS.get(obj_id)
        if obj is None:
            # Unknown ids have unknown lengths, so nothing after one can be read safely.
            raise MalformedAdvertError(f"unknown object id {obj_id:#04x}", frame, offset=pos + shift)
        start = pos + 1
        if obj.format in VARIABLE_LENGTH:
            if start >= len(body):
                raise MalformedAdvertError(f"{obj.name}: missing length byte", frame, offset=pos + shift)
            length = body[start] & 0x1F if obj.format is ValueFormat.COMMAND else body[start]
            if obj.format is ValueFormat.COMMAND:
                length += 1  # the opcode
            start += 1
        else:
            length = obj.length
        end = start + length
        if end > len(body):
            raise MalformedAdvertError(f"{obj.name}: truncated object", frame, offset=pos + shift)
        raw = bytes(body[start:end])
        index = seen.get(obj.name, 0)
        seen[obj.name] = index + 1
        out.append(Measurement(obj_id, obj.name, index, _value(obj, raw, frame, pos + shift), obj.unit, raw))
        pos = end
    return tuple(out)


def _value(obj: ObjectType, raw: bytes, frame: bytes, offset: int) -> Scalar:
    fmt = obj.format
    if fmt is ValueFormat.UINT or fmt is ValueFormat.SINT:
        n = int.from_bytes(raw, "little", signed=fmt is ValueFormat.SINT)
        return n if obj.factor == 1 else round(n * obj.factor, obj.decimals)
    if fmt is ValueFormat.BINARY:
        return raw[0] != 0  # the format says 0/1; like upstream, any non-zero is on
    if fmt is ValueFormat.BUTTON:
        return BUTTON_EVENTS.get(raw[0], f"unknown_{raw[0]:#04x}")
    if fmt is ValueFormat.DIMMER:
        event = DIMMER_EVENTS.get(raw[0], "none")
        steps = raw[1]
        return -steps if event == "rotate_left" else steps if event == "rotate_right" else 0
    if fmt is ValueFormat.TEXT:
        try:
            return raw.decode("utf-8")
        except UnicodeDecodeError as err:
            raise MalformedAdvertError(f"{obj.name}: not UTF-8", frame, offset=offset) from err
    if fmt is ValueFormat.RAW or fmt is ValueFormat.COMMAND:
        return raw.hex()
    if fmt is ValueFormat.TIMESTAMP or fmt is ValueFormat.DEVICE_TYPE:
        return int.from_bytes(raw, "little")
    # FIRMWARE: least significant component first.
    return ".".join(str(b) for b in reversed(raw))


# -- building ----------------------------------------------------------------------------------


def encode_object(object_id: int, value: Scalar) -> bytes:
    """One object: id + value bytes (for numbers, `value` is in engineering units). Raises ValueError."""
    obj = OBJECTS.get(object_id)
    if obj is None:
        raise ValueError(f"unknown object id {object_id:#04x}")
    fmt = obj.format
    if fmt in (ValueFormat.UINT, ValueFormat.SINT):
        if isinstance(value, str):
            raise ValueError(f"{obj.name} needs a number")
        n = round(float(value) / obj.factor) if obj.factor != 1 else int(value)
        return bytes([object_id]) + n.to_bytes(obj.length, "little", signed=fmt is ValueFormat.SINT)
    if fmt is ValueFormat.BINARY:
        return bytes([object_id, 1 if value else 0])
    if fmt in (ValueFormat.TIMESTAMP, ValueFormat.DEVICE_TYPE):
        return bytes([object_id]) + int(value).to_bytes(obj.length, "little")
    if fmt is ValueFormat.TEXT:
        raw = str(value).encode("utf-8")
        return bytes([object_id, len(raw)]) + raw
    if fmt is ValueFormat.RAW:
        raw = bytes.fromhex(str(value))
        return bytes([object_id, len(raw)]) + raw
    raise ValueError(f"{obj.name}: build it from raw bytes with encode_raw")


def encode_raw(object_id: int, raw: bytes) -> bytes:
    """One object from its exact data bytes (events, firmware versions, anything)."""
    obj = OBJECTS.get(object_id)
    if obj is None:
        raise ValueError(f"unknown object id {object_id:#04x}")
    if obj.format in VARIABLE_LENGTH:
        return bytes([object_id, len(raw) - 1 if obj.format is ValueFormat.COMMAND else len(raw)]) + raw
    if len(raw) != obj.length:
        raise ValueError(f"{obj.name} takes {obj.length} bytes, got {len(raw)}")
    return bytes([object_id]) + raw


def build(
    objects: Iterable[tuple[int, Scalar]] | bytes,
    *,
    mac: str | None = None,
    key: bytes | None = None,
    counter: int | None = None,
    trigger_based: bool = False,
    include_mac: bool = False,
) -> bytes:
    """Service data for `objects` ((id, value) pairs in ascending id order, or encoded bytes).

    With `key`, the payload is encrypted with `counter` (0..2**32-1) and needs `mac`.
    """
    body = objects if isinstance(objects, bytes) else b"".join(encode_object(i, v) for i, v in objects)
    info = (VERSION << 5) | (FLAG_TRIGGER_BASED if trigger_based else 0)
    info |= FLAG_MAC_INCLUDED if include_mac else 0
    prefix = b""
    if include_mac:
        if mac is None:
            raise ValueError("include_mac needs mac")
        prefix = mac_bytes(mac)[::-1]
    if key is None:
        return bytes([info]) + prefix + body
    if mac is None or counter is None:
        raise ValueError("encryption needs mac and counter")
    info |= FLAG_ENCRYPTED
    sealed = AESCCM(parse_key(key), tag_length=4).encrypt(nonce(mac_bytes(mac), info, counter), body, None)
    return bytes([info]) + prefix + sealed[:-4] + counter.to_bytes(4, "little") + sealed[-4:]


def describe(advert: Advert) -> dict[str, object]:
    """A JSON-able view of an Advert (for diagnostics and the `citynerve.decoders` entry point)."""
    return {
        "device_info": advert.device_info,
        "version": VERSION,
        "mac": advert.mac or None,
        "encrypted": advert.encrypted,
        "trigger_based": advert.trigger_based,
        "counter": advert.counter,
        "packet_id": advert.packet_id,
        "objects": [
            {
                "id": m.object_id,
                "name": m.name,
                "index": m.index,
                "value": m.value,
                "unit": m.unit,
                "raw": m.raw.hex(),
            }
            for m in advert.measurements
        ],
    }


def ids_of(measurements: Sequence[Measurement]) -> tuple[int, ...]:
    """Object ids in payload order (handy in tests and logs)."""
    return tuple(m.object_id for m in measurements)
