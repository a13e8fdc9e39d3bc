"""Fuzzing the line: random bytes instead of replies, over RTU (pty relay) and TCP (raw server).

Whatever arrives, the driver raises one of its typed transient errors (or, by chance, reads a
valid reply), never anything else, and the channel keeps working for the next transaction.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
from collections.abc import AsyncIterator

import pytest
from modbus_support import LOCATION, device_model

from citynerve.drivers.modbus.codec import build_rtu_frame
from citynerve.drivers.modbus.config import ModbusRtuBusConfig, ModbusTcpBusConfig
from citynerve.drivers.modbus.driver import ModbusDriver
from citynerve.gateway.api import DeviceExceptionError, DeviceTimeoutError, FrameError
from citynerve.hil.sim.modbus import ModbusBuilding, PtyLink

TYPED = (FrameError, DeviceTimeoutError, DeviceExceptionError)
SMOKE = device_model(
    id="sd",
    bus="rs485",
    profile="modbus-smoke-detector",
    address=11,
    location=LOCATION,
    points={"state": {"table": "holding", "address": 0}, "addr": {"table": "holding", "address": 2000}},
    max_gap=0,
)


def garbage(rng: random.Random, reply: bytes) -> bytes:
    """Random damage of a real reply: noise, truncation, bit flips, a forged CRC, a wrong length."""
    kind = rng.randrange(6)
    if kind == 0:
        return rng.randbytes(rng.randint(1, 40))
    if kind == 1:
        return reply[: rng.randint(1, max(1, len(reply) - 1))]
    if kind == 2:
        i = rng.randrange(len(reply))
        return reply[:i] + bytes([reply[i] ^ (1 << rng.randrange(8))]) + reply[i + 1 :]
    if kind == 3:  # well-formed frame with a nonsense PDU for this unit
        return build_rtu_frame(reply[0], rng.randbytes(rng.randint(1, 12)))
    if kind == 4:
        return reply + rng.randbytes(rng.randint(1, 8))
    return rng.randbytes(3) + reply[2:]


async def test_random_replies_on_rtu() -> None:
    rng = random.Random(7)
    outcomes: dict[str, int] = {}
    async with PtyLink() as link, ModbusBuilding(rtu_url=link.device_port, baudrate=19200):
        bus = ModbusRtuBusConfig(id="rs485", port=link.gateway_port, baudrate=19200, timeout_s=0.08)
        driver = ModbusDriver(bus, [SMOKE])
        await driver.open()
        try:
            plan = list(driver.plan(SMOKE))
            for _ in range(40):
                link.to_gateway = lambda data: garbage(rng, data)
                try:
                    await driver.read(SMOKE, rng.choice(plan))
                    outcome = "ok"
                except TYPED as err:
                    outcome = type(err).__name__
                outcomes[outcome] = outcomes.get(outcome, 0) + 1
                link.to_gateway = None
                samples = await driver.read(SMOKE, plan[0])  # the line recovers at once
                assert samples[0].point == "state"
        finally:
            await driver.close()
    # Bytes arrived, so it is a frame error, never a plain timeout; some damage leaves a valid
    # frame (extra bytes after it) or turns the reply into an exception reply.
    assert outcomes.get("FrameError", 0) > 10 and "DeviceTimeoutError" not in outcomes


class GarbageServer:
    """A TCP peer that answers every request with bytes the test chooses (None: a good reply)."""

    def __init__(self, rng: random.Random) -> None:
        self.rng = rng
        self.mode = "garbage"

    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while True:
                header = await reader.readexactly(7)
                length = int.from_bytes(header[4:6], "big")
                pdu = await reader.readexactly(length - 1)
                if self.mode == "good":
                    # One register of 0x002A, whatever was asked.
                    body = bytes([pdu[0], 2, 0, 42])
                    writer.write(header[:4] + (len(body) + 1).to_bytes(2, "big") + header[6:7] + body)
                else:
                    writer.write(self.rng.randbytes(self.rng.randint(1, 30)))
                await writer.drain()
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            writer.close()


@pytest.fixture
async def garbage_server() -> AsyncIterator[tuple[GarbageServer, int]]:
    peer = GarbageServer(random.Random(11))
    server = await asyncio.start_server(peer.handle, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    async with server:
        yield peer, port


async def test_random_replies_on_tcp(garbage_server: tuple[GarbageServer, int]) -> None:
    peer, port = garbage_server
    device = device_model(
        id="m",
        bus="t",
        profile="x",
        address=1,
        location=LOCATION,
        points={"v": {"table": "holding", "address": 0}},
    )
    driver = ModbusDriver(ModbusTcpBusConfig(id="t", host="127.0.0.1", port=port, timeout_s=0.08), [device])
    (request,) = driver.plan(device)
    errors = 0
    for _ in range(30):
        if not driver.channel.connected:
            await driver.open()  # as the bus owner does after a ChannelError
        peer.mode = "garbage"
        try:
            await driver.read(device, request)
        except TYPED:
            errors += 1
        except Exception as err:
            from citynerve.gateway.api import ChannelError

            assert isinstance(err, ChannelError), repr(err)
            continue
        peer.mode = "good"
        if driver.channel.connected:
            with contextlib.suppress(*TYPED):  # late garbage of the previous answer may still arrive
                assert [s.value for s in await driver.read(device, request)] == [42]
    await driver.close()
    assert errors > 10
