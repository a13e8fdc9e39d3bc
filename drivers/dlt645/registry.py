"""DL/T 645 data identifiers (DIs): what each one holds and how its bytes read.

Table-driven, like bthome-ble's MEAS_TYPES: a DI maps to a frozen `DataItem` (format, length,
decimals, signed, unit). A profile or device adds DIs from config with `DataItem.from_config`.
Values travel LSB first on the wire; BCD values with `signed` carry the sign in the top bit of the
most significant byte (DL/T 645-2007 appendix A).
"""

from __future__ import annotations

import enum
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

from citynerve.gateway.api import FrameError

PROTOCOL = "dlt645"


class DataFormat(enum.StrEnum):
    BCD = "bcd"  # packed BCD, `decimals` implied decimal places, optional sign bit
    BINARY = "binary"  # unsigned little-endian integer (status words)
    ASCII = "ascii"  # text, sent reversed like every other value (meter numbers, asset codes)
    HEX = "hex"  # raw bytes shown as hex, most significant first


@dataclass(frozen=True, slots=True)
class DataItem:
    """One data identifier. `di` is the DI as written in the standard (DI3 DI2 DI1 DI0 for 2007)."""

    di: int
    name: str
    length: int
    fmt: DataFormat = DataFormat.BCD
    decimals: int = 0
    signed: bool = False
    unit: str = ""
    version: str = "2007"

    @property
    def di_hex(self) -> str:
        return f"{self.di:0{self.di_length * 2}X}"

    @property
    def di_length(self) -> int:
        return 4 if self.version == "2007" else 2

    def decode(self, data: bytes) -> float | int | str:
        """The value of this item's bytes (as sent, after removing the +0x33 offset)."""
        if len(data) != self.length:
            raise FrameError(PROTOCOL, f"DI {self.di_hex} holds {self.length} bytes, got {len(data)}", data)
        return decode_value(self, data)

    def encode(self, value: float | int | str) -> bytes:
        """Bytes for `value` (used by simulators and writes)."""
        return encode_value(self, value)


def parse_di(text: str | int) -> int:
    """A DI from config: '00010000', '0x9010', 0x9010."""
    if isinstance(text, int):
        return text
    cleaned = text.strip().replace(" ", "").removeprefix("0x").removeprefix("0X")
    if len(cleaned) not in (4, 8) or any(c not in "0123456789abcdefABCDEF" for c in cleaned):
        raise ValueError(f"a DI is 4 (1997) or 8 (2007) hex digits, got {text!r}")
    return int(cleaned, 16)


def _bcd_digits(data_msb_first: bytes, what: str) -> int:
    text = data_msb_first.hex()
    if not text.isdigit():  # a nibble A..F: not BCD
        bad = next(b for b in data_msb_first if b >> 4 > 9 or b & 0x0F > 9)
        raise FrameError(PROTOCOL, f"{what}: {bad:02X} is not BCD", data_msb_first)
    return int(text) if text else 0


def decode_value(item: DataItem, data: bytes) -> float | int | str:
    msb = data[::-1]
    if item.fmt is DataFormat.BINARY:
        return int.from_bytes(data, "little")
    if item.fmt is DataFormat.HEX:
        return msb.hex().upper()
    if item.fmt is DataFormat.ASCII:
        return msb.decode("ascii", errors="replace").strip("\x00 ")
    negative = False
    if item.signed and msb:
        negative = bool(msb[0] & 0x80)
        msb = bytes([msb[0] & 0x7F]) + msb[1:]
    raw = _bcd_digits(msb, f"DI {item.di_hex}")
    if negative:
        raw = -raw
    if item.decimals == 0:
        return raw
    return raw / 10**item.decimals


def max_raw(item: DataItem) -> int:
    """Largest BCD magnitude (before decimals) the item can hold."""
    digits = item.length * 2
    return (8 * 10 ** (digits - 1) if item.signed else 10**digits) - 1


def encode_value(item: DataItem, value: float | int | str) -> bytes:
    if item.fmt is DataFormat.BINARY:
        return int(value).to_bytes(item.length, "little")
    if item.fmt is DataFormat.HEX:
        return bytes.fromhex(str(value))[::-1].rjust(item.length, b"\x00")[: item.length]
    if item.fmt is DataFormat.ASCII:
        return str(value).encode("ascii").rjust(item.length, b" ")[: item.length][::-1]
    number = float(value) if isinstance(value, str) else value
    raw = round(abs(number) * 10**item.decimals)
    # registers roll over like the meter's counters; with a sign bit the top digit stops at 7
    raw %= max_raw(item) + 1
    text = f"{raw:0{item.length * 2}d}"
    msb = bytearray(bytes.fromhex(text))
    if item.signed and number < 0:
        msb[0] |= 0x80
    return bytes(msb[::-1])


