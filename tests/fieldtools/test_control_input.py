"""The control socket parses its requests with the same bounded loader as network input: a deeply
nested or broken request, or a number no float holds, gets a BadRequest answer and the connection
keeps serving."""

from __future__ import annotations

import asyncio
import contextlib
import json
from pathlib import Path
from typing import Any

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
