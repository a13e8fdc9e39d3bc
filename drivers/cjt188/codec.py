"""CJ/T 188-2004 / -2018 frames (water, gas, heat meters), sans I/O.

Frame: `[FE...] 68 T A0..A6 C L DATA CS 16`; DATA = DI(2) SER payload; no +0x33 offset; CS is the
byte sum from 68 through the last data byte. The DI byte order differs in the field (`90 1F` in
2004-style firmware, `1F 90` in 2018-style): requests use the device's order, replies are accepted
in either. Only `FrameError` leaves this module (and `DeviceExceptionError` from `check_reply`).
"""

from __future__ import annotations

import enum
from dataclasses import dataclass

from citynerve.drivers.serialio.resync import ResyncParser, checksum, frame_body
from citynerve.gateway.api import DeviceExceptionError, FrameError

PROTOCOL = "cjt188"
PREAMBLE = b"\xfe\xfe\xfe\xfe"
WILDCARD = "AAAAAAAAAAAAAA"
_HEADER = 11  # 68 T A0..A6 C L

DI_READ = 0x901F  # current readings
DI_ADDRESS = 0x810A  # read address
DI_VALVE = 0xA017  # valve control: 55 open, 99 close
VALVE_OPEN, VALVE_CLOSE = 0x55, 0x99


class Control(enum.IntEnum):
    READ = 0x01
    READ_ADDRESS = 0x03
    WRITE = 0x04
    WRITE_ADDRESS = 0x15


class DiOrder(enum.StrEnum):
    """How a device sends the 2-byte DI: `90 1F` (high byte first) or `1F 90` (low byte first)."""

    HIGH_FIRST = "901F"
    LOW_FIRST = "1F90"


METER_TYPES = {
    0x10: "cold water",
    0x11: "hot water",
    0x12: "drinking water",
    0x13: "reclaimed water",
    0x20: "heat",
    0x21: "cooling",
    0x22: "heat and cooling",
    0x30: "gas",
    **{t: "custom" for t in range(0x40, 0x4A)},
    0xAA: "any (wildcard)",
}
HEAT_TYPES = frozenset({0x20, 0x21, 0x22})

UNITS = {
    0x2C: "m3",
    0x29: "L",
    0x35: "m3/h",
    0x32: "L/h",
    0x05: "kWh",
    0x17: "kW",
    0x11: "GJ",
    0x02: "Wh",
    0x08: "MWh",
    0x0E: "MJ",
    0x14: "W",
    0x1A: "MW",
}
UNIT_CODES = {v: k for k, v in UNITS.items()}


def meter_type_name(meter_type: int) -> str:
    return METER_TYPES.get(meter_type, "unknown")


def encode_address(address: str) -> bytes:
    """14 BCD digits (or the AA wildcard), sent low byte first."""
    text = address.strip()
    if len(text) != 14 or not all(c in "0123456789Aa" for c in text):
        raise FrameError(PROTOCOL, f"address must be 14 BCD digits, got {address!r}")
    return bytes.fromhex(text)[::-1]


def decode_address(raw: bytes) -> str:
    return raw[::-1].hex().upper()


def di_bytes(di: int, order: DiOrder | str = DiOrder.HIGH_FIRST) -> bytes:
    return di.to_bytes(2, "big" if DiOrder(order) is DiOrder.HIGH_FIRST else "little")


def di_matches(raw: bytes, di: int) -> bool:
    """Replies are accepted in either DI byte order."""
    return raw == di.to_bytes(2, "big") or raw == di.to_bytes(2, "little")


@dataclass(frozen=True, slots=True)
class Frame:
    meter_type: int
    address: str
    control: int
    data: bytes
    raw: bytes = b""

    @property
    def function(self) -> int:
        return self.control & 0x3F

    @property
    def is_reply(self) -> bool:
        return bool(self.control & 0x80)

    @property
    def is_error(self) -> bool:
        return bool(self.control & 0x40)

    @property
    def di(self) -> bytes:
        return self.data[:2]

    @property
    def ser(self) -> int | None:
        return self.data[2] if len(self.data) >= 3 else None


def encode_frame(meter_type: int, address: str, control: int, data: bytes, *, preamble: bool = True) -> bytes:
    if len(data) > 255:
        raise FrameError(PROTOCOL, f"data field of {len(data)} bytes exceeds 255")
    body = (
        bytes([0x68, meter_type & 0xFF]) + encode_address(address) + bytes([control & 0xFF, len(data)]) + data
    )
    return (PREAMBLE if preamble else b"") + body + bytes([checksum(body), 0x16])


def build_read(
    meter_type: int,
    address: str,
    *,
    di: int = DI_READ,
    ser: int = 0,
    order: DiOrder | str = DiOrder.HIGH_FIRST,
    preamble: bool = True,
) -> bytes:
    return encode_frame(
        meter_type, address, Control.READ, di_bytes(di, order) + bytes([ser & 0xFF]), preamble=preamble
    )


def build_read_address(
    *, ser: int = 0, order: DiOrder | str = DiOrder.HIGH_FIRST, preamble: bool = True
) -> bytes:
    data = di_bytes(DI_ADDRESS, order) + bytes([ser & 0xFF])
    return encode_frame(0xAA, WILDCARD, Control.READ_ADDRESS, data, preamble=preamble)


def build_valve(
    meter_type: int,
    address: str,
    *,
    open_valve: bool,
    ser: int = 0,
    order: DiOrder | str = DiOrder.HIGH_FIRST,
    preamble: bool = True,
) -> bytes:
    data = di_bytes(DI_VALVE, order) + bytes([ser & 0xFF, VALVE_OPEN if open_valve else VALVE_CLOSE])
    return encode_frame(meter_type, address, Control.WRITE, data, preamble=preamble)


def parse_frame(data: bytes) -> Frame:
    """Exactly one frame (leading FE allowed). Raises FrameError naming what is wrong."""
    body = frame_body(data, protocol=PROTOCOL, header=_HEADER, length_at=10)
    length = body[10]
    return Frame(
        body[1],
        decode_address(body[2:9]),
        body[9],
        bytes(body[_HEADER : _HEADER + length]),
        body,
    )


class StreamParser(ResyncParser[Frame]):
    """CJ/T 188 frames out of a half-duplex byte stream (see ResyncParser)."""

    protocol = PROTOCOL
    header = _HEADER
    length_at = 10

    def parse(self, data: bytes) -> Frame:
        return parse_frame(data)


def check_reply(frame: Frame, device_id: str, points: tuple[str, ...] = ()) -> None:
    """Raise DeviceExceptionError for an abnormal reply (C bit 6): DI SER ST or just ST."""
    if not frame.is_error:
        return
    code = frame.data[3] if len(frame.data) >= 4 else (frame.data[-1] if frame.data else 0)
    raise DeviceExceptionError(device_id, code, f"meter reported an abnormal reply (ST {code:02X})", points)
