"""Ask the running gateway over its control socket."""

from __future__ import annotations

import asyncio
import contextlib
import socket
from pathlib import Path
from typing import Any

from citynerve.gateway.control.protocol import (
    MAX_LINE,
    MAX_REPLY,
    ControlError,
    GatewayNotRunningError,
    decode,
    encode,
)


async def ask(socket_path: Path, op: str, *, timeout_s: float = 30.0, **args: Any) -> Any:
    """Send one request and return its result. Raises GatewayNotRunningError or ControlError.

    Every failure is one of the two: a request over MAX_LINE is refused here (the gateway would
    refuse it too), a connection reset or a reply too slow or too large is a ControlError.
    """
    request = encode({"op": op, **args})
    if len(request) > MAX_LINE:
        raise ControlError("BadRequest", f"request larger than {MAX_LINE} bytes ({len(request)})")
    loop = asyncio.get_running_loop()
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
        sock.setblocking(False)
        try:
            async with asyncio.timeout(2.0):
                await loop.sock_connect(sock, str(socket_path))
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
            raise GatewayNotRunningError(
                str(socket_path), "the gateway did not accept the connection"
            ) from None
        except OSError as err:
            raise GatewayNotRunningError(str(socket_path), err.strerror or str(err)) from None
        try:
            async with asyncio.timeout(timeout_s):
                with contextlib.suppress(OSError):
                    # Refused early (busy), the gateway has answered and closed: read why.
                    await loop.sock_sendall(sock, request)
                line = await _read_line(loop, sock)
        except TimeoutError:
            raise ControlError("Timeout", f"the gateway did not answer {op!r} in {timeout_s:g} s") from None
        except OSError as err:
            raise ControlError("Disconnected", f"the connection to the gateway failed: {err}") from None
    if not line:
        raise ControlError("Disconnected", "the gateway closed the connection")
    try:
        reply = decode(line)
    except ValueError as err:
        raise ControlError("BadReply", f"the gateway's answer is not a JSON object: {err}") from None
    if not reply.get("ok"):
        error = reply.get("error") or {}
        data = error.get("data")
        raise ControlError(
            str(error.get("type", "Error")),
            str(error.get("message", "failed")),
            data if isinstance(data, dict) else None,
        )
    return reply.get("result")


async def _read_line(loop: asyncio.AbstractEventLoop, sock: socket.socket) -> bytes:
    """One reply line (b"" when the gateway closed before a whole line), at most MAX_REPLY."""
    buf = bytearray()
    while True:
        chunk = await loop.sock_recv(sock, 1 << 16)
        if not chunk:
            return b""
        end = chunk.find(b"\n")
        if end >= 0:
            return bytes(buf + chunk[: end + 1])
        buf += chunk
        if len(buf) > MAX_REPLY:
            raise ControlError("BadReply", f"the gateway's answer is larger than {MAX_REPLY} bytes")


def gateway_running(socket_path: Path) -> bool:
    """True when a gateway runs on the socket: it answers, or it is there but busy or slow (a
    ControlError: something took the connection). False only when none runs."""
    try:
        asyncio.run(ask(socket_path, "ping", timeout_s=2.0))
    except GatewayNotRunningError:
        return False
    except ControlError:  # busy or slow: running all the same
        pass
    return True
