"""The serial line's bounds against a hostile or broken line, on real pty pairs: bytes heard between
transactions, noise during a transaction, the size of what a timeout reports."""

from __future__ import annotations

import asyncio
import contextlib
import os
from collections.abc import AsyncIterator, Callable

import pytest

from citynerve.drivers.cjt188 import Cjt188Driver
from citynerve.drivers.cjt188 import codec as cjt_codec
from citynerve.drivers.dlt645 import Dlt645Driver, codec
from citynerve.drivers.serialio import MAX_PENDING, MeterSerialSettings, ReplyTimeout, SerialLine
from citynerve.drivers.serialio._line import KEEP_HEARD, SHOWN_BYTES
from citynerve.drivers.serialio.resync import KEEP_REJECTED
from citynerve.gateway.api import DiagParamError, FrameError, FrameFault, PermanentError
from citynerve.hil.sim.serial._bus import _open_pty
from tests.serial.serial_support import bus_config, cjt_device, dlt_device
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


def test_a_line_of_68_noise_keeps_a_few_rejects_and_calls_it_noise() -> None:
    for parser in (codec.StreamParser(), cjt_codec.StreamParser()):
        for _ in range(0, 14_400, 4):  # 60 s of 2400-baud noise in the chunks a slow line gives
            assert parser.feed(b"\x68" * 4) == []
        rejected = parser.rejected()
        assert len(rejected) == KEEP_REJECTED and parser.rejected() == []
        assert parser.rejected_total > 14_000
        assert all(r.fault is FrameFault.FRAMING and r.reason.startswith("noise") for r in rejected)
    # a frame after the noise is still found, and a real frame with a bad checksum is still one
    # (under 96 bytes of it: 96 x 68 and the reply's first 18 bytes happen to sum to its checksum)
    parser = codec.StreamParser()
    assert parser.feed(b"\x68" * 90 + REPLY) == [codec.parse_frame(REPLY)]
    parser = codec.StreamParser()
    assert parser.feed(REPLY[:-2] + b"\x00\x16") == []
    assert parser.rejected()[0].fault is FrameFault.CHECKSUM


async def test_a_transaction_on_a_noisy_line_holds_a_bounded_account() -> None:
    noise = b"\x68" * 4800  # 5 s of 9600-baud noise, all of it heard before the timeout
    async with pty_line(9600) as (master, line):
        sent: list[asyncio.Task[None]] = []
        loop = asyncio.get_running_loop()

        def on_request() -> None:  # the request arrives: the line answers with noise
            with contextlib.suppress(BlockingIOError):
                os.read(master, 4096)
                if not sent:
                    sent.append(asyncio.ensure_future(write_all(master, noise)))

        loop.add_reader(master, on_request)
        try:
            with pytest.raises(ReplyTimeout) as info:
                await line.transact(REQUEST, codec.StreamParser(), timeout_s=3.0)
        finally:
            loop.remove_reader(master)
        err = info.value
    assert err.received_total == len(noise) and err.heard_data
    assert len(err.received) == 2 * KEEP_HEARD and len(err.rejected) <= KEEP_REJECTED
    assert err.rejected_total > 4000
    assert len(line.last_exchange[1]) == 2 * KEEP_HEARD
    error = err.as_error("dlt645", "em-0161")
    assert isinstance(error, FrameError) and error.fault is FrameFault.FRAMING  # noise, not a checksum
    assert error.reason.startswith(
        f"device em-0161: garbled reply: {len(noise)} bytes that do not form a frame"
    )


