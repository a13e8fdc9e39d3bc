"""The status page's limits with real sockets: the connection limit sized from RLIMIT_NOFILE,
slow clients cut by one deadline for the whole request, failed logins throttled per client and
logged in bounded lines, and the loopback rule of the control socket (kernel socket table)."""

from __future__ import annotations

import asyncio
import base64
import logging
import os
import resource
import socket
import time
from pathlib import Path

import pytest

from citynerve.gateway.web import StatusServer, WebConfig
from citynerve.gateway.web.limits import FD_RESERVE, REQUEST_DEADLINE_S, LoginThrottle, connection_limit
from citynerve.gateway.web.peer import may_use_gateway, peer_uid
from citynerve.hil.faults._inputs_support import http_get


def test_connection_limit_is_sized_from_rlimit_nofile() -> None:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    try:
        resource.setrlimit(resource.RLIMIT_NOFILE, (128, hard))
        assert connection_limit() == (128 - FD_RESERVE) // 4 == 16
        resource.setrlimit(resource.RLIMIT_NOFILE, (70, hard))
        assert connection_limit() == 2  # a technician can still get in
    finally:
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))
    assert connection_limit() == min(32, (soft - FD_RESERVE) // 4)


def test_login_throttle_backs_off_per_client_and_logs_once_per_interval() -> None:
    now = [0.0]
    t = LoginThrottle(log_interval_s=60.0, clock=lambda: now[0])
    lines = [t.failed("10.0.0.9") for _ in range(8)]
    assert lines[0] is not None and lines[1:] == [None] * 7
    assert t.wait("10.0.0.9") == 4.0  # 3 failures over the free 5: 1, 2, 4 s
    assert t.wait("10.0.0.7") == 0.0  # another client is not affected
    now[0] = 3.0
    assert t.wait("10.0.0.9") == 4.0  # a try while blocked restarts the wait
    now[0] = 7.5
    assert t.wait("10.0.0.9") == 0.0  # Retry-After honoured: may try again
    now[0] = 61.0
    line = t.failed("10.0.0.9")
    assert line is not None and "9 in a row" in line and "+7 not logged" in line
    t.succeeded("10.0.0.9")
    assert t.wait("10.0.0.9") == 0.0


@pytest.fixture
def password_file(tmp_path: Path) -> Path:
    pw = tmp_path / "web.pw"
    pw.write_text("correct horse\n")
    return pw


def _basic(password: str) -> str:
    return "Basic " + base64.b64encode(f"tech:{password}".encode()).decode()


async def test_slow_client_is_cut_by_the_request_deadline(gateway: object, password_file: Path) -> None:
    cfg = WebConfig(enabled=True, port=0, password_file=password_file, username="tech")
    async with StatusServer(cfg, gateway) as server:  # type: ignore[arg-type]
        assert server.port
        reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
        started = time.monotonic()
        closed_after = None
        for ch in b"GET / HTTP/1.1\r\nHost: x\r\nX-Slow: " + b"a" * 100:
            writer.write(bytes([ch]))
            try:
                await writer.drain()
                data = await asyncio.wait_for(reader.read(100), 0.5)
            except TimeoutError:
                continue
            except ConnectionError:
                data = b""
            if data == b"" or data.startswith(b"HTTP/1.1 408"):
                closed_after = time.monotonic() - started
                break
        writer.close()
        # Cut after the deadline although a byte kept arriving every half second (~50 s of them).
        assert closed_after is not None
        assert REQUEST_DEADLINE_S - 0.5 <= closed_after <= REQUEST_DEADLINE_S + 10
        assert server.limits()["timeouts"] == 1


async def test_password_guessing_is_throttled_and_logged_in_bounded_lines(
    gateway: object, password_file: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, logger="citynerve.web")
    cfg = WebConfig(enabled=True, port=0, password_file=password_file, username="tech")
    async with StatusServer(cfg, gateway) as server:  # type: ignore[arg-type]
        port = server.port
        assert port

        def guess(i: int) -> int:
            return http_get(port, "/api/status", auth=_basic(f"guess{i}"), source="127.0.0.7")

        codes = [await asyncio.to_thread(guess, i) for i in range(30)]
        ok = await asyncio.to_thread(http_get, port, "/api/status", auth=_basic("correct horse"))
        blocked = await asyncio.to_thread(
            http_get, port, "/api/status", auth=_basic("correct horse"), source="127.0.0.7"
        )
    assert codes[:6] == [401] * 6 and set(codes[6:]) == {429}
    assert ok == 200 and blocked == 429
    assert server.limits()["failed_logins"] == 6
    assert len([r for r in caplog.records if "failed login" in r.getMessage()]) == 1


@pytest.mark.parametrize(
    ("listen", "family", "connect"),
    [
        ("127.0.0.1", socket.AF_INET, "127.0.0.1"),
        ("::1", socket.AF_INET6, "::1"),
        ("::", socket.AF_INET6, "127.0.0.1"),  # dual stack: the client shows as ::ffff:127.0.0.1
    ],
)
def test_peer_uid_from_the_kernel_socket_table(
    listen: str, family: socket.AddressFamily, connect: str
) -> None:
    with socket.create_server((listen, 0), family=family, dualstack_ipv6=listen == "::") as srv:
        client = socket.create_connection((connect, srv.getsockname()[1]))
        conn, addr = srv.accept()
        with client, conn:
            assert peer_uid(addr[:2], conn.getsockname()[:2]) == os.geteuid()
    assert may_use_gateway(0) and may_use_gateway(os.geteuid())
    if os.geteuid() == 0:
        assert not may_use_gateway(65534)  # nobody: neither root's user nor in its group
