"""A babbling device (a stuck transmitter, line noise) on an RTU line, from a process of its own, on a
pty and over TCP (RTU over TCP): the event loop stays responsive and the other buses poll on.

pymodbus' RTU framer kept every garbage byte and rescanned its whole buffer on every chunk at
super-linear cost: the loop froze for seconds. The stall is measured against a quiet line in the
same test (the same babbler process sending nothing), never against an absolute time alone.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import random
import sys
import time
import tty
from collections.abc import AsyncIterator
from dataclasses import dataclass

import pytest
from modbus_support import LOCATION, device_model, free_port, start_bank_server

from citynerve.drivers.modbus._rtu import MAX_ADU, ReplyFinder
from citynerve.drivers.modbus.codec import build_rtu_frame
from citynerve.drivers.modbus.config import (
    ModbusBusConfig,
    ModbusRtuBusConfig,
    ModbusRtuOverTcpBusConfig,
    ModbusTcpBusConfig,
)
from citynerve.drivers.modbus.driver import ModbusDriver
from citynerve.gateway.api import Event, SampleBatch
from citynerve.gateway.bus import BusOwner

BABBLER = """
import os, random, socket, sys, threading, time
mode, rate, where = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
rng = random.Random(7)
def pump(write):
    while True:
        if rate:
            write(bytes(rng.randrange(256) for _ in range(rate // 20)))
        time.sleep(0.05)
if mode == "fd":
    pump(lambda b: os.write(where, b))
s = socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.bind(("127.0.0.1", where)); s.listen()
while True:
    c, _ = s.accept(); threading.Thread(target=pump, args=(c.sendall,), daemon=True).start()
"""
RATE = 4000  # bytes/s: more than a 38400-baud line carries
WINDOW_S = 1.5


@contextlib.asynccontextmanager
async def babbling_bus(mode: str, rate: int) -> AsyncIterator[ModbusBusConfig]:
    """An RTU bus whose only peer is a babbler process sending `rate` random bytes a second."""
    if mode == "pty":
        master, slave = os.openpty()
        tty.setraw(master)
        tty.setraw(slave)
        args = ["-c", BABBLER, "fd", str(rate), str(master)]
        proc = await asyncio.create_subprocess_exec(sys.executable, *args, pass_fds=[master])
        bus: ModbusBusConfig = ModbusRtuBusConfig(
            id="rtu", port=os.ttyname(slave), baudrate=38400, timeout_s=0.3, retries=0
        )
    else:
        port = free_port()
        proc = await asyncio.create_subprocess_exec(
            sys.executable, "-c", BABBLER, "tcp", str(rate), str(port)
        )
        for _ in range(200):  # until it listens
            try:
                _, writer = await asyncio.open_connection("127.0.0.1", port)
            except OSError:
                await asyncio.sleep(0.025)
                continue
            writer.close()
            break
        bus = ModbusRtuOverTcpBusConfig(id="rtu", host="127.0.0.1", port=port, timeout_s=0.3, retries=0)
    try:
        yield bus
    finally:
        proc.kill()
        await proc.wait()
        if mode == "pty":
            os.close(master)
            os.close(slave)


class Sink:
    def __init__(self) -> None:
        self.polls: dict[str, int] = {}

    def submit(self, batch: SampleBatch) -> None:
        self.polls[batch.device_id] = self.polls.get(batch.device_id, 0) + 1

    def event(self, event: Event) -> None:
        pass

    def mark_offline(self, device_id: str, ts: float) -> None:
        pass


@dataclass
class Window:
    worst_stall_s: float
    tcp_polls: int
    dropped_bytes: int


async def run_window(rtu_bus: ModbusBusConfig, tcp_bus: ModbusTcpBusConfig) -> Window:
    """Poll the RTU bus and a healthy TCP bus for WINDOW_S; the loop's worst stall meanwhile."""
    points = {"v": {"table": "holding", "address": 0}}
    meter = device_model(
        id="meter", bus="rtu", profile="t", address=1, location=LOCATION, poll_interval_s=0.2, points=points
    )
    other = device_model(
        id="other", bus="tcp", profile="t", address=1, location=LOCATION, poll_interval_s=0.05, points=points
    )
    sink = Sink()
    rtu_driver = ModbusDriver(rtu_bus, [meter])
    owners = [
        BusOwner(rtu_bus, [meter], rtu_driver, sink, rng=random.Random(1)),
        BusOwner(tcp_bus, [other], ModbusDriver(tcp_bus, [other]), sink, rng=random.Random(2)),
    ]
    tasks = [asyncio.create_task(o.run()) for o in owners]
    await asyncio.sleep(0.3)  # both open and polling
    polls_before = sink.polls.get("other", 0)
    worst = 0.0
    end = time.monotonic() + WINDOW_S
    last = time.monotonic()
    while (now := time.monotonic()) < end:
        await asyncio.sleep(0.01)
        now = time.monotonic()
        worst = max(worst, now - last - 0.01)
        last = now
    window = Window(worst, sink.polls.get("other", 0) - polls_before, rtu_driver.channel.dropped_bytes)
    assert not any(t.done() for t in tasks), [t.exception() for t in tasks if t.done()]
    for task in tasks:
        task.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)
    return window


@pytest.mark.parametrize("mode", ["pty", "tcp"])
async def test_a_babbling_rtu_device_does_not_stall_the_loop_or_the_other_buses(mode: str) -> None:
    srv = await start_bank_server((1,))
    tcp_bus = ModbusTcpBusConfig(id="tcp", host=srv.host, port=srv.port, timeout_s=0.3)
    try:
        async with babbling_bus(mode, 0) as quiet_bus:
            quiet = await run_window(quiet_bus, tcp_bus)
        async with babbling_bus(mode, RATE) as babbling_bus_config:
            babbling = await run_window(babbling_bus_config, tcp_bus)
    finally:
        await srv.server.shutdown()
    print(f"{mode}: quiet {quiet}, babbling {babbling}")
    # pymodbus: seconds. Here: what a quiet line shows, with room for a busy test machine.
    assert babbling.worst_stall_s <= 5 * quiet.worst_stall_s + 0.05, (quiet, babbling)
    assert babbling.tcp_polls >= quiet.tcp_polls // 2 > 0, (quiet, babbling)
    assert quiet.dropped_bytes == 0 and babbling.dropped_bytes > 0  # between polls: dropped


def test_the_reply_finder_holds_at_most_one_frame_and_resyncs_linearly() -> None:
    """The sans-I/O part, byte-exact: noise in any chunking never grows the buffer past MAX_ADU,
    and a reply after (or inside) noise is found; a reply with a bad CRC is passed over."""
    rng = random.Random(5)
    reply = build_rtu_frame(1, bytes([3, 4, 0, 10, 0, 11]))
    for _ in range(200):
        noise = bytes(rng.randrange(256) for _ in range(rng.randrange(0, 3000)))
        finder = ReplyFinder(1, 3)
        stream = noise + reply
        at = 0
        found = None
        while at < len(stream) and found is None:
            step = rng.randrange(1, 300)
            found = finder.feed(stream[at : at + step])
            assert len(finder._buffer) <= MAX_ADU
            at += step
        # noise may hold a valid-looking frame of its own by chance (1 in 65536 per candidate)
        assert found == reply or (found is not None and found[:2] in (b"\x01\x03", b"\x01\x83"))
        assert len(finder.heard) <= MAX_ADU
    bad = reply[:-1] + bytes([reply[-1] ^ 1])
    finder = ReplyFinder(1, 3)
    assert finder.feed(bad) is None and finder.rejected == 1
    assert finder.feed(reply) == reply
    echo = build_rtu_frame(1, bytes([3, 0, 10, 0, 2]))
    finder = ReplyFinder(1, 3, echo=echo)
    assert finder.feed(echo[:3]) is None and finder.feed(echo[3:] + reply) == reply
