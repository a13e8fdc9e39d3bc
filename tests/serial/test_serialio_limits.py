"""The serial line's bounds against a hostile or broken line, on real pty pairs: bytes heard between
transactions, noise during a transaction, the size of what a timeout reports."""

from __future__ import annotations

import asyncio
import contextlib
import os
from collections.abc import AsyncIterator, Callable

import pytest

from citynerve.drivers.dlt645 import codec
from citynerve.drivers.serialio import MAX_PENDING, MeterSerialSettings, SerialLine
from citynerve.hil.sim.serial._bus import _open_pty
from tests.serial.test_firepanel import until

REPLY = bytes.fromhex("68 61 01 00 00 00 00 68 91 08 33 33 34 33 59 33 33 33 8A 16")
REQUEST = codec.build_read("000000000161", 0x00010000)


async def write_all(master: int, data: bytes) -> None:
    """Write to the pty master (non-blocking) as fast as the line's reader takes it."""
    view = memoryview(data)
    while view:
        try:
            view = view[os.write(master, view) :]
        except BlockingIOError:
            await asyncio.sleep(0.001)


@contextlib.asynccontextmanager
async def pty_line(baudrate: int = 2400) -> AsyncIterator[tuple[int, SerialLine]]:
    master, slave, path = _open_pty()
    try:
        async with SerialLine("rs485-1", MeterSerialSettings(port=path, baudrate=baudrate)) as line:
            yield master, line
    finally:
        os.close(master)
        os.close(slave)


def answer_with(master: int, reply: Callable[[bytes], bytes]) -> None:
    """Answer each request the line sends (the meter's side of the pty)."""

    def on_request() -> None:
        with contextlib.suppress(BlockingIOError):
            request = os.read(master, 4096)
            os.write(master, reply(request))

    asyncio.get_running_loop().add_reader(master, on_request)


async def test_bytes_between_transactions_are_capped_newest_kept() -> None:
    async with pty_line() as (master, line):
        babble = bytes(range(256)) * 256 + b"newest"  # 64 KiB while no poll is due
        await write_all(master, babble)
        await until(lambda: line.stats().dropped_bytes + line.stats().pending_bytes == len(babble))
        stats = line.stats()
        assert stats.pending_bytes == MAX_PENDING
        assert stats.dropped_bytes == len(babble) - MAX_PENDING
        assert await line.receive(0) == babble[-MAX_PENDING:]  # the newest bytes, in order
        await write_all(master, babble[:1000])  # under the cap: nothing more dropped
        await until(lambda: line.stats().pending_bytes == 1000)
        answer_with(master, lambda request: REPLY if request == REQUEST else b"")
        try:
            frame = await line.transact(REQUEST, codec.StreamParser(), timeout_s=2.0)
        finally:
            asyncio.get_running_loop().remove_reader(master)
        assert frame.raw == REPLY  # the babble was drained as stale, the reply read whole
        assert line.stats().dropped_bytes == len(babble) - MAX_PENDING


def test_max_pending_must_hold_a_byte() -> None:
    with pytest.raises(ValueError, match="max_pending"):
        SerialLine("rs485-1", MeterSerialSettings(port="/dev/null"), max_pending=0)
