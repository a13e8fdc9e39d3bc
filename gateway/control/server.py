"""The local control socket the CLI and the status page use while the gateway runs.

A Unix socket readable by the gateway's user and group only (mode 0660): local technicians in the
service's group may ask; nobody on the network can.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import socket
import struct
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

from citynerve.gateway.api import GatewayError
from citynerve.gateway.control.protocol import MAX_LINE, encode
from citynerve.gateway.payload import PayloadError, load_json

log = logging.getLogger("citynerve.control")

Handler = Callable[[dict[str, Any]], Awaitable[Any]]


class ControlServer:
    """Serves `handlers[op](request)` on a Unix socket until cancelled."""

    def __init__(self, path: Path, handlers: dict[str, Handler]) -> None:
        self.path = path
        self.handlers = handlers

    async def run(self) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with contextlib.suppress(FileNotFoundError):
            self.path.unlink()  # a stale socket from a killed run; the run lock proves it is ours
        server = await asyncio.start_unix_server(self._client, path=str(self.path), limit=MAX_LINE)
        os.chmod(self.path, 0o660)
        try:
            async with server:
                await server.serve_forever()
        finally:
            with contextlib.suppress(FileNotFoundError):
                self.path.unlink()

    async def _client(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        peer = peer_of(writer)
        try:
            while line := await reader.readline():
                writer.write(encode(await self._answer(line, peer)))
                await writer.drain()
        except (ConnectionError, asyncio.LimitOverrunError, ValueError):
            pass
        finally:
            writer.close()

    async def _answer(self, line: bytes, peer: str = "unknown peer") -> dict[str, Any]:
        try:
            request = load_json(line, where="control", max_bytes=MAX_LINE)
        except PayloadError as err:  # bounded like every input: size, nesting, UTF-8 JSON
            return _error("BadRequest", f"not a JSON object: {err.reason}")
        if not isinstance(request, dict):
            return _error("BadRequest", "not a JSON object")
        request[PEER] = peer  # who asked, for audit lines; set here, never taken from the client
        op = request.get("op")
        handler = self.handlers.get(op) if isinstance(op, str) else None
        if handler is None:
            return _error("BadRequest", f"unknown op {op!r} (ops: {', '.join(sorted(self.handlers))})")
        try:
            return {"ok": True, "result": await handler(request)}
        except GatewayError as err:
            return _error(type(err).__name__, str(err))
        except (KeyError, TypeError, ValueError) as err:
            return _error("BadRequest", f"bad arguments for {op}: {err}")
        except Exception as err:  # a bug in one handler must not take the gateway down
            log.exception("control op %s failed", op)
            return _error(type(err).__name__, str(err))


PEER = "_peer"
"""Request key the server sets to the client's identity (`uid 1000 pid 4242`)."""


def peer_of(writer: asyncio.StreamWriter) -> str:
    """The connecting process's uid and pid (SO_PEERCRED), for audit lines."""
    sock = writer.get_extra_info("socket")
    try:
        creds = sock.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, struct.calcsize("3i"))
        pid, uid, _gid = struct.unpack("3i", creds)
    except (OSError, AttributeError, struct.error):
        return "unknown peer"
    return f"uid {uid} pid {pid} (control socket)"


def _error(type_: str, message: str) -> dict[str, Any]:
    return {"ok": False, "error": {"type": type_, "message": message}}
