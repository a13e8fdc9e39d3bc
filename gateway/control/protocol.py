"""The control socket's wire format: one JSON object per line each way.

Request: {"op": "status"} or {"op": "<name>", ...arguments}. Reply: {"ok": true, "result": ...} or
{"ok": false, "error": {"type": "<ErrorClass>", "message": "..."}}.
"""

from __future__ import annotations

import json
from typing import Any

from citynerve.gateway.api import GatewayError, PermanentError

MAX_LINE = 1 << 20  # a request
MAX_REPLY = 64 << 20  # a reply: the status of thousands of devices is a few MB


class ControlError(GatewayError):
    """The running gateway refused or failed a control request; `type` is its error class name."""

    def __init__(self, type_: str, message: str) -> None:
        self.type = type_
        self.message = message
        super().__init__(message)


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
