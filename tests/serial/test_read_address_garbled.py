"""`citynerve diag dlt645|cjt188 read-address` on a garbled line: one meter with A/B swapped, a wrong
baud rate, or noise. It blamed "more than one meter may have answered the wildcard address
(disconnect the others ...)" for every garbled reply; a run of bytes with no frame start is the
line settings, the polarity or noise, and the text now says so and points to `diag ... probe`.
Two meters colliding keep their explanation (tests/serial/test_serial_cli.py)."""

from __future__ import annotations

import asyncio
import os
import pty
import random
import tty
from collections.abc import AsyncIterator

import pytest
from click.testing import CliRunner

from citynerve.gateway.cli import main

FRAME_START = 0x68
NOISE = bytes(b for b in range(256) if b != FRAME_START)
"""Noise bytes: without a frame start, so that what the gateway hears cannot be a frame by luck."""


class GarbledLine:
    """The far end of a pty: `invert` answers every request with its bytes inverted (A/B swapped)
    and a few noise bytes; `stream` sends noise all the time, request or not."""

    def __init__(self, mode: str) -> None:
        self.mode = mode
        self._rng = random.Random(1)
        self.master, self._slave = pty.openpty()
        tty.setraw(self._slave)
        os.set_blocking(self.master, False)
        self.port = os.ttyname(self._slave)

    def _noise(self, n: int) -> bytes:
        return bytes(self._rng.choice(NOISE) for _ in range(n))

    async def run(self) -> None:
        while True:
            await asyncio.sleep(0.02)
            try:
                request = os.read(self.master, 4096)
            except BlockingIOError:
                request = b""
            try:
                if self.mode == "stream":
                    os.write(self.master, self._noise(48))
                elif request:
                    os.write(self.master, bytes(~b & 0xFF for b in request) + self._noise(20))
            except BlockingIOError:  # nobody reads: the pty is full
                pass

    def close(self) -> None:
        os.close(self.master)
        os.close(self._slave)


@pytest.fixture(params=["invert", "stream"])
async def line(request: pytest.FixtureRequest) -> AsyncIterator[GarbledLine]:
    peer = GarbledLine(request.param)
    task = asyncio.create_task(peer.run())
    try:
        yield peer
    finally:
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        peer.close()


@pytest.mark.parametrize("protocol", ["dlt645", "cjt188"])
async def test_read_address_on_a_garbled_line_names_the_line_not_other_meters(
    line: GarbledLine, protocol: str
) -> None:
    def run() -> tuple[int, str]:
        result = CliRunner().invoke(
            main, ["diag", protocol, "read-address", "--port", line.port, "--timeout", "0.5"]
        )
        return result.exit_code, result.stderr

    code, err = await asyncio.to_thread(run)
    text = " ".join(err.split())
    assert code == 1, text
    assert "more than one meter" not in text and "disconnect the others" not in text, text
    assert "line settings (baud, parity), A/B polarity or noise" in text, text
    assert f"citynerve diag {protocol} probe" in text, text
