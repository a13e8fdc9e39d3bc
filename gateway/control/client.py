"""Ask the running gateway over its control socket."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

from citynerve.gateway.control.protocol import MAX_REPLY, ControlError, GatewayNotRunningError, decode, encode


async def ask(socket_path: Path, op: str, *, timeout_s: float = 30.0, **args: Any) -> Any:
    """Send one request and return its result. Raises GatewayNotRunningError or ControlError."""
    try:
        reader, writer = await asyncio.wait_for(
            asyncio.open_unix_connection(str(socket_path), limit=MAX_REPLY), timeout=2.0
        )
    except FileNotFoundError:
        raise GatewayNotRunningError(
            str(socket_path), "no control socket (is `citynerve run` running?)"
        ) from None
    except ConnectionRefusedError:
        raise GatewayNotRunningError(str(socket_path), "socket left by a stopped gateway") from None
    except PermissionError:
        raise GatewayNotRunningError(
            str(socket_path), "permission denied (run as the gateway's user)"
        ) from None
    except TimeoutError:
        raise GatewayNotRunningError(str(socket_path), "the gateway did not accept the connection") from None
    try:
        writer.write(encode({"op": op, **args}))
        await writer.drain()
        line = await asyncio.wait_for(reader.readline(), timeout=timeout_s)
    finally:
        writer.close()
    if not line:
        raise ControlError("Disconnected", "the gateway closed the connection")
    reply = decode(line)
    if not reply.get("ok"):
        err = reply.get("error") or {}
        raise ControlError(str(err.get("type", "Error")), str(err.get("message", "failed")))
    return reply.get("result")


def gateway_running(socket_path: Path) -> bool:
    """True when a gateway answers on the socket (used by diag to choose: via gateway, or direct)."""
    try:
        asyncio.run(ask(socket_path, "ping", timeout_s=2.0))
    except (GatewayNotRunningError, ControlError, OSError):
        return False
    return True
