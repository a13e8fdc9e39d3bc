"""`citynerve diag decode cjt188 HEX`: every field of one captured CJ/T 188 frame.

A bad checksum is reported (expected vs found), not raised. Options: `status_map` (a name from
`readings.STATUS_MAPS`, default "standard").
"""

from __future__ import annotations

from typing import Any

from citynerve.drivers.cjt188 import codec
from citynerve.drivers.cjt188.readings import STATUS_MAPS, parse_901f
from citynerve.gateway.api import FrameError

_CONTROLS = {0x01: "read data", 0x03: "read address", 0x04: "write data", 0x15: "write address"}
_DIS = {0x901F: "current readings", 0x810A: "read address", 0xA017: "valve control", 0x8102: "price table"}


def decode(data: bytes, **options: Any) -> dict[str, Any]:
    start = 0
    while start < len(data) and data[start] == 0xFE:
        start += 1
    body = data[start:]
    if len(body) < 13:
        raise FrameError(
            codec.PROTOCOL, f"too short for a frame: {len(body)} bytes after the FE preamble", data
        )
    if body[0] != 0x68:
        raise FrameError(codec.PROTOCOL, "not a CJ/T 188 frame: expected 68 (after FE)", data)
    meter_type, control, length = body[1], body[9], body[10]
    total = 11 + length + 2
    if len(body) < total:
        raise FrameError(codec.PROTOCOL, f"truncated: L={length} needs {total} bytes, got {len(body)}", data)
    payload = body[11 : 11 + length]
    expected, found = codec.checksum(body[: total - 2]), body[total - 2]
    fn = control & 0x3F
    out: dict[str, Any] = {
        "protocol": "CJ/T 188",
        "preamble_fe": start,
        "meter_type": f"{meter_type:02X}",
        "meter_type_name": codec.meter_type_name(meter_type),
        "address": codec.decode_address(body[2:9]),
        "control": {
            "hex": f"{control:02X}",
            "direction": "reply (meter to master)" if control & 0x80 else "request (master to meter)",
            "abnormal": bool(control & 0x40),
            "function": f"{fn:02X}",
            "function_name": _CONTROLS.get(fn, "unknown"),
        },
        "length": length,
        "data": payload.hex(" ").upper(),
        "checksum": {"expected": f"{expected:02X}", "found": f"{found:02X}", "ok": expected == found},
        "end": {"found": f"{body[total - 1]:02X}", "ok": body[total - 1] == 0x16},
        "trailing_bytes": len(body) - total,
    }
    if len(payload) < 3:
        return out
    di_raw = payload[:2]
    di = next((d for d in _DIS if codec.di_matches(di_raw, d)), int.from_bytes(di_raw, "big"))
    out["di"] = f"{di:04X}"
    out["di_order"] = (
        "90 1F (high byte first)" if di_raw == di.to_bytes(2, "big") else "1F 90 (low byte first)"
    )
    out["di_name"] = _DIS.get(di, "unknown")
    out["ser"] = payload[2]
    rest = payload[3:]
    if control & 0x40:
        out["status"] = rest.hex(" ").upper()
        return out
    if di == codec.DI_READ and control & 0x80 and rest:
        smap = STATUS_MAPS.get(str(options.get("status_map", "standard")), STATUS_MAPS["standard"])
        try:
            out["values"] = parse_901f(rest, meter_type, smap)
        except FrameError as err:
            out["values_error"] = err.reason
    elif di == codec.DI_VALVE and rest:
        if control & 0x80:
            out["status"] = rest.hex(" ").upper()
        else:
            cmd = rest[0]
            out["valve_command"] = {0x55: "open", 0x99: "close"}.get(cmd, f"unknown ({cmd:02X})")
    return out