def test_a_timeout_error_text_is_bounded_whatever_was_heard() -> None:
    heard = bytes(range(0x00, 0x40)) * 200  # 12 800 bytes without a frame (no 68 in them)
    bad_frame = codec.encode_frame("000000000161", 0x91, bytes(200), preamble=False)
    checksum = FrameError(
        "dlt645", "checksum mismatch: expected 01, found 02", bad_frame, fault=FrameFault.CHECKSUM
    )
    cases = {
        "garbled": ReplyTimeout(5.0, heard, (FrameError("dlt645", "noise", heard),), rejected_total=9000),
        "incomplete": ReplyTimeout(5.0, heard, ()),
        "address": ReplyTimeout(5.0, heard, (), ignored=3),
        "checksum": ReplyTimeout(5.0, heard, (checksum,), rejected_total=2),
    }
    for name, timeout in cases.items():
        error = timeout.as_error("dlt645", "em-0161", ("energy",))
        assert isinstance(error, FrameError)
        assert len(error.data) <= SHOWN_BYTES and len(str(error)) < 400, (name, len(str(error)))
        assert f"the first {SHOWN_BYTES} shown" in str(error), name
    assert "12800 bytes" in str(cases["garbled"].as_error("dlt645", "em-0161"))
    short = ReplyTimeout(5.0, b"\x68\x61\x01", ()).as_error("dlt645", "em-0161")
    assert (
        str(short)
        == "dlt645: device em-0161: incomplete reply: 3 bytes that do not form a frame (frame 68 61 01)"
    )


async def test_a_poll_on_a_noisy_line_fails_with_a_short_error() -> None:
    noise = bytes(range(0x00, 0x40)) * 80  # 5120 bytes, no 68: the repro's noise, heard in one poll
    master, slave, path = _open_pty()
    driver = Dlt645Driver(bus_config(path, timeout_s=1.0), [dlt_device(points={"e": {"di": "00010000"}})])
    loop = asyncio.get_running_loop()
    sent: list[asyncio.Task[None]] = []

    def on_request() -> None:
        with contextlib.suppress(BlockingIOError):
            os.read(master, 4096)
            if not sent:
                sent.append(asyncio.ensure_future(write_all(master, noise)))

    loop.add_reader(master, on_request)
    try:
        device = next(iter(driver.devices.values()))
        (request,) = driver.plan(device)
        with pytest.raises(FrameError) as info:
            await driver.read(device, request)
    finally:
        loop.remove_reader(master)
        await driver.close()
        os.close(master)
        os.close(slave)
    text = str(info.value)
    assert f"{len(noise)} bytes that do not form a frame" in text and len(text) < 400, len(text)


@pytest.mark.parametrize(
    "bad", ["nan", float("nan"), "inf", float("-inf"), "abc", None, True, [1], "9" * 400]
)
async def test_a_probe_timeout_that_is_not_a_finite_number_is_refused_by_name(bad: object) -> None:
    master, slave, path = _open_pty()
    drivers = (
        (Dlt645Driver(bus_config(path), [dlt_device()]), "A" * 12),
        (Cjt188Driver(bus_config(path, protocol="cjt188"), [cjt_device()]), "A" * 14),
    )
    try:
        for driver, pattern in drivers:
            async with asyncio.timeout(3.0):  # a NaN timeout used to hang the bus here for ever
                with pytest.raises(DiagParamError) as info:
                    await driver.diag("probe", {"pattern": pattern, "timeout_s": bad})
            assert (info.value.action, info.value.param) == ("probe", "timeout_s")
            assert isinstance(info.value, PermanentError) and len(str(info.value)) < 120
            await driver.close()
        with pytest.raises(BlockingIOError):
            os.read(master, 4096)  # nothing was sent
    finally:
        os.close(master)
        os.close(slave)


async def test_a_probe_timeout_is_clamped_and_a_silent_line_answers_silent() -> None:
    master, slave, path = _open_pty()
    driver = Dlt645Driver(bus_config(path), [dlt_device()])
    try:
        for value in ("0.05", -3, 0):  # clamped up to 0.01 s: silent, quickly
            async with asyncio.timeout(3.0):
                result = await driver.diag("probe", {"pattern": "A" * 12, "timeout_s": value})
            assert result == {"outcome": "silent", "address": ""}
    finally:
        await driver.close()
        os.close(master)
        os.close(slave)


@pytest.mark.timeout(20)  # before the fix a NaN timeout hung here: the line never timed out
@pytest.mark.parametrize("bad", [float("nan"), float("inf"), 0.0, -1.0])
async def test_transact_refuses_a_timeout_that_never_or_always_expires(bad: float) -> None:
    async with pty_line() as (master, line):
        with pytest.raises(PermanentError, match="timeout_s"):
            await line.transact(REQUEST, codec.StreamParser(), timeout_s=bad)
        with pytest.raises(BlockingIOError):
            os.read(master, 4096)  # refused before sending
