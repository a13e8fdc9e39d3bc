"""The local control socket the CLI and the status page use while the gateway runs.

A Unix socket readable by the gateway's user and group only (mode 0660): local technicians in the
service's group may ask; nobody on the network can. Even so, every client is bounded like network
input: at most `MAX_CLIENTS` connections (more are answered `Busy` and closed at once), a client
that sends nothing for `IDLE_TIMEOUT_S` or does not read its answer within `WRITE_DEADLINE_S` is
dropped, and a request over `MAX_LINE` bytes is answered `BadRequest` before the connection closes.
A stuck or hostile client never holds the descriptors the buses and the uplink need.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import socket
import struct
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

from citynerve.gateway.api import GatewayError
from citynerve.gateway.control.protocol import MAX_LINE, encode, error_data
from citynerve.gateway.payload import PayloadError, load_json

log = logging.getLogger("citynerve.control")

Handler = Callable[[dict[str, Any]], Awaitable[Any]]

MAX_CLIENTS = 16  # the CLI asks one request per connection; 16 open at once is a stuck client
IDLE_TIMEOUT_S = 60.0  # no complete request line within this: the client is gone or stuck
WRITE_DEADLINE_S = 10.0  # a client that does not read its answer is dropped
BUSY_LOG_INTERVAL_S = 60.0  # refusals over the limit are logged at most once per interval


class ControlServer:
    """Serves `handlers[op](request)` on a Unix socket until cancelled.

    The limits are keyword arguments so tests can shorten them; the defaults are the module's.
    """

    def __init__(
        self,
        path: Path,
        handlers: dict[str, Handler],
        *,
        max_clients: int = MAX_CLIENTS,
        idle_timeout_s: float = IDLE_TIMEOUT_S,
        write_deadline_s: float = WRITE_DEADLINE_S,
    ) -> None:
        self.path = path
        self.handlers = handlers
        self.max_clients = max_clients
        self.idle_timeout_s = idle_timeout_s
        self.write_deadline_s = write_deadline_s
        self.open_clients = 0
        self.refused_busy = 0
        self.timeouts = 0
        self._busy_logged = -BUSY_LOG_INTERVAL_S
        self._busy_unlogged = 0

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
        if self.open_clients >= self.max_clients:
            self._note_busy()
            with contextlib.suppress(OSError):
                writer.write(
                    encode(_error("Busy", f"control socket busy: {self.open_clients} connections open"))
                )
            writer.close()  # unread: a flood holds no more than the limit's descriptors
            return
        self.open_clients += 1
        peer = peer_of(writer)
        try:
            while True:
                try:
                    async with asyncio.timeout(self.idle_timeout_s):
                        line = await reader.readline()
                except TimeoutError:
                    self.timeouts += 1
                    log.debug(
                        "control client %s sent no request in %.0f s: closed", peer, self.idle_timeout_s
                    )
                    return
                except ValueError:  # the line is over the reader's limit: say so, then close
                    await self._send(writer, _error("BadRequest", f"request larger than {MAX_LINE} bytes"))
                    return
                if not line:
                    return
                if not await self._send(writer, await self._answer(line, peer)):
                    return
        except OSError:
            pass  # the client went away (reset, broken pipe)
        finally:
            self.open_clients -= 1
            writer.close()

    async def _send(self, writer: asyncio.StreamWriter, reply: dict[str, Any]) -> bool:
        """Write one reply; False when the client did not take it within the write deadline."""
        writer.write(encode(reply))
        try:
            async with asyncio.timeout(self.write_deadline_s):
                await writer.drain()
        except TimeoutError:
            self.timeouts += 1
            log.debug("control client did not read its answer in %.0f s: closed", self.write_deadline_s)
            writer.transport.abort()  # close() would wait for the unread answer to drain, fd held
            return False
        return True

    def _note_busy(self) -> None:
        """A connection refused over the limit: counted, and logged at most once per interval."""
        self.refused_busy += 1
        now = time.monotonic()
        if now - self._busy_logged >= BUSY_LOG_INTERVAL_S:
            held = f"; {self._busy_unlogged} more refused since the last line" if self._busy_unlogged else ""
            log.warning(
                "control socket busy: refused a connection (%d open, limit %d)%s",
                self.open_clients,
                self.max_clients,
                held,
            )
            self._busy_logged, self._busy_unlogged = now, 0
        else:
            self._busy_unlogged += 1

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
            return _error(type(err).__name__, str(err), error_data(err))
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


def _error(type_: str, message: str, data: dict[str, Any] | None = None) -> dict[str, Any]:
    error: dict[str, Any] = {"type": type_, "message": message}
    if data:
        error["data"] = data
    return {"ok": False, "error": error}
