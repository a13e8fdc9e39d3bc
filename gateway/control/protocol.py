"""The control socket's wire format: one JSON object per line each way.

Request: {"op": "status"} or {"op": "<name>", ...arguments}. Reply: {"ok": true, "result": ...} or
{"ok": false, "error": {"type": "<ErrorClass>", "message": "...", "data": {...}}} (`data`: the typed
attributes of a device's error reply, so a diag through the gateway raises what a direct one does).
"""

from __future__ import annotations

import json
from typing import Any

from citynerve.gateway.api import DeviceExceptionError, GatewayError, PermanentError

MAX_LINE = 1 << 20  # a request
MAX_REPLY = 64 << 20  # a reply: the status of thousands of devices is a few MB


class ControlError(GatewayError):
    """The running gateway refused or failed a control request; `type` is its error class name,
    `data` the typed attributes of errors that carry them (`error_data`), else empty."""

    def __init__(self, type_: str, message: str, data: dict[str, Any] | None = None) -> None:
        self.type = type_
        self.message = message
        self.data: dict[str, Any] = data or {}
        super().__init__(message)


def error_data(err: GatewayError) -> dict[str, Any]:
    """The typed attributes a client needs to raise the error again as the driver raised it: a
    device's error reply is evidence in identification (a single-phase meter has no phase B),
    whichever route the request took."""
    if isinstance(err, DeviceExceptionError):
        return {
            "device_id": err.device_id,
            "code": err.code,
            "reason": err.reason,
            "points": list(err.points),
            "transient": err.transient,
        }
    return {}


def typed_error(err: ControlError) -> GatewayError:
    """The driver's typed error behind a ControlError where the reply carried it, else `err`."""
    if err.type != DeviceExceptionError.__name__ or not err.data:
        return err
    d = err.data
    try:
        return DeviceExceptionError(
            str(d["device_id"]),
            int(d["code"]),
            str(d["reason"]),
            tuple(str(p) for p in d.get("points") or ()),
            transient=bool(d.get("transient")),
        )
    except (KeyError, TypeError, ValueError):
        return err


class GatewayNotRunningError(PermanentError):
    def __init__(self, socket_path: str, reason: str) -> None:
        self.socket_path = socket_path
        self.reason = reason
        super().__init__(f"no gateway is running on {socket_path}: {reason}")


def encode(message: dict[str, Any]) -> bytes:
    return json.dumps(message, ensure_ascii=False, default=str).encode() + b"\n"


def decode(line: bytes) -> dict[str, Any]:
    obj = json.loads(line)
    if not isinstance(obj, dict):
        raise ValueError("expected a JSON object")
    return obj
