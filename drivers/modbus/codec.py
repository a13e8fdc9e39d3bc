"""Sans-I/O Modbus codec: values <-> registers, and RTU frames <-> fields. No sockets, no asyncio.

Everything here is pure and table-driven so it can be fuzzed:
- `TYPES`: data type -> struct format and register count. `encode_value` / `decode_registers`
  apply the word order (register order) and byte order (inside a register) of the point.
- `crc16`, `build_rtu_frame`, `parse_rtu_frame`: RTU framing. `FUNCTIONS` says, per function
  code, how long a request and a response are, so a captured frame can be split into its fields.
"""

from __future__ import annotations

import enum
import math
import struct
from collections.abc import Sequence
from dataclasses import dataclass

from citynerve.gateway.api import FrameError, shortest_float32

PROTOCOL = "modbus-rtu"


class CodecError(ValueError):
    """A value cannot be encoded as the point's type, or registers cannot be decoded."""


@dataclass(frozen=True, slots=True)
class TypeInfo:
    """How one data type is packed: struct format (big-endian) and the registers it takes."""

    fmt: str
    registers: int
    minimum: int | None = None
    maximum: int | None = None


TYPES: dict[str, TypeInfo] = {
    "int16": TypeInfo(">h", 1, -(2**15), 2**15 - 1),
    "uint16": TypeInfo(">H", 1, 0, 2**16 - 1),
    "int32": TypeInfo(">i", 2, -(2**31), 2**31 - 1),
    "uint32": TypeInfo(">I", 2, 0, 2**32 - 1),
    "int64": TypeInfo(">q", 4, -(2**63), 2**63 - 1),
    "uint64": TypeInfo(">Q", 4, 0, 2**64 - 1),
    "float32": TypeInfo(">f", 2),
    "float64": TypeInfo(">d", 4),
}
"""Numeric types; `bool` (a bit) and `string` (2 characters per register) are handled apart."""

ORDERS: dict[str, tuple[str, str]] = {
    "ABCD": ("big", "big"),
    "CDAB": ("little", "big"),
    "BADC": ("big", "little"),
    "DCBA": ("little", "little"),
}
"""Vendor names of the four 32-bit layouts -> (word_order, byte_order)."""


def _bytes_to_registers(raw: bytes, word_order: str, byte_order: str) -> tuple[int, ...]:
    words = [raw[i : i + 2] for i in range(0, len(raw), 2)]
    if byte_order == "little":
        words = [w[::-1] for w in words]
    if word_order == "little":
        words.reverse()
    return tuple(int.from_bytes(w, "big") for w in words)


def _registers_to_bytes(registers: Sequence[int], word_order: str, byte_order: str) -> bytes:
    words = [r.to_bytes(2, "big") for r in registers]
    if word_order == "little":
        words.reverse()
    if byte_order == "little":
        words = [w[::-1] for w in words]
    return b"".join(words)


