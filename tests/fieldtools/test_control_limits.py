"""The control socket bounds its clients like network input, on real Unix sockets: a client that
sends half a request and waits is closed after the idle timeout, one that does not read its answer
after the write deadline, and connections over the limit are answered `Busy` and closed at once, so
a flood of half-open clients holds no more than the limit's descriptors (it used to exhaust the
gateway's RLIMIT_NOFILE: 300 such clients and the gateway could not open a file)."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from citynerve.gateway.control import ControlError, ask
from citynerve.gateway.control.server import ControlServer
from tests.fieldtools.conftest import wait_for


async def _ping(_: dict[str, Any]) -> str:
    return "pong"


async def _big(_: dict[str, Any]) -> str:
    return "x" * (8 << 20)  # far more than a socket buffer holds


@contextlib.asynccontextmanager
async def _serving(path: Path, **limits: Any) -> AsyncIterator[ControlServer]:
    server = ControlServer(path, {"ping": _ping, "big": _big}, **limits)
    task = asyncio.create_task(server.run())
    try:
        await wait_for(path.exists, 10)
        yield server
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task


def _fds() -> int:
    return len(os.listdir("/proc/self/fd"))


async def test_half_request_is_closed_after_the_idle_timeout(short_dir: Path) -> None:
    path = short_dir / "ctl.sock"
    async with _serving(path, idle_timeout_s=0.3) as server:
        reader, writer = await asyncio.open_unix_connection(str(path))
        writer.write(b'{"op":"pi')  # half a request, never finished
        await writer.drain()
        async with asyncio.timeout(10):
            assert await reader.read() == b""  # closed by the server, nothing answered
        writer.close()
        await wait_for(lambda: server.open_clients == 0, 10)
        assert server.timeouts == 1
        assert await ask(path, "ping") == "pong"


async def test_clients_over_the_limit_are_refused_at_once(short_dir: Path) -> None:
    path = short_dir / "ctl.sock"
    async with _serving(path, max_clients=4, idle_timeout_s=3600) as server:
        before = _fds()
        held = []
        for _ in range(4):
            reader, writer = await asyncio.open_unix_connection(str(path))
            writer.write(b'{"op":"pi')
            held.append((reader, writer))
        await wait_for(lambda: server.open_clients == 4, 10)
        extras = [await asyncio.open_unix_connection(str(path)) for _ in range(40)]
        async with asyncio.timeout(10):
            answers = [await reader.read() for reader, _ in extras]  # a line, then EOF
        for answer in answers:
            reply = json.loads(answer)
            assert reply["error"]["type"] == "Busy" and "4 connections open" in reply["error"]["message"]
        # The server holds the 4 it serves and none of the 40 (each of which it closed).
        assert _fds() - before <= 4 + 4 + 40
        assert server.open_clients == 4 and server.refused_busy == 40
        with pytest.raises(ControlError) as busy:  # what the CLI then says
            await ask(path, "ping")
        assert busy.value.type == "Busy" and "control socket busy" in busy.value.message
        for _, writer in extras:
            writer.close()
        held.pop()[1].close()
        await wait_for(lambda: server.open_clients == 3, 10)
        assert await ask(path, "ping") == "pong"  # a slot freed is a slot served
        for _, writer in held:
            writer.close()


async def test_client_that_does_not_read_is_dropped_at_the_write_deadline(short_dir: Path) -> None:
    path = short_dir / "ctl.sock"
    async with _serving(path, write_deadline_s=0.3) as server:
        _reader, writer = await asyncio.open_unix_connection(str(path))
        writer.write(b'{"op":"big"}\n')  # and never reads the 8 MiB answer
        await writer.drain()
        await wait_for(lambda: server.timeouts == 1, 10)
        await wait_for(lambda: server.open_clients == 0, 10)
        writer.close()
        assert await ask(path, "ping") == "pong"
