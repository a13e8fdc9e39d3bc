"""The local status page and /metrics: a small HTTP/1.1 server on asyncio streams (GET and HEAD).

Routes: `/` the page, `/static/*` its script and style (packaged, no CDN: meter rooms are often
offline), `/api/status` the page's JSON (polled every `refresh_s`), `/metrics` Prometheus text,
`/healthz` for a load balancer or a watchdog. One request per connection keeps it small; a status
snapshot is cached briefly so several phones on the page do not multiply the gateway's work.

Failures of the page never stop the gateway: `run()` logs why it cannot serve and returns.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import contextlib
import errno
import hmac
import json
import logging
import resource
import socket
import time
from pathlib import Path
from typing import Any

from citynerve.gateway import shipped
from citynerve.gateway.api import PermanentError
from citynerve.gateway.web.config import WebConfig, is_loopback
from citynerve.gateway.web.limits import (
    REQUEST_DEADLINE_S,
    WRITE_DEADLINE_S,
    ClientCount,
    LoginThrottle,
    connection_limit,
)
from citynerve.gateway.web.metrics import CONTENT_TYPE as METRICS_TYPE
from citynerve.gateway.web.metrics import RateMeter, plain, render_metrics
from citynerve.gateway.web.password import PasswordFile
from citynerve.gateway.web.peer import loopback_peer_allowed
from citynerve.gateway.web.state import StatusSource, page_state

log = logging.getLogger("citynerve.web")

MAX_HEADER_BYTES = 8192
MAX_HEADERS = 64
BUSY_LOG_INTERVAL_S = 60.0  # refused connections are counted, and logged at most this often
STATIC = {
    "/": ("index.html", "text/html; charset=utf-8"),
    "/static/status.js": ("status.js", "text/javascript; charset=utf-8"),
    "/static/status.css": ("status.css", "text/css; charset=utf-8"),
}
SECURITY_HEADERS = {
    "Content-Security-Policy": "default-src 'self'; img-src 'self' data:; frame-ancestors 'none'",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "X-Frame-Options": "DENY",
}
REASONS = {
    200: "OK",
    400: "Bad Request",
    401: "Unauthorized",
    403: "Forbidden",
    404: "Not Found",
    405: "Method Not Allowed",
    408: "Request Timeout",
    429: "Too Many Requests",
    431: "Request Header Fields Too Large",
    500: "Internal Server Error",
    503: "Service Unavailable",
}


class WebServerError(PermanentError):
    """The status page cannot serve: port in use, password file unreadable."""

    def __init__(self, reason: str) -> None:
        self.reason = reason
        super().__init__(f"status page: {reason}")


class _ClientGone(Exception):
    """The client closed or reset the connection before sending a whole request (a browser's spare
    socket, a phone leaving the Wi-Fi): nothing to answer, nothing to log."""


_Answer = tuple[int, str, bytes, dict[str, str]]
_BUSY = (
    b"HTTP/1.1 503 Service Unavailable\r\nRetry-After: 5\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
)
_OUT_OF_RESOURCES = frozenset({errno.EMFILE, errno.ENFILE, errno.ENOBUFS, errno.ENOMEM})
# Errors of one connection, not of the listening socket: Linux accept(2) passes a new connection's
# pending network error up from accept() and says to retry as for EAGAIN (ENETDOWN ... ENETUNREACH);
# ECONNABORTED is a connection gone before it was accepted, EPERM a firewall rule refusing it.
_RETRY_ACCEPT = frozenset(
    {
        errno.ECONNABORTED,
        errno.EINTR,
        errno.EPERM,
        errno.ENETDOWN,
        errno.EPROTO,
        errno.ENOPROTOOPT,
        errno.EHOSTDOWN,
        errno.ENONET,
        errno.EHOSTUNREACH,
        errno.EOPNOTSUPP,
        errno.ENETUNREACH,
    }
)


class _BadRequest(Exception):
    def __init__(self, status: int, reason: str) -> None:
        self.status = status
        self.reason = reason


def _static(name: str) -> bytes:
    return shipped.status_page(name)


class StatusServer:
    """`StatusServer(config.web, gateway)`; `await run()` serves until cancelled.

    `gateway` is a `StatusSource`: `async status()` (with the active alarms), `brief_status()` and
    `config` (device locations for grouping). `port` is the bound port once started.
    """

    def __init__(self, config: WebConfig, gateway: StatusSource) -> None:
        self.config = config
        self.gateway = gateway
        self.port: int | None = None
        self._password: PasswordFile | None = None  # None: no password_file (loopback, peer rule)
        self._sock: socket.socket | None = None
        self._accepting: asyncio.Task[None] | None = None
        self._serving: set[asyncio.Task[None]] = set()
        self._cache: tuple[float, dict[str, Any]] | None = None
        self._lock = asyncio.Lock()
        self._rate = RateMeter()
        self._assets = {path: (_static(name), ctype) for path, (name, ctype) in STATIC.items()}
        self.requests = 0
        self._open: set[asyncio.StreamWriter] = set()
        self._clients = ClientCount(connection_limit())
        self._logins = LoginThrottle()
        self._busy_logged = -BUSY_LOG_INTERVAL_S
        self._busy_unlogged = 0
        self.timeouts = 0
        self.peers_refused = 0
        self.accept_errors = 0

    def limits(self) -> dict[str, int]:
        """The page's limits and what they refused (for status, metrics and tests)."""
        return {
            "max_clients": self._clients.limit,
            "max_per_client": self._clients.per_client,
            "open": self._clients.total,
            "refused_busy": self._clients.refused,
            "timeouts": self.timeouts,
            "failed_logins": self._logins.failures,
            "throttled_logins": self._logins.throttled,
            "refused_peers": self.peers_refused,
            "accept_errors": self.accept_errors,
        }

    # -- lifecycle -------------------------------------------------------------------------------

    def _password_path(self) -> Path | None:
        p = self.config.password_file
        if p is None:
            return None
        return p if p.is_absolute() else Path(self.gateway.config.resolve(str(p)))

    async def start(self) -> None:
        """Bind and start serving in the background. Raises WebServerError."""
        path = self._password_path()
        if path is not None:
            try:
                self._password = PasswordFile.load(path)
            except ValueError as err:
                raise WebServerError(str(err)) from err
        try:
            family = socket.AF_INET6 if ":" in self.config.bind else socket.AF_INET
            sock = socket.create_server(
                (self.config.bind, self.config.port), family=family, backlog=min(128, 2 * self._clients.limit)
            )
        except OSError as err:
            raise WebServerError(
                f"cannot listen on {self.config.bind}:{self.config.port}: {err.strerror or err}"
            ) from err
        sock.setblocking(False)
        self._sock = sock
        self.port = sock.getsockname()[1]
        self._accepting = asyncio.create_task(self._accept(sock), name="web.accept")
        soft, _ = resource.getrlimit(resource.RLIMIT_NOFILE)
        log.info(
            "status page on http://%s:%s/ (at most %d connections, %d per client; RLIMIT_NOFILE %s)",
            self.config.bind,
            self.port,
            self._clients.limit,
            self._clients.per_client,
            "unlimited" if soft == resource.RLIM_INFINITY else soft,
        )

    async def stop(self) -> None:
        if self._accepting is not None:
            self._accepting.cancel()
            # An error that ended accepting was logged when it happened; stopping does not raise it.
            with contextlib.suppress(asyncio.CancelledError, OSError):
                await self._accepting
            self._accepting = None
        if self._sock is not None:
            self._sock.close()
            self._sock = None
        # Idle keep-open connections (a browser's spare socket) end now, not at loop shutdown.
        for w in list(self._open):
            w.close()
        for task in list(self._serving):
            task.cancel()
        if self._serving:
            await asyncio.wait(self._serving, timeout=2.0)

    async def _accept(self, sock: socket.socket) -> None:
        """Accept one connection at a time. One over a limit is closed at once, unread, so a flood
        holds at most the limit's descriptors (plus the one just accepted)."""
        loop = asyncio.get_running_loop()
        while True:
            try:
                conn, addr = await loop.sock_accept(sock)
            except OSError as err:
                if err.errno in _RETRY_ACCEPT:
                    self.accept_errors += 1
                    log.debug("status page: accept() failed for one connection: %s", err)
                    continue
                if err.errno not in _OUT_OF_RESOURCES:
                    log.error("status page stopped accepting connections: %s", err)
                    raise
                self._note_busy("(out of descriptors)")  # counted; logged once a minute
                await asyncio.sleep(0.5)
                continue
            client = str(addr[0]) if isinstance(addr, tuple) and addr else "?"
            if not self._clients.enter(client):
                with contextlib.suppress(OSError):
                    conn.setblocking(False)
                    conn.send(_BUSY)
                conn.close()
                self._note_busy(client)
                continue
            task = asyncio.create_task(self._serve(conn, client), name="web.client")
            self._serving.add(task)
            task.add_done_callback(self._serving.discard)

    async def _serve(self, conn: socket.socket, client: str) -> None:
        try:
            try:
                reader, writer = await asyncio.open_connection(sock=conn, limit=MAX_HEADER_BYTES)
            except OSError:
                conn.close()
                return
            await self._client(reader, writer, client)
        finally:
            self._clients.leave(client)

    async def run(self) -> None:
        """Serve until cancelled. When it cannot serve, log why and return (the gateway goes on)."""
        if not self.config.enabled:
            return
        try:
            await self.start()
        except WebServerError as err:
            log.error("%s", err)
            return
        try:
            await asyncio.Event().wait()
        finally:
            await self.stop()

    async def __aenter__(self) -> StatusServer:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    # -- data ------------------------------------------------------------------------------------

    async def _status(self) -> dict[str, Any]:
        async with self._lock:
            now = time.monotonic()
            if self._cache is not None and now - self._cache[0] < min(1.0, self.config.refresh_s / 2):
                return self._cache[1]
            status = await self.gateway.status()
            up = plain(status.get("uplink"))
            msgs = up.get("published_msgs") if isinstance(up, dict) else None
            self._rate.observe(float(msgs) if isinstance(msgs, int | float) else None, now)  # monotonic
            self._cache = (now, status)
            return status

    async def _body(self, path: str) -> tuple[int, str, bytes, dict[str, str]]:
        if path in self._assets:
            data, ctype = self._assets[path]
            return 200, ctype, data, {"Cache-Control": "no-cache"}
        no_store = {"Cache-Control": "no-store"}
        if path == "/api/status":
            state = page_state(await self._status(), self.gateway.config, refresh_s=self.config.refresh_s)
            state["uplink_publish_rate"] = self._rate.rate
            body = json.dumps(state, ensure_ascii=False, default=str).encode()
            return 200, "application/json; charset=utf-8", body, no_store
        if path == "/metrics":
            status = await self._status()
            text = render_metrics(status, publish_rate=self._rate.rate, web=self.limits())
            return 200, METRICS_TYPE, text.encode(), no_store
        if path == "/healthz":
            brief = self.gateway.brief_status()
            return 200, "application/json", json.dumps(brief, default=str).encode(), no_store
        return 404, "text/plain; charset=utf-8", b"not found\n", {}

    # -- HTTP ------------------------------------------------------------------------------------

    async def _read_request(self, reader: asyncio.StreamReader) -> tuple[str, str, dict[str, str]]:
        # One deadline for the whole request head, not one per line: a client that sends a header
        # line every few seconds (slowloris) is dropped as surely as one that sends nothing.
        try:
            async with asyncio.timeout(REQUEST_DEADLINE_S):
                return await self._read_head(reader)
        except TimeoutError:
            self.timeouts += 1
            raise _BadRequest(408, "timeout") from None
        except OSError as err:  # reset or broken by the client: it went away, not a server bug
            raise _ClientGone from err

    async def _read_head(self, reader: asyncio.StreamReader) -> tuple[str, str, dict[str, str]]:
        try:
            line = await reader.readline()
        except (asyncio.LimitOverrunError, ValueError):
            raise _BadRequest(431, "request line too long") from None
        if not line:
            raise _ClientGone
        parts = line.decode("latin-1").strip().split(" ")
        if len(parts) != 3 or not parts[2].startswith("HTTP/1."):
            raise _BadRequest(400, "not an HTTP/1.x request line")
        method, target, _ = parts
        headers: dict[str, str] = {}
        total = len(line)
        while True:
            try:
                raw = await reader.readline()
            except (asyncio.LimitOverrunError, ValueError):
                raise _BadRequest(431, "header line too long") from None
            total += len(raw)
            if total > MAX_HEADER_BYTES or len(headers) >= MAX_HEADERS:
                raise _BadRequest(431, "headers too large")
            if not raw:
                raise _BadRequest(400, "connection closed inside the headers")
            if raw in (b"\r\n", b"\n"):
                break
            name, sep, value = raw.decode("latin-1").partition(":")
            if not sep:
                raise _BadRequest(400, "malformed header")
            headers[name.strip().lower()] = value.strip()
        return method, target, headers

    def _host_allowed(self, headers: dict[str, str]) -> bool:
        """Without a password the page is for this machine only. A browser that was sent to it by
        a web site through DNS rebinding names that site in Host: refuse it."""
        if self._password is not None:
            return True
        host = headers.get("host", "")
        if host.startswith("["):
            name = host[1 : host.find("]")] if "]" in host else host
        else:
            name = host.rsplit(":", 1)[0] if host.count(":") == 1 else host
        return name == "" or is_loopback(name) or name == self.config.bind

    def _authorized(self, headers: dict[str, str], password: bytes) -> bool:
        scheme, _, token = headers.get("authorization", "").partition(" ")
        if scheme.lower() != "basic":
            return False
        try:
            user, _, given = base64.b64decode(token.strip(), validate=True).partition(b":")
        except (binascii.Error, ValueError):
            return False
        # Both compared in constant time, and both always compared, so timing tells nothing.
        ok_user = hmac.compare_digest(user, self.config.username.encode())
        ok_pass = hmac.compare_digest(given, password)
        return ok_user and ok_pass

    def _note_busy(self, client: str) -> None:
        """A connection refused over a limit: counted, and logged at most once a minute."""
        now = time.monotonic()
        if now - self._busy_logged >= BUSY_LOG_INTERVAL_S:
            log.warning(
                "status page busy: refused a connection from %s (%d open, limit %d, %d per client)%s",
                client,
                self._clients.total,
                self._clients.limit,
                self._clients.per_client,
                f"; {self._busy_unlogged} more refused since the last line" if self._busy_unlogged else "",
            )
            self._busy_logged, self._busy_unlogged = now, 0
        else:
            self._busy_unlogged += 1

    async def _access(
        self, headers: dict[str, str], writer: asyncio.StreamWriter, client: str
    ) -> _Answer | None:
        """None when the client may see the page, else the answer that refuses it."""
        if self._password is None:
            # Loopback without a password: the control socket's rule (gateway's user or group).
            sock = writer.get_extra_info("socket")
            if await asyncio.to_thread(loopback_peer_allowed, sock):
                return None
            self.peers_refused += 1
            return 403, "text/plain", b"only the gateway's user and group may use this page\n", {}
        password = await self._password.current()
        if password is None:
            # The file became unreadable or empty (logged by PasswordFile): nobody may see the page,
            # and a 401 would have the technician retype a password that is not what is wrong.
            return (
                503,
                "text/plain",
                b"the status page's password file cannot be read: see the gateway's log\n",
                {"Retry-After": "5"},
            )
        wait = self._logins.wait(client)
        if wait > 0:
            return 429, "text/plain", b"too many failed logins\n", {"Retry-After": f"{wait:.0f}"}
        if self._authorized(headers, password):
            self._logins.succeeded(client)
            return None
        if "authorization" in headers:  # a wrong password, not a browser's first request
            line = self._logins.failed(client)
            if line is not None:
                log.warning("status page: %s", line)
        extra = {"WWW-Authenticate": 'Basic realm="citynerve", charset="UTF-8"'}
        return 401, "text/plain", b"password required\n", extra

    async def _client(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, client: str) -> None:
        self.requests += 1
        self._open.add(writer)
        head_only = False
        try:
            try:
                method, target, headers = await self._read_request(reader)
                head_only = method == "HEAD"
                refused: _Answer | None = None
                if method not in ("GET", "HEAD"):
                    status, ctype, body, extra = 405, "text/plain", b"GET only\n", {"Allow": "GET, HEAD"}
                elif not self._host_allowed(headers):
                    status, ctype, body, extra = 403, "text/plain", b"unexpected Host\n", {}
                elif (refused := await self._access(headers, writer, client)) is not None:
                    status, ctype, body, extra = refused
                else:
                    status, ctype, body, extra = await self._body(target.split("?", 1)[0])
            except _BadRequest as err:
                status, ctype, body, extra = err.status, "text/plain", f"{err.reason}\n".encode(), {}
            except _ClientGone:
                raise
            except Exception:  # a status bug must not take the server down: answer 500, log once
                log.exception("status page request failed")
                status, ctype, body, extra = 500, "text/plain", b"internal error\n", {}
            head = [f"HTTP/1.1 {status} {REASONS.get(status, 'Error')}"]
            head += [f"Content-Type: {ctype}", f"Content-Length: {len(body)}", "Connection: close"]
            head += [f"{k}: {v}" for k, v in {**SECURITY_HEADERS, **extra}.items()]
            writer.write(("\r\n".join(head) + "\r\n\r\n").encode("latin-1"))
            if not head_only:
                writer.write(body)
            async with asyncio.timeout(WRITE_DEADLINE_S):  # a client that does not read is dropped
                await writer.drain()
        except (OSError, _ClientGone):  # ConnectionError, TimeoutError: the client went away
            pass
        finally:
            self._open.discard(writer)
            writer.close()
            with contextlib.suppress(Exception):
                await writer.wait_closed()
