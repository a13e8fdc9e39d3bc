"""DL/T 645-2007 / -1997 frames, sans I/O: build requests, parse replies, resynchronise a stream.

Frame: `[FE x 0..4] 68 A0..A5 68 C L DATA CS 16`. The address is 12 BCD digits sent low byte first;
every DATA byte travels +0x33; CS is the byte sum from the first 68 through the last data byte.
Only `FrameError` leaves this module (and `DeviceExceptionError` from `check_reply`).
"""

from __future__ import annotations

import enum
from dataclasses import dataclass

from citynerve.drivers.dlt645.registry import PROTOCOL
from citynerve.drivers.serialio.resync import ResyncParser, checksum, frame_body
from citynerve.gateway.api import DeviceExceptionError, FrameError

PREAMBLE = b"\xfe\xfe\xfe\xfe"
WILDCARD = "AAAAAAAAAAAA"  # read-address: any meter (only one may be on the bus)
BROADCAST = "999999999999"  # no meter answers
MAX_DATA = 200
_HEADER = 10  # 68 + 6 address + 68 + C + L


class Function(enum.IntEnum):
    """Function codes (bits 4..0 of C). 2007 unless named 1997. Change-baud (17) is deliberately
    absent: libraries disagree on its encoding and a wrong one strands the meter."""

    BROADCAST_TIME = 0x08
    READ = 0x11
    READ_FOLLOWUP = 0x12
    READ_ADDRESS = 0x13
    WRITE = 0x14
    FREEZE = 0x16
    READ_1997 = 0x01
    READ_FOLLOWUP_1997 = 0x02


ERR_BITS_2007 = {
    0: "other error",
    1: "no such data",
    2: "password error or unauthorised",
    3: "baud rate cannot be changed",
    4: "too many yearly time zones",
    5: "too many daily periods",
    6: "too many tariffs",
}
ERR_BITS_1997 = {
    0: "illegal data",
    1: "data identifier error",
    2: "password error",
    4: "too many yearly time zones",
    5: "too many daily periods",
    6: "too many tariffs",
}


def encode_address(address: str) -> bytes:
    """'000000000161' -> 61 01 00 00 00 00. Accepts the AA wildcard and 99 broadcast too."""
    text = address.strip()
    if len(text) != 12 or not all(c in "0123456789Aa" for c in text):
        raise FrameError(PROTOCOL, f"address must be 12 BCD digits, got {address!r}")
    return bytes.fromhex(text)[::-1]


def decode_address(raw: bytes) -> str:
    return raw[::-1].hex().upper()


_PLUS33 = bytes((b + 0x33) & 0xFF for b in range(256))
_MINUS33 = bytes((b - 0x33) & 0xFF for b in range(256))


def _offset(data: bytes, delta: int) -> bytes:
    return data.translate(_PLUS33 if delta == 0x33 else _MINUS33)


@dataclass(frozen=True, slots=True)
class Frame:
    """One parsed frame. `data` is the DATA field with the +0x33 offset removed."""

    address: str
    control: int
    data: bytes
    raw: bytes = b""  # the frame's bytes from the first 68 to 16, as received

    @property
    def function(self) -> int:
        return self.control & 0x1F

    @property
    def is_reply(self) -> bool:
        return bool(self.control & 0x80)

    @property
    def is_error(self) -> bool:
        return bool(self.control & 0x40)

    @property
    def more_follows(self) -> bool:
        return bool(self.control & 0x20)


def encode_frame(address: str, control: int, data: bytes = b"", *, preamble: bool = True) -> bytes:
    """Bytes on the wire for one frame, FE x4 wake-up preamble first unless `preamble` is False."""
    if len(data) > MAX_DATA:
        raise FrameError(PROTOCOL, f"data field of {len(data)} bytes exceeds {MAX_DATA}")
    body = (
        b"\x68" + encode_address(address) + b"\x68" + bytes([control & 0xFF, len(data)]) + _offset(data, 0x33)
    )
    return (PREAMBLE if preamble else b"") + body + bytes([checksum(body), 0x16])


def di_bytes(di: int, version: str = "2007") -> bytes:
    """DI sent DI0 first."""
    return di.to_bytes(4 if version == "2007" else 2, "little")


def build_read(address: str, di: int, version: str = "2007", *, preamble: bool = True) -> bytes:
    fn = Function.READ if version == "2007" else Function.READ_1997
    return encode_frame(address, fn, di_bytes(di, version), preamble=preamble)


def build_read_followup(address: str, di: int, seq: int, *, preamble: bool = True) -> bytes:
    """Ask for frame `seq` (1..255) of a reply that said more frames follow (2007 only)."""
    return encode_frame(
        address, Function.READ_FOLLOWUP, di_bytes(di) + bytes([seq & 0xFF]), preamble=preamble
    )


def build_read_address(*, preamble: bool = True) -> bytes:
    return encode_frame(WILDCARD, Function.READ_ADDRESS, preamble=preamble)


def build_reply(
    address: str, function: int, data: bytes, *, more: bool = False, preamble: bool = False
) -> bytes:
    """A meter's normal reply (simulators, tests)."""
    return encode_frame(address, 0x80 | (0x20 if more else 0) | function, data, preamble=preamble)


def build_error_reply(address: str, function: int, err: int, *, preamble: bool = False) -> bytes:
    return encode_frame(address, 0xC0 | function, bytes([err]), preamble=preamble)


def parse_frame(data: bytes) -> Frame:
    """Parse exactly one frame (leading FE allowed). Raises FrameError naming what is wrong."""
    body = frame_body(data, protocol=PROTOCOL, header=_HEADER, length_at=9, second_68_at=7)
    length = body[9]
    return Frame(
        address=decode_address(body[1:7]),
        control=body[8],
        data=_offset(body[_HEADER : _HEADER + length], -0x33),
        raw=body,
    )


class StreamParser(ResyncParser[Frame]):
    """DL/T 645 frames out of a half-duplex byte stream (see ResyncParser)."""

    protocol = PROTOCOL
    header = _HEADER
    length_at = 9

    def parse(self, data: bytes) -> Frame:
        return parse_frame(data)

    def check_header(self, buf: bytearray, pos: int) -> FrameError | None:
        # The second 68 at offset 7 tells a header from noise before the length byte is in.
        if len(buf) - pos > 7 and buf[pos + 7] != 0x68:
            return FrameError(PROTOCOL, "no second 68 at offset 7", bytes(buf[pos : pos + min(_HEADER, 8)]))
        return None


def err_names(err: int, version: str = "2007") -> list[str]:
    table = ERR_BITS_2007 if version == "2007" else ERR_BITS_1997
    names = [table.get(bit, f"bit {bit}") for bit in range(8) if err & (1 << bit)]
    return names or ["unspecified error"]


def check_reply(frame: Frame, device_id: str, points: tuple[str, ...] = (), version: str = "2007") -> None:
    """Raise DeviceExceptionError for an abnormal reply (D1 / C1), naming the ERR bits."""
    if not frame.is_error:
        return
    err = frame.data[0] if frame.data else 0
    names = err_names(err, version)
    # "other error" alone is a busy or confused meter: worth a retry; the rest will not change
    transient = err in (0, 0x01)
    raise DeviceExceptionError(device_id, err, ", ".join(names), points, transient=transient)
