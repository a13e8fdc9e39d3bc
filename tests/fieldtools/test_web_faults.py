"""The status page survives what a client and the network do to it, on real sockets and a real
gateway: an error accept() reports for one connection (Linux passes a new connection's pending
network error up from accept(): ECONNABORTED, EPROTO, ENETDOWN ...) never ends the accept task,
an error that does end it is logged then and not raised again by stop(), and a client that resets
its connection mid-request is a client gone, not an ERROR with a traceback.

The kernel cannot be made to report EPROTO on demand, so those errors are injected in the one
place they come from: the loop's `sock_accept`, which accepts the real connection and then fails
as the kernel would."""

from __future__ import annotations

import asyncio
import errno
import logging
import socket
import struct
from collections.abc import Awaitable, Callable

import pytest

from citynerve.gateway.runtime import Gateway
from citynerve.gateway.web import StatusServer, WebConfig

from .conftest import wait_for
from .test_web import get

Accept = Callable[[socket.socket], Awaitable[tuple[socket.socket, object]]]


def _failing_accept(real: Accept, err: OSError, times: int, failed: list[OSError]) -> Accept:
    async def accept(sock: socket.socket) -> tuple[socket.socket, object]:
        conn, addr = await real(sock)
        if len(failed) < times:
            conn.close()  # the connection the error was about is gone
            failed.append(err)
            raise err
        return conn, addr

    return accept


async def _connect_and_wait_for(port: int, failed: list[OSError], n: int) -> None:
    _, writer = await asyncio.open_connection("127.0.0.1", port)
    await wait_for(lambda: len(failed) >= n, 10)
    writer.close()


@pytest.mark.parametrize(
    "code", [errno.ECONNABORTED, errno.EPROTO, errno.ENETDOWN, errno.EHOSTUNREACH, errno.EPERM]
)
async def test_an_accept_error_of_one_connection_does_not_end_accepting(
    gateway: Gateway, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture, code: int
) -> None:
    caplog.set_level(logging.DEBUG, logger="citynerve.web")
    loop = asyncio.get_running_loop()
    failed: list[OSError] = []
    err = OSError(code, errno.errorcode[code])
    monkeypatch.setattr(loop, "sock_accept", _failing_accept(loop.sock_accept, err, 3, failed))
    server = StatusServer(WebConfig(enabled=True, port=0), gateway)
    async with server:
        assert server.port
        for n in (1, 2, 3):
            await _connect_and_wait_for(server.port, failed, n)
        status, _, body = await get(server.port, "/healthz")
        assert status == 200, body
    assert server.limits()["accept_errors"] == 3
    assert not [r for r in caplog.records if r.levelno >= logging.WARNING]


async def test_an_error_that_ends_accepting_is_logged_and_stop_does_not_raise_it(
    gateway: Gateway, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="citynerve.web")
    loop = asyncio.get_running_loop()
    failed: list[OSError] = []
    err = OSError(errno.EINVAL, "Invalid argument")  # the listening socket itself is broken
    monkeypatch.setattr(loop, "sock_accept", _failing_accept(loop.sock_accept, err, 1, failed))
    server = StatusServer(WebConfig(enabled=True, port=0), gateway)
    await server.start()
    assert server.port
    await _connect_and_wait_for(server.port, failed, 1)
    await server.stop()  # returns; the stale error is not raised here
    errors = [r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR]
    assert errors == ["status page stopped accepting connections: [Errno 22] Invalid argument"]


async def test_clients_that_reset_mid_request_are_not_logged_as_errors(
    gateway: Gateway, caplog: pytest.LogCaptureFixture
) -> None:
    """A client resetting inside its request head is a client gone, not a server bug: no ERROR
    line with a traceback per connection (any LAN client could flood the journal on the SD card)."""
    caplog.set_level(logging.DEBUG, logger="citynerve.web")
    loop = asyncio.get_running_loop()
    async with StatusServer(WebConfig(enabled=True, port=0), gateway) as server:
        assert server.port
        for i in range(20):
            with socket.socket() as s:
                s.setblocking(False)
                await loop.sock_connect(s, ("127.0.0.1", server.port))
                await loop.sock_sendall(s, b"GET / HTTP/1.1\r\nHost: x\r\n")  # a head, unfinished
                await wait_for(lambda n=i + 1: server.requests == n, 10)  # the server is reading it
                s.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            # closed with linger 0: the kernel sends RST
        await wait_for(lambda: server.limits()["open"] == 0, 10)
        assert (await get(server.port, "/healthz"))[0] == 200
    noisy = [r for r in caplog.records if r.levelno >= logging.WARNING]
    assert not noisy, [(r.getMessage(), r.exc_info) for r in noisy]
