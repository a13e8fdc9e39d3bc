"""The normalized advertisement record every scanner backend produces, and AD-structure parsing."""

from __future__ import annotations

import enum
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from citynerve.gateway.api import SYSTEM_CLOCK

BASE_UUID_SUFFIX = "-0000-1000-8000-00805f9b34fb"


class Backend(enum.StrEnum):
    """Which BLE stack scans. Each backend's library is imported only when it is chosen."""

    BLEAK = "bleak"  # BlueZ over D-Bus (Raspberry Pi OS), passive scanning where BlueZ allows it
    BUMBLE = "bumble"  # bumble's own host: an HCI dongle over USB/serial without BlueZ, or a virtual link


def uuid16_to_128(uuid16: int) -> str:
    """0xFCD2 -> '0000fcd2-0000-1000-8000-00805f9b34fb' (the Bluetooth base UUID)."""
    return f"0000{uuid16:04x}{BASE_UUID_SUFFIX}"


@dataclass(frozen=True, slots=True)
class Advertisement:
    """One advertisement as heard, whatever the backend.

    `platform_data` is the backend's own object, kept for debugging only: it is not a stable API.
    """

    address: str  # upper-case `AA:BB:CC:DD:EE:FF`
    rssi: int | None
    service_data: Mapping[str, bytes]  # 128-bit UUID (lower case) -> data
    ts: float  # utc_now() when the backend delivered it
    local_name: str | None = None
    platform_data: Any = field(default=None, compare=False, repr=False)
    # Monotonic time it was heard (durations such as the duplicate window; `ts` only stamps).
    mono: float = field(default_factory=SYSTEM_CLOCK.monotonic, compare=False, repr=False)

    def service_data_16(self, uuid16: int) -> bytes | None:
        """Service data for a 16-bit UUID, or None."""
        return self.service_data.get(uuid16_to_128(uuid16))


class AdStructureError(ValueError):
    """Advertising data whose length bytes do not add up."""


def parse_ad_structures(data: bytes) -> tuple[dict[str, bytes], str | None]:
    """Service data (16/32/128-bit UUIDs) and local name from raw advertising data (Core Vol 3 C.11).

    Raises AdStructureError when a length byte runs past the end.
    """
    service: dict[str, bytes] = {}
    name: str | None = None
    pos = 0
    while pos < len(data):
        length = data[pos]
        if length == 0:  # padding: the rest is zeros
            break
        end = pos + 1 + length
        if end > len(data):
            raise AdStructureError(f"AD structure at byte {pos} runs past the end ({length} > {len(data)})")
        ad_type, value = data[pos + 1], data[pos + 2 : end]
        if ad_type == 0x16 and len(value) >= 2:
            service[uuid16_to_128(int.from_bytes(value[:2], "little"))] = bytes(value[2:])
        elif ad_type == 0x20 and len(value) >= 4:
            service[f"{int.from_bytes(value[:4], 'little'):08x}{BASE_UUID_SUFFIX}"] = bytes(value[4:])
        elif ad_type == 0x21 and len(value) >= 16:
            h = value[:16][::-1].hex()
            service[f"{h[:8]}-{h[8:12]}-{h[12:16]}-{h[16:20]}-{h[20:]}"] = bytes(value[16:])
        elif ad_type in (0x08, 0x09):
            name = value.decode("utf-8", errors="replace")
        pos = end
    return service, name


def build_ad_structures(
    service_data: Mapping[int, bytes], *, flags: int | None = 0x06, name: str = ""
) -> bytes:
    """Raw advertising data with flags, 16-bit service data and a complete local name."""
    out = bytearray()
    if flags is not None:
        out += bytes([2, 0x01, flags])
    for uuid16, data in service_data.items():
        out += bytes([3 + len(data), 0x16]) + uuid16.to_bytes(2, "little") + data
    if name:
        raw = name.encode()
        out += bytes([1 + len(raw), 0x09]) + raw
    if len(out) > 31:
        raise ValueError(f"legacy advertising data is at most 31 bytes, got {len(out)}")
    return bytes(out)
