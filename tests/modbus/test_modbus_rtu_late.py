"""A late reply on an RTU line (no transaction ids) is never taken for the next request's answer.

A meter answering a little slower than `timeout_s`, polled with two reads of the same function and
register count: its late reply to the first read came in while the second was pending, fitted it
(unit, function, byte count, CRC) and was stored as the second read's values, GOOD, at every poll.
After a timeout the line is now kept quiet for a grace (the device's timeout, at most
`LATE_REPLY_GRACE_MAX_S`), whatever arrives then is dropped (counted), and a request goes out only
after t3.5 of silence, so a reply still arriving is dropped too. The device is a script on a pty
pair whose delays lie well past the timeout and well inside the grace.
"""

from __future__ import annotations

import asyncio
import os
import struct
import tty
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field

import pytest
from modbus_support import LOCATION, device_model

from citynerve.drivers.modbus._channel import LATE_REPLY_GRACE_MAX_S, silent_interval_s
from citynerve.drivers.modbus.codec import build_rtu_frame
from citynerve.drivers.modbus.config import ModbusRtuBusConfig
from citynerve.drivers.modbus.driver import ModbusDriver
from citynerve.gateway.api import DeviceTimeoutError

TIMEOUT_S = 0.4
METER = device_model(
    id="meter", bus="rs485", profile="t", address=1, location=LOCATION,
    points={"at0": {"table": "holding", "address": 0, "type": "uint32"},
            "at100": {"table": "holding", "address": 100, "type": "uint32"}},
)  # fmt: skip


@dataclass
class SlowMeter:
    """Unit 1 on the device end of a pty: holding[a] = a, answered `delay_s` after each request,
    its bytes `byte_gap_s` apart (0: in one write)."""

    fd: int
    delay_s: float = 0.0
    byte_gap_s: float = 0.0
    requests: list[tuple[float, bytes]] = field(default_factory=list)  # (loop time, frame)
    replies: list[tuple[float, float, bytes]] = field(default_factory=list)  # (first, last byte)
    answering: set[asyncio.Task[None]] = field(default_factory=set)

    def reply_to(self, request: bytes) -> bytes:
        unit, fc, address, count = struct.unpack(">BBHH", request[:6])
        data = b"".join(struct.pack(">H", address + i) for i in range(count))
        return build_rtu_frame(unit, bytes([fc, len(data)]) + data)

    async def serve(self) -> None:
        loop = asyncio.get_running_loop()
        chunks: asyncio.Queue[bytes] = asyncio.Queue()
        loop.add_reader(self.fd, lambda: chunks.put_nowait(os.read(self.fd, 256)))
        buffer = bytearray()
        try:
            while True:
                buffer += await chunks.get()
                while len(buffer) >= 8:  # FC 3 requests only: 8 bytes each
                    request = bytes(buffer[:8])
                    del buffer[:8]
                    self.requests.append((loop.time(), request))
                    answer = self._answer(self.reply_to(request), self.delay_s, self.byte_gap_s)
                    task = asyncio.create_task(answer)
                    self.answering.add(task)
                    task.add_done_callback(self.answering.discard)
        finally:
            loop.remove_reader(self.fd)
            for task in self.answering:
                task.cancel()

    async def _answer(self, frame: bytes, delay_s: float, byte_gap_s: float) -> None:
        loop = asyncio.get_running_loop()
        await asyncio.sleep(delay_s)
        first = loop.time()
        if byte_gap_s:
            for i in range(len(frame)):
                if i:
                    await asyncio.sleep(byte_gap_s)
                os.write(self.fd, frame[i : i + 1])
        else:
            os.write(self.fd, frame)
        self.replies.append((first, loop.time(), frame))


@asynccontextmanager
async def slow_meter_line(
    baudrate: int = 19200, timeout_s: float = TIMEOUT_S
) -> AsyncIterator[tuple[SlowMeter, ModbusDriver]]:
    master, slave = os.openpty()
    tty.setraw(master)
    tty.setraw(slave)
    meter = SlowMeter(master)
    serving = asyncio.create_task(meter.serve())
    bus = ModbusRtuBusConfig(
        id="rs485", port=os.ttyname(slave), baudrate=baudrate, timeout_s=timeout_s, retries=0
    )
    driver = ModbusDriver(bus, [METER])
    await driver.open()
    try:
        yield meter, driver
    finally:
        await driver.close()
        serving.cancel()
        await asyncio.gather(serving, return_exceptions=True)
        os.close(master)
        os.close(slave)


