"""`citynerve diag decode dlt645 HEX`: every field of one captured DL/T 645 frame, for a technician.

A bad checksum is reported (expected vs found), not raised: the technician wants to see the rest.
Bytes that cannot be a frame at all (too short, no 68 start bytes) raise FrameError.
"""

from __future__ import annotations

from typing import Any

from citynerve.drivers.dlt645 import codec
from citynerve.drivers.dlt645.registry import BUILTIN, PROTOCOL
from citynerve.gateway.api import FrameError

_FUNCTIONS_2007 = {
    0x08: "broadcast time",
    0x11: "read data",
    0x12: "read follow-up data",
    0x13: "read address",
    0x14: "write data",
    0x15: "write address",
    0x16: "freeze",
    0x17: "change baud rate",
    0x18: "change password",
    0x19: "clear maximum demand",
    0x1A: "clear meter",
    0x1B: "clear events",
}
_FUNCTIONS_1997 = {0x01: "read data", 0x02: "read follow-up data", 0x04: "write data", 0x0A: "write address"}


def decode(data: bytes, **options: Any) -> dict[str, Any]:
    """Decode one frame. Options: `version` ("2007" or "1997"; guessed from the function code)."""
    start = 0
    while start < len(data) and data[start] == 0xFE:
        start += 1
    body = data[start:]
    if len(body) < 12:
        raise FrameError(PROTOCOL, f"too short for a frame: {len(body)} bytes after the FE preamble", data)
    if body[0] != 0x68 or body[7] != 0x68:
        raise FrameError(PROTOCOL, "not a DL/T 645 frame: expected 68 at offsets 0 and 7 (after FE)", data)
    control, length = body[8], body[9]
    total = 10 + length + 2
    if len(body) < total:
        raise FrameError(PROTOCOL, f"truncated: L={length} needs {total} bytes, got {len(body)}", data)
    fn = control & 0x1F
    version = str(options.get("version") or ("1997" if fn in _FUNCTIONS_1997 else "2007"))
    names = _FUNCTIONS_2007 if version == "2007" else _FUNCTIONS_1997
    raw_data = body[10 : 10 + length]
    plain = bytes((b - 0x33) & 0xFF for b in raw_data)
    expected, found = codec.checksum(body[: total - 2]), body[total - 2]
    out: dict[str, Any] = {
        "protocol": "DL/T 645",
        "version": version,
        "preamble_fe": start,
        "address": codec.decode_address(body[1:7]),
        "control": {
            "hex": f"{control:02X}",
            "direction": "reply (slave to master)" if control & 0x80 else "request (master to slave)",
            "abnormal": bool(control & 0x40),
            "more_follows": bool(control & 0x20),
            "function": f"{fn:02X}",
            "function_name": names.get(fn, "unknown"),
        },
        "length": length,
        "data_on_wire": raw_data.hex(" ").upper(),
        "data": plain.hex(" ").upper(),
        "checksum": {"expected": f"{expected:02X}", "found": f"{found:02X}", "ok": expected == found},
        "end": {"found": f"{body[total - 1]:02X}", "ok": body[total - 1] == 0x16},
        "trailing_bytes": len(body) - total,
    }
    if control & 0x40:
        err = plain[0] if plain else 0
        out["error"] = {"code": f"{err:02X}", "bits": codec.err_names(err, version)}
        return out
    di_len = 4 if version == "2007" else 2
    if fn == 0x13:
        if len(plain) >= 6:
            out["meter_address"] = codec.decode_address(plain[:6])
        return out
    if fn in (0x11, 0x12, 0x01, 0x02) and len(plain) >= di_len:
        di = int.from_bytes(plain[:di_len], "little")
        item = BUILTIN[version].get(di)
        out["di"] = f"{di:0{di_len * 2}X}"
        out["di_name"] = item.name if item else "not in the built-in table"
        value = plain[di_len:]
        if fn == 0x12 and control & 0x80 and value:
            out["seq"] = value[-1]
            value = value[:-1]
        elif fn == 0x12 and len(value) == 1:
            out["seq"] = value[0]
            value = b""
        if value:
            out["value_bytes"] = value.hex(" ").upper()
            if item is not None and len(value) == item.length:
                try:
                    out["value"] = item.decode(value)
                    out["unit"] = item.unit
                except FrameError as err:
                    out["value_error"] = err.reason
            elif item is not None:
                out["value_error"] = f"{item.name} holds {item.length} bytes, frame has {len(value)}"
    return out
