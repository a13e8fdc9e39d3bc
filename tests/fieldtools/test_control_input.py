"""The control socket parses its requests with the same bounded loader as network input: a deeply
nested or broken request, or a number no float holds, gets a BadRequest answer and the connection
keeps serving; one over the line limit gets a BadRequest naming the limit before the connection
closes. The client, `ask`, turns every connection failure into a ControlError, so the CLI prints
one line, not a traceback."""

from __future__ import annotations

import asyncio
import contextlib
import json
import select
import socket
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

from citynerve.gateway.cli import main
from citynerve.gateway.control import ControlError, ask
from citynerve.gateway.control.protocol import MAX_LINE
from citynerve.gateway.control.server import ControlServer
from tests.fieldtools.conftest import wait_for


async def test_deep_request_is_a_bad_request_and_the_connection_goes_on(short_dir: Path) -> None:
    path = short_dir / "ctl.sock"

    async def ping(_: dict[str, Any]) -> str:
        return "pong"

    server = ControlServer(path, {"ping": ping})
    task = asyncio.create_task(server.run())
    try:
        await wait_for(path.exists, 10)
        async with asyncio.timeout(10):
            reader, writer = await asyncio.open_unix_connection(str(path))
            answers = []
            lines = (b"[" * 100_000, b"\xff\xfe", b"[1]", b'{"op":"ping","for_s":1e999}', b'{"op":"ping"}')
            for line in lines:
                writer.write(line + b"\n")
                await writer.drain()
                answers.append(json.loads(await reader.readline()))
            writer.close()
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
    assert [a["ok"] for a in answers] == [False, False, False, False, True]
    assert "deeper" in answers[0]["error"]["message"] and answers[4]["result"] == "pong"
    assert "1e999 is out of range (not finite)" in answers[3]["error"]["message"]  # never inf


async def test_request_over_the_line_limit_is_answered_bad_request(short_dir: Path) -> None:
    """A raw client (not `ask`) that sends a 2 MiB line gets a typed BadRequest naming the limit
    before the server closes, and the server goes on serving."""
    path = short_dir / "ctl.sock"

    async def ping(_: dict[str, Any]) -> str:
        return "pong"

    def send_huge() -> bytes:
        with socket.socket(socket.AF_UNIX) as s:
            s.settimeout(10)
            s.connect(str(path))
            with contextlib.suppress(BrokenPipeError, ConnectionResetError):
                s.sendall(b'{"op":"ping","pad":"' + b"x" * (2 << 20) + b'"}\n')  # refused mid-way
            return s.makefile("rb").readline()

    task = asyncio.create_task(ControlServer(path, {"ping": ping}).run())
    try:
        await wait_for(path.exists, 10)
        answer = json.loads(await asyncio.to_thread(send_huge))
        with pytest.raises(ControlError) as refused:
            await ask(path, "ping", pad="x" * (2 << 20))
        assert await ask(path, "ping") == "pong"
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
    assert answer["error"] == {"type": "BadRequest", "message": f"request larger than {MAX_LINE} bytes"}
    assert refused.value.type == "BadRequest" and f"larger than {MAX_LINE} bytes" in refused.value.message


@contextlib.contextmanager
def _resetting_peer(path: Path) -> Iterator[None]:
    """A real peer that takes the request and closes with it unread: the kernel resets the
    connection (ECONNRESET), as when the gateway dies mid-request."""
    listener = socket.socket(socket.AF_UNIX)
    listener.bind(str(path))
    listener.listen()

    def serve() -> None:
        with contextlib.suppress(OSError):
            while True:
                conn, _ = listener.accept()
                select.select([conn], [], [], 10)  # the request has arrived ...
                conn.close()  # ... and is dropped unread

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    try:
        yield
    finally:
        listener.shutdown(socket.SHUT_RDWR)
        listener.close()
        thread.join(10)


async def test_connection_reset_is_a_control_error(short_dir: Path) -> None:
    path = short_dir / "ctl.sock"
    with _resetting_peer(path), pytest.raises(ControlError) as exc:
        await ask(path, "status")
    assert exc.value.type == "Disconnected" and "reset" in exc.value.message.lower()


def test_cli_reports_a_reset_in_one_line_without_traceback(short_dir: Path) -> None:
    path = short_dir / "ctl.sock"
    with _resetting_peer(path):
        result = CliRunner().invoke(main, ["status", "--socket", str(path)])
    assert result.exit_code == 1, result.output
    assert isinstance(result.exception, SystemExit), result.exception  # fail(), not a traceback
    assert "error:" in result.output and "reset" in result.output.lower()