async def test_a_late_reply_is_dropped_not_taken_for_the_next_read_of_the_same_shape() -> None:
    assert TIMEOUT_S <= LATE_REPLY_GRACE_MAX_S  # the grace is the whole timeout here
    async with slow_meter_line() as (meter, driver):
        at0, at100 = driver.plan(METER)
        assert (at0.function, at0.count) == (at100.function, at100.count)  # the same reply shape
        meter.delay_s = TIMEOUT_S + 0.2  # 0.2 s late: well inside the grace of 0.4 s
        for _ in range(2):
            with pytest.raises(DeviceTimeoutError):
                await driver.read(METER, at0)
            with pytest.raises(DeviceTimeoutError):  # the late reply to at0 was stored as at100's
                await driver.read(METER, at100)
        # every late reply came in while no request was pending: dropped and counted
        assert len(meter.replies) == 3
        assert driver.channel.dropped_bytes == sum(len(frame) for _, _, frame in meter.replies)
        sent = [t for t, _ in meter.requests]
        for (_, last_byte, _), next_request in zip(meter.replies, sent[1:], strict=False):
            assert next_request > last_byte
        meter.delay_s = 0.0  # the meter gets quicker: read at once after the grace
        await asyncio.sleep(0.7)  # the fourth late reply is heard and dropped
        values = {s.point: (s.value, s.quality.value) for s in await driver.read(METER, at100)}
        assert values == {"at100": ((100 << 16) | 101, "good")}


@pytest.mark.parametrize("timeout_s", [TIMEOUT_S, LATE_REPLY_GRACE_MAX_S])
async def test_a_reply_still_arriving_when_the_grace_ends_is_heard_out_before_the_next_request(
    timeout_s: float,
) -> None:
    # 300 baud: t3.5 is 128 ms; the late reply's 9 bytes come 50 ms apart (78 ms short of a
    # silence), its first byte 0.2 s before the grace ends and its last 0.2 s after: the next
    # request waits for t3.5 of silence after its last byte. The margins hold on a loaded machine
    # (the meter shares the test's event loop). Also with the grace as long as its cap (the
    # default timeout_s): the wait for silence has its own.
    gap = silent_interval_s(300)
    async with slow_meter_line(baudrate=300, timeout_s=timeout_s) as (meter, driver):
        at0, at100 = driver.plan(METER)
        request_time = 8 * 11 / 300  # the timeout counts from the request's last byte
        meter.delay_s, meter.byte_gap_s = 2 * timeout_s + request_time - 0.2, 0.05
        with pytest.raises(DeviceTimeoutError):
            await driver.read(METER, at0)
        meter.delay_s, meter.byte_gap_s = 0.0, 0.0
        values = {s.point: s.value for s in await driver.read(METER, at100)}
        assert values == {"at100": (100 << 16) | 101}
        (first, last, _), _ = meter.replies
        grace_end = meter.requests[0][0] + request_time + 2 * timeout_s
        assert first < grace_end < last  # it was still arriving when the grace ended
        assert meter.requests[1][0] >= last + gap
        assert driver.channel.dropped_bytes == 9


async def test_bytes_on_a_noisy_idle_line_do_not_hold_up_requests() -> None:
    """An unbiased RS-485 pair picks up a byte every half millisecond while nobody sends: the line
    is never silent for t3.5. Only after a timeout does a request wait for silence (a late reply
    still arriving); otherwise each waited the 1 s cap, one transaction a second instead of
    hundreds. 20 reads take well under a second here; 20 s with the wait."""
    async with slow_meter_line() as (meter, driver):
        (at0, _) = driver.plan(METER)

        async def noise() -> None:
            while True:
                if not meter.answering:
                    os.write(meter.fd, b"\x55")
                await asyncio.sleep(0.0005)

        humming = asyncio.create_task(noise())
        loop = asyncio.get_running_loop()
        try:
            start = loop.time()
            values = [s.value for _ in range(20) for s in await driver.read(METER, at0)]
            took = loop.time() - start
        finally:
            humming.cancel()
            await asyncio.gather(humming, return_exceptions=True)
        assert values == [1] * 20
        assert took < 10.0, took  # 20 s with a wait for silence before every request