def encode_value(
    value: bool | int | float | str,
    type_: str,
    *,
    word_order: str = "big",
    byte_order: str = "big",
    length: int | None = None,
    encoding: str = "ascii",
) -> tuple[int, ...]:
    """Registers that hold `value` as `type_`. Raises CodecError when it does not fit."""
    if type_ == "string":
        if not isinstance(value, str):
            raise CodecError(f"a string point needs text, got {type(value).__name__}")
        try:
            raw = value.encode(encoding)
        except UnicodeEncodeError as err:
            raise CodecError(f"text is not {encoding}: {err.reason}") from err
        size = 2 * (length if length is not None else (len(raw) + 1) // 2)
        if len(raw) > size:
            raise CodecError(f"text of {len(raw)} bytes does not fit {size // 2} registers")
        return _bytes_to_registers(raw.ljust(size, b"\x00"), word_order, byte_order)
    info = TYPES.get(type_)
    if info is None:
        raise CodecError(f"no register encoding for type {type_!r}")
    if isinstance(value, str) or value is None:
        raise CodecError(f"a {type_} point needs a number, got {type(value).__name__}")
    if info.minimum is not None and info.maximum is not None:
        if isinstance(value, float):
            if not value.is_integer():
                raise CodecError(f"{value!r} is not a whole number, {type_} holds integers")
            value = int(value)
        if not info.minimum <= value <= info.maximum:
            raise CodecError(f"{value} is out of range for {type_} ({info.minimum}..{info.maximum})")
        raw = struct.pack(info.fmt, int(value))
    else:
        try:
            raw = struct.pack(info.fmt, float(value))
        except OverflowError as err:
            raise CodecError(f"{value!r} is too large for {type_}") from err
    return _bytes_to_registers(raw, word_order, byte_order)


def decode_registers(
    registers: Sequence[int],
    type_: str,
    *,
    word_order: str = "big",
    byte_order: str = "big",
    encoding: str = "ascii",
) -> int | float | str:
    """The value held by `registers` as `type_` (as many registers as the type takes)."""
    if any(not 0 <= r <= 0xFFFF for r in registers):
        raise CodecError("a register holds 0..65535")
    raw = _registers_to_bytes(registers, word_order, byte_order)
    if type_ == "string":
        # Devices pad with NUL or spaces; a field technician wants the text, not the padding.
        return raw.split(b"\x00", 1)[0].decode(encoding, errors="replace").rstrip(" ")
    info = TYPES.get(type_)
    if info is None:
        raise CodecError(f"no register decoding for type {type_!r}")
    if len(registers) != info.registers:
        raise CodecError(f"{type_} takes {info.registers} registers, got {len(registers)}")
    value: int | float = struct.unpack(info.fmt, raw)[0]
    if type_ == "float32":
        # The shortest decimal that is the same float32: the platform sees 230.1, not the
        # widening noise 230.10000610351562 (docs/upstream-contract.md, "Values").
        return shortest_float32(value)
    return value


def register_bit(register: int, bit: int) -> bool:
    """Bit `bit` (0 = least significant) of a register."""
    return bool((register >> bit) & 1)


def is_finite(value: float) -> bool:
    """False for NaN and infinities, which meters send for 'no value'."""
    return math.isfinite(value)


# ---------------------------------------------------------------------------------------------
# RTU frames
# ---------------------------------------------------------------------------------------------


def _crc_table() -> tuple[int, ...]:
    table = []
    for byte in range(256):
        crc = byte
        for _ in range(8):
            crc = (crc >> 1) ^ 0xA001 if crc & 1 else crc >> 1
        table.append(crc)
    return tuple(table)


_CRC_TABLE = _crc_table()


def crc16(data: bytes) -> int:
    """Modbus CRC-16 (poly 0xA001 reflected, init 0xFFFF). Sent low byte first."""
    crc = 0xFFFF
    for byte in data:
        crc = (crc >> 8) ^ _CRC_TABLE[(crc ^ byte) & 0xFF]
    return crc


def build_rtu_frame(unit: int, pdu: bytes) -> bytes:
    """unit + PDU + CRC (low byte first)."""
    body = bytes([unit]) + pdu
    return body + crc16(body).to_bytes(2, "little")


class Direction(enum.StrEnum):
    REQUEST = "request"
    RESPONSE = "response"


class Shape(enum.Enum):
    """How the bytes after the function code are laid out."""

    ADDR_COUNT = "address+count"  # 4 bytes: start address, quantity
    ADDR_VALUE = "address+value"  # 4 bytes: address, value (FC 5/6 request and echo)
    ADDR_COUNT_BYTES = "address+count+bytes"  # FC 15/16 request: address, quantity, n, n bytes
    BYTES = "byte count+data"  # read responses: n, n bytes
    EXCEPTION = "exception code"  # 1 byte


@dataclass(frozen=True, slots=True)
class FunctionInfo:
    name: str
    request: Shape
    response: Shape
    registers: bool  # data are 16-bit registers (else packed bits)


FUNCTIONS: dict[int, FunctionInfo] = {
    1: FunctionInfo("read coils", Shape.ADDR_COUNT, Shape.BYTES, False),
    2: FunctionInfo("read discrete inputs", Shape.ADDR_COUNT, Shape.BYTES, False),
    3: FunctionInfo("read holding registers", Shape.ADDR_COUNT, Shape.BYTES, True),
    4: FunctionInfo("read input registers", Shape.ADDR_COUNT, Shape.BYTES, True),
    5: FunctionInfo("write single coil", Shape.ADDR_VALUE, Shape.ADDR_VALUE, False),
    6: FunctionInfo("write single register", Shape.ADDR_VALUE, Shape.ADDR_VALUE, True),
    15: FunctionInfo("write multiple coils", Shape.ADDR_COUNT_BYTES, Shape.ADDR_COUNT, False),
    16: FunctionInfo("write multiple registers", Shape.ADDR_COUNT_BYTES, Shape.ADDR_COUNT, True),
}

EXCEPTION_REASONS: dict[int, str] = {
    1: "illegal function",
    2: "illegal data address",
    3: "illegal data value",
    4: "server device failure",
    5: "acknowledge (busy with a long command)",
    6: "server device busy",
    8: "memory parity error",
    10: "gateway path unavailable",
    11: "gateway target device failed to respond",
}

GATEWAY_NO_TARGET: frozenset[int] = frozenset({10, 11})
"""Exceptions a TCP-to-RTU gateway answers for the device behind it: path unavailable (10), target
device failed to respond (11). The device's silence, not its answer."""
TRANSIENT_EXCEPTIONS: frozenset[int] = frozenset({5, 6, 10, 11})
"""Exception codes that may clear by themselves: busy/acknowledge, and a gateway whose target did
not answer (a timeout one hop further away)."""


def _expected_length(shape: Shape, data: bytes) -> int | None:
    """Total RTU frame length for `shape`, or None if the byte count is not in `data` yet."""
    if shape is Shape.ADDR_COUNT or shape is Shape.ADDR_VALUE:
        return 8
    if shape is Shape.EXCEPTION:
        return 5
    if shape is Shape.BYTES:
        return 5 + data[2] if len(data) > 2 else None
    return 9 + data[6] if len(data) > 6 else None  # ADDR_COUNT_BYTES


@dataclass(frozen=True, slots=True)
class RtuFrame:
    """One RTU frame split into its fields. `crc_ok` says whether the checksum matched."""

    unit: int
    function: int
    direction: Direction
    shape: Shape
    crc_expected: int
    crc_found: int
    address: int | None = None
    count: int | None = None
    value: int | None = None
    exception_code: int | None = None
    data: bytes = b""
    ambiguous: bool = False

    @property
    def crc_ok(self) -> bool:
        return self.crc_expected == self.crc_found

    @property
    def registers(self) -> tuple[int, ...]:
        """16-bit registers in `data` (register functions only)."""
        info = FUNCTIONS.get(self.function & 0x7F)
        if info is None or not info.registers or self.shape is Shape.EXCEPTION:
            return ()
        return tuple(int.from_bytes(self.data[i : i + 2], "big") for i in range(0, len(self.data) - 1, 2))

    @property
    def bits(self) -> tuple[bool, ...]:
        """Bits in `data`, LSB of the first byte first (bit functions only; padded to whole bytes)."""
        info = FUNCTIONS.get(self.function & 0x7F)
        if info is None or info.registers or self.shape is Shape.EXCEPTION:
            return ()
        return tuple(bool((byte >> i) & 1) for byte in self.data for i in range(8))


def _split(data: bytes, shape: Shape) -> dict[str, object]:
    body = data[2:-2]
    if shape is Shape.EXCEPTION:
        return {"exception_code": body[0]}
    if shape is Shape.ADDR_COUNT:
        return {"address": int.from_bytes(body[0:2], "big"), "count": int.from_bytes(body[2:4], "big")}
    if shape is Shape.ADDR_VALUE:
        return {"address": int.from_bytes(body[0:2], "big"), "value": int.from_bytes(body[2:4], "big")}
    if shape is Shape.BYTES:
        return {"data": bytes(body[1:])}
    return {
        "address": int.from_bytes(body[0:2], "big"),
        "count": int.from_bytes(body[2:4], "big"),
        "data": bytes(body[5:]),
    }


def parse_rtu_frame(data: bytes, direction: Direction | None = None) -> RtuFrame:
    """Split one complete RTU frame into fields. Guesses the direction from the length unless told.

    A wrong CRC is reported in the result (`crc_ok`), not raised: a technician wants to see the
    fields of a damaged frame. Raises FrameError when the bytes cannot be one frame at all.
    """
    if len(data) < 4:
        raise FrameError(PROTOCOL, f"{len(data)} bytes is shorter than the smallest frame (4)", bytes(data))
    unit, function = data[0], data[1]
    crc_found = int.from_bytes(data[-2:], "little")
    crc_expected = crc16(data[:-2])
    candidates: list[tuple[Direction, Shape]] = []
    if function & 0x80:
        if (function & 0x7F) == 0:
            raise FrameError(PROTOCOL, "function code 0x80 is not a valid exception reply", bytes(data))
        candidates = [(Direction.RESPONSE, Shape.EXCEPTION)]
    elif (info := FUNCTIONS.get(function)) is not None:
        candidates = [(Direction.REQUEST, info.request), (Direction.RESPONSE, info.response)]
    else:
        raise FrameError(PROTOCOL, f"function code {function} is not one this decoder knows", bytes(data))
    if direction is not None:
        candidates = [c for c in candidates if c[0] is direction]
    fitting = [(d, s) for d, s in candidates if _expected_length(s, data) == len(data)]
    if not fitting:
        lengths = ", ".join(
            f"{d.value} {_expected_length(s, data) if _expected_length(s, data) is not None else '?'}"
            for d, s in candidates
        )
        raise FrameError(
            PROTOCOL,
            f"length {len(data)} fits no frame of function {function} (expected {lengths or 'nothing'})",
            bytes(data),
        )
    chosen_direction, shape = fitting[0]
    parts = _split(data, shape)
    address = parts.get("address")
    count = parts.get("count")
    value = parts.get("value")
    code = parts.get("exception_code")
    payload = parts.get("data", b"")
    assert isinstance(payload, bytes)
    info = FUNCTIONS.get(function & 0x7F)
    if (
        info is not None
        and info.registers
        and shape in (Shape.BYTES, Shape.ADDR_COUNT_BYTES)
        and len(payload) % 2
    ):
        raise FrameError(PROTOCOL, f"odd byte count {len(payload)} for 16-bit registers", bytes(data))
    if info is not None and shape is Shape.ADDR_COUNT_BYTES and isinstance(count, int):
        needed = 2 * count if info.registers else (count + 7) // 8
        if len(payload) != needed:
            raise FrameError(
                PROTOCOL,
                f"byte count {len(payload)} does not match quantity {count} (needs {needed})",
                bytes(data),
            )
    return RtuFrame(
        unit=unit,
        function=function,
        direction=chosen_direction,
        shape=shape,
        crc_expected=crc_expected,
        crc_found=crc_found,
        address=address if isinstance(address, int) else None,
        count=count if isinstance(count, int) else None,
        value=value if isinstance(value, int) else None,
        exception_code=code if isinstance(code, int) else None,
        data=payload,
        ambiguous=len(fitting) > 1,
    )


def read_request_pdu(function: int, address: int, count: int) -> bytes:
    """PDU of a read (FC 1-4): function, start address, quantity."""
    return bytes([function]) + address.to_bytes(2, "big") + count.to_bytes(2, "big")


def read_response_pdu(function: int, values: Sequence[int] | Sequence[bool]) -> bytes:
    """PDU of a read response: registers (FC 3/4) or packed bits (FC 1/2)."""
    if FUNCTIONS[function].registers:
        payload = b"".join(int(v).to_bytes(2, "big") for v in values)
    else:
        packed = bytearray((len(values) + 7) // 8)
        for i, bit in enumerate(values):
            if bit:
                packed[i // 8] |= 1 << (i % 8)
        payload = bytes(packed)
    return bytes([function, len(payload)]) + payload