def _items(
    version: str, rows: Iterable[tuple[int, str, int, DataFormat, int, bool, str]]
) -> dict[int, DataItem]:
    return {
        di: DataItem(di, name, length, fmt, decimals, signed, unit, version)
        for di, name, length, fmt, decimals, signed, unit in rows
    }


_B, _N = DataFormat.BCD, DataFormat.BINARY
_PHASES = (("a", 1), ("b", 2), ("c", 3))

DI_2007: Mapping[int, DataItem] = _items(
    "2007",
    [
        (0x00000000, "combined active total energy", 4, _B, 2, False, "kWh"),
        (0x00010000, "forward active total energy", 4, _B, 2, False, "kWh"),
        *[(0x00010000 + t, f"forward active energy tariff {t}", 4, _B, 2, False, "kWh") for t in range(1, 5)],
        (0x00020000, "reverse active total energy", 4, _B, 2, False, "kWh"),
        (0x00030000, "combined reactive 1 total energy", 4, _B, 2, True, "kvarh"),
        (0x00040000, "combined reactive 2 total energy", 4, _B, 2, True, "kvarh"),
        *[(0x02010000 + (n << 8), f"phase {p} voltage", 2, _B, 1, False, "V") for p, n in _PHASES],
        *[(0x02020000 + (n << 8), f"phase {p} current", 3, _B, 3, True, "A") for p, n in _PHASES],
        (0x02030000, "total active power", 3, _B, 4, True, "kW"),
        *[(0x02030000 + (n << 8), f"phase {p} active power", 3, _B, 4, True, "kW") for p, n in _PHASES],
        (0x02040000, "total reactive power", 3, _B, 4, True, "kvar"),
        *[(0x02040000 + (n << 8), f"phase {p} reactive power", 3, _B, 4, True, "kvar") for p, n in _PHASES],
        (0x02050000, "total apparent power", 3, _B, 4, True, "kVA"),
        (0x02060000, "total power factor", 2, _B, 3, True, ""),
        *[(0x02060000 + (n << 8), f"phase {p} power factor", 2, _B, 3, True, "") for p, n in _PHASES],
        (0x02800001, "neutral current", 3, _B, 3, True, "A"),
        (0x02800002, "grid frequency", 2, _B, 2, False, "Hz"),
        (0x02800004, "current active demand", 3, _B, 4, True, "kW"),
        (0x02800007, "meter temperature", 2, _B, 1, True, "°C"),
        (0x02800008, "clock battery voltage", 2, _B, 2, False, "V"),
        (0x04000101, "date and week (YYMMDDWW)", 4, DataFormat.HEX, 0, False, ""),
        (0x04000102, "time (hhmmss)", 3, DataFormat.HEX, 0, False, ""),
        (0x04000401, "communication address", 6, DataFormat.HEX, 0, False, ""),
        (0x04000402, "meter number", 6, DataFormat.HEX, 0, False, ""),
        *[(0x04000500 + n, f"run status word {n}", 2, _N, 0, False, "") for n in range(1, 8)],
    ],
)

DI_1997: Mapping[int, DataItem] = _items(
    "1997",
    [
        (0x9010, "forward active total energy", 4, _B, 2, False, "kWh"),
        *[(0x9010 + t, f"forward active energy tariff {t}", 4, _B, 2, False, "kWh") for t in range(1, 5)],
        (0x9020, "reverse active total energy", 4, _B, 2, False, "kWh"),
        (0x9110, "forward reactive total energy", 4, _B, 2, False, "kvarh"),
        *[(0xB610 + n, f"phase {p} voltage", 2, _B, 0, False, "V") for p, n in _PHASES],
        *[(0xB620 + n, f"phase {p} current", 2, _B, 2, False, "A") for p, n in _PHASES],
        (0xB630, "total active power", 3, _B, 4, False, "kW"),
        *[(0xB630 + n, f"phase {p} active power", 3, _B, 4, False, "kW") for p, n in _PHASES],
        (0xB640, "total reactive power", 2, _B, 2, False, "kvar"),
        (0xB650, "total power factor", 2, _B, 3, False, ""),
        (0xC020, "meter run status word", 1, _N, 0, False, ""),
        (0xC032, "meter number", 6, DataFormat.HEX, 0, False, ""),
    ],
)

BUILTIN: Mapping[str, Mapping[int, DataItem]] = {"2007": DI_2007, "1997": DI_1997}


class DataRegistry:
    """The DIs a meter knows: the built-in table of its version plus DIs added from config."""

    def __init__(self, version: str = "2007", extra: Iterable[DataItem] = ()) -> None:
        if version not in BUILTIN:
            raise ValueError(f"DL/T 645 version must be 2007 or 1997, got {version!r}")
        self.version = version
        self._items: dict[int, DataItem] = dict(BUILTIN[version])
        for item in extra:
            self._items[item.di] = item

    def get(self, di: int) -> DataItem | None:
        return self._items.get(di)

    def __contains__(self, di: int) -> bool:
        return di in self._items

    def items(self) -> list[DataItem]:
        return list(self._items.values())
