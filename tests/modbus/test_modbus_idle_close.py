"""A Modbus peer that closes TCP connections idle for less than the poll interval (a serial device
server's inactivity timeout, some TCP meters): a real pymodbus server behind `IdleClosingProxy`, a
real ModbusDriver and BusOwner. The channel found its connection closed before every poll, raised
"connection lost" without sending, and the owner's reopened connection idled out before the next
poll: the device went offline and was never read again, though it answered every request."""

from __future__ import annotations

import asyncio
import random
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass

import pytest
from modbus_support import LOCATION, BankServer, device_model, start_bank_server

from citynerve.drivers.modbus.config import (
    ModbusBusConfig,
    ModbusRtuBusConfig,
    ModbusRtuOverTcpBusConfig,
    ModbusTcpBusConfig,
)
from citynerve.drivers.modbus.driver import ModbusDriver
from citynerve.gateway.api import ChannelError, Event, SampleBatch
from citynerve.gateway.bus import BusOwner
from citynerve.hil.sim.idle_close import IdleClosingProxy

IDLE_S = 0.2  # the peer's inactivity timeout
POLL_S = 0.5  # longer: every poll finds its connection closed


def tcp(proxy: IdleClosingProxy) -> ModbusBusConfig:
    return ModbusTcpBusConfig(id="b1", host=proxy.host, port=proxy.port, timeout_s=0.3)


def rtu_over_tcp(proxy: IdleClosingProxy) -> ModbusBusConfig:
    return ModbusRtuOverTcpBusConfig(id="b1", host=proxy.host, port=proxy.port, timeout_s=0.3)


def rtu_socket_url(proxy: IdleClosingProxy) -> ModbusBusConfig:
    """RTU on a pyserial socket:// URL (a transparent converter configured as a serial port)."""
    return ModbusRtuBusConfig(id="b1", port=f"socket://{proxy.host}:{proxy.port}", timeout_s=0.3)


BUSES: dict[str, tuple[Callable[[IdleClosingProxy], ModbusBusConfig], bool]] = {
    "modbus_tcp": (tcp, False),  # (bus config, RTU framing on the server)
    "modbus_rtu_over_tcp": (rtu_over_tcp, True),
    "modbus_rtu_socket_url": (rtu_socket_url, True),
}


@dataclass
class Peer:
    server: BankServer
    proxy: IdleClosingProxy


@pytest.fixture(params=list(BUSES))
async def peer(request: pytest.FixtureRequest) -> AsyncIterator[tuple[Peer, ModbusBusConfig]]:
    make_bus, rtu = BUSES[request.param]
    server = await start_bank_server((1,), rtu_framing=rtu)
    try:
        async with IdleClosingProxy(upstream=(server.host, server.port), idle_s=IDLE_S) as proxy:
            yield Peer(server, proxy), make_bus(proxy)
    finally:
        await server.server.shutdown()


class Sink:
    def __init__(self) -> None:
        self.batches: list[SampleBatch] = []
        self.events: list[Event] = []
        self.polled = asyncio.Event()

    def submit(self, batch: SampleBatch) -> None:
        self.batches.append(batch)
        self.polled.set()

    def event(self, event: Event) -> None:
        self.events.append(event)

    def mark_offline(self, device_id: str, ts: float) -> None:
        pass

    async def next_poll(self, limit_s: float = 5.0) -> None:
        self.polled.clear()
        async with asyncio.timeout(limit_s):
            await self.polled.wait()


async def test_a_peer_that_closes_idle_connections_is_read_at_every_poll(
    peer: tuple[Peer, ModbusBusConfig],
) -> None:
    p, bus = peer
    p.server.banks[1].put("holding", 0, [42])
    meter = device_model(
        id="em-1", bus="b1", profile="t", address=1, location=LOCATION, poll_interval_s=POLL_S,
        points={"v": {"table": "holding", "address": 0}},
    )  # fmt: skip
    sink = Sink()
    owner = BusOwner(bus, [meter], ModbusDriver(bus, [meter]), sink, rng=random.Random(1))
    task = asyncio.create_task(owner.run())
    try:
        for _ in range(4):
            await sink.next_poll()
        health = owner.health["em-1"]
        assert p.proxy.idle_closed >= 3  # the peer did close the connection between polls
        assert [s.value for b in sink.batches for s in b.samples] == [42] * len(sink.batches)
        assert (health.online, health.errors, health.last_error) == (True, 0, None)
        assert owner.counters.channel_errors == 0 and owner.channel_error is None
        assert sink.events == []
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)


async def test_a_reconnect_that_fails_is_the_channel_error_of_the_open() -> None:
    server = await start_bank_server((1,))
    meter = device_model(
        id="em-1", bus="b1", profile="t", address=1, location=LOCATION,
        points={"v": {"table": "holding", "address": 0}},
    )  # fmt: skip
    try:
        async with IdleClosingProxy(upstream=(server.host, server.port), idle_s=IDLE_S) as proxy:
            bus = tcp(proxy)
            driver = ModbusDriver(bus, [meter])
            await driver.open()
            request = driver.plan(meter)[0]
            assert [s.value for s in await driver.read(meter, request)] == [0]
            await proxy.stop()  # the connection closed and the endpoint gone: connects refused
            await asyncio.sleep(0.1)
            with pytest.raises(ChannelError) as info:
                await driver.read(meter, request)
            where = f"{proxy.host}:{proxy.port}"
            assert (
                info.value.reason
                == f"cannot connect to {where}: connection refused (nothing listens on that port)"
            )
            assert not driver.channel.connected
            await driver.close()
    finally:
        await server.server.shutdown()


async def test_a_connection_lost_after_the_request_left_is_not_sent_again() -> None:
    """A write that went out is never repeated behind the owner's back (a pulse coil, a counter)."""
    server = await start_bank_server((1,))
    valve = device_model(
        id="valve", bus="b1", profile="t", address=1, location=LOCATION,
        points={"set": {"table": "holding", "address": 0, "writable": True}},
    )  # fmt: skip
    try:
        async with IdleClosingProxy(upstream=(server.host, server.port), idle_s=5.0) as proxy:
            driver = ModbusDriver(tcp(proxy), [valve])
            await driver.open()
            proxy.cut_after_request = True
            with pytest.raises(ChannelError) as info:
                await driver.write(valve, "set", 1)
            assert info.value.reason == "connection lost"
            assert (proxy.accepted, proxy.requests) == (1, 1)  # one connection, one request
            await driver.close()
    finally:
        await server.server.shutdown()
