"""`citynerve.decoders` entry point `bthome`: decode one service-data payload for a technician."""

from __future__ import annotations

from typing import Any

from citynerve.drivers.bthome.codec import describe, parse, parse_key
from citynerve.drivers.bthome.errors import MalformedAdvertError


def decode(
    data: bytes, *, mac: str | None = None, key: str | bytes | None = None, **_: Any
) -> dict[str, Any]:
    """Every field of a BTHome v2 payload (the bytes after the 0xFCD2 UUID), JSON-able.

    `key` is 32 hex digits or 16 bytes; `mac` is needed to decrypt when the payload does not carry it.
    Raises FrameError subclasses (MalformedAdvertError, MissingKeyError, DecryptionError).
    """
    try:
        raw_key = parse_key(key) if key is not None else None
    except ValueError as err:
        raise MalformedAdvertError(f"bad key: {err}") from err
    out = describe(parse(data, mac=mac, key=raw_key))
    out["protocol"] = "bthome"
    out["mic_ok"] = True if out["encrypted"] else None  # parse raised otherwise
    return out
