"""Peers that accept Modbus TCP connections and then drop them, through a real ModbusDriver and
BusOwner: a converter whose connection slots are taken (accepts, closes at once), a gateway that
resets the connection when asked for a dead unit, and a converter that restarts. The owner reopened
at once after every loss and probed every offline device within a second of each connect: a
reconnect and log storm for ever, the offline devices' own backoff ignored."""

from __future__ import annotations

import asyncio
import logging
import random
import struct

import pytest
from modbus_support import OfflineSink as Sink
from modbus_support import holding_meter as meter

from citynerve.drivers.modbus.config import ModbusTcpBusConfig
from citynerve.drivers.modbus.driver import ModbusDriver
from citynerve.gateway.api import EventState
from citynerve.gateway.bus import BusOwner
from tests.bus.owner_support import running, wait_for


class DroppingPeer:
    """A Modbus TCP peer that answers unit 1 (holding[0] = 7) and, for the units in `drops`, closes
    the connection (a gateway resetting for a dead unit); with `drop_all` it closes every connection
    as soon as it is accepted (a converter whose connection slots are taken)."""

    def __init__(self, drops: set[int], *, drop_all: bool = False) -> None:
        self.drops = drops
        self.drop_all = drop_all
        self.connections = 0
        self.asked: dict[int, int] = {}
        self.port = 0
        self._server: asyncio.Server | None = None
        self._writers: set[asyncio.StreamWriter] = set()

    async def __aenter__(self) -> DroppingPeer:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        self.stop()

    async def start(self) -> None:
        """Listen (again, on the same port once it has one)."""
        self._server = await asyncio.start_server(self._serve, "127.0.0.1", self.port)
        self.port = self._server.sockets[0].getsockname()[1]

    def stop(self) -> None:
        """Stop listening and close every connection (a restart: connects refused until `start`)."""
        if self._server is not None:
            self._server.close()
            self._server = None
        for writer in self._writers:
            writer.close()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        self._writers.add(writer)
        try:
            while not self.drop_all:
                tid, _, length, unit = struct.unpack(">HHHB", await reader.readexactly(7))
                pdu = await reader.readexactly(length - 1)
                self.asked[unit] = self.asked.get(unit, 0) + 1
                if unit in self.drops:
                    break
                out = bytes([pdu[0], 2]) + struct.pack(">H", 7)
                writer.write(struct.pack(">HHHB", tid, 0, len(out) + 1, unit) + out)
        except (asyncio.IncompleteReadError, ConnectionError, asyncio.CancelledError):
            pass  # the client went, or the test ended
        finally:
            self._writers.discard(writer)
            writer.close()


def channel_logs(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [r.getMessage() for r in caplog.records if "channel" in r.getMessage() and r.levelno >= 30]


async def test_a_peer_that_accepts_and_drops_every_connection_is_not_hammered(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """Every connection is accepted and closed at once. The owner reopened at once after every
    loss and probed every offline device within a second of each connect: a connection a second
    for ever and an ERROR + WARNING per cycle. Now a connection that no reply came on does not
    reset the open's doubling backoff."""
    caplog.set_level(logging.DEBUG, logger="citynerve")
    async with DroppingPeer(set(), drop_all=True) as peer:
        bus = ModbusTcpBusConfig(
            id="b1", host="127.0.0.1", port=peer.port, timeout_s=0.3, retries=2, offline_after=2,
            backoff_initial_s=2.0, backoff_max_s=60.0,
        )  # fmt: skip
        devices = [meter(f"m{u}", u, 0.5) for u in range(1, 4)]
        sink = Sink()
        owner = BusOwner(bus, devices, ModbusDriver(bus, devices), sink, rng=random.Random(1))
        async with running(owner):
            await wait_for(lambda: all(sink.offline(d.id) for d in devices), 5.0, "all offline")
            at_offline = peer.connections
            await asyncio.sleep(6.0)
        # Open backoff 0.5 s doubling (less up to half at random): at most 5 opens in 6 s, and the
        # offline meters' probes (2 s doubling), each with the driver's one reconnect before sending.
        # It was about 15 connections a second.
        assert peer.connections - at_offline <= 12, (at_offline, peer.connections)
    assert len(channel_logs(caplog)) <= 2, channel_logs(caplog)


async def test_a_gateway_resetting_for_a_dead_unit_keeps_its_backoff(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """Unit 2 is dead and the gateway closes the connection when asked for it; unit 1 answers. The
    owner re-probed unit 2 within a second of every reconnect (unit 1's answers opened the channel
    again), about once a second for ever, ERROR + WARNING each time; now at unit 2's own backoff."""
    caplog.set_level(logging.DEBUG, logger="citynerve")
    async with DroppingPeer({2}) as peer:
        bus = ModbusTcpBusConfig(
            id="b1", host="127.0.0.1", port=peer.port, timeout_s=0.3, retries=2, offline_after=2,
            backoff_initial_s=1.0, backoff_max_s=4.0,
        )  # fmt: skip
        devices = [meter("good-1", 1, 0.2), meter("dead-2", 2, 0.2)]
        sink = Sink()
        owner = BusOwner(bus, devices, ModbusDriver(bus, devices), sink, rng=random.Random(1))
        async with running(owner):
            await wait_for(lambda: sink.offline("dead-2"), 5.0, "dead-2 offline")
            at_offline = peer.asked.get(2, 0)
            await asyncio.sleep(6.0)
            asked = peer.asked.get(2, 0) - at_offline
            good = owner.health["good-1"]
            assert (good.online, good.faulted) == (True, None) and not sink.offline("good-1")
        # Its backoff 1 s doubling to 4 s (+-20 %): at most 4 probes in 6 s (it was one a second).
        assert 1 <= asked <= 4, asked
    assert len(channel_logs(caplog)) <= 2, channel_logs(caplog)


async def test_a_converter_restart_is_recovered_at_once() -> None:
    """A converter that restarts (its connection reset, connects refused a while, then up again):
    the meter that went offline meanwhile is probed as soon as the channel opens again, not at its
    own backoff."""
    async with DroppingPeer(set()) as peer:
        bus = ModbusTcpBusConfig(
            id="b1", host="127.0.0.1", port=peer.port, timeout_s=0.3, retries=1, offline_after=2,
            backoff_initial_s=2.0, backoff_max_s=60.0,
        )  # fmt: skip
        devices = [meter("wm-1", 1, 0.1)]
        sink = Sink()
        owner = BusOwner(bus, devices, ModbusDriver(bus, devices), sink, rng=random.Random(1))
        async with running(owner):
            await wait_for(lambda: owner.health["wm-1"].transactions >= 2, 5.0, "polls")
            peer.stop()  # the converter restarts
            await wait_for(lambda: sink.offline("wm-1"), 5.0, "wm-1 offline")
            await peer.start()  # up again
            took = await wait_for(lambda: owner.health["wm-1"].online, 5.0, "wm-1 back")
            assert owner.channel_open and owner.channel_error is None
        # The open's backoff (0.5 s doubling, less up to half) bounds it; wm-1's own (2 s) does not.
        assert took < 1.9, took
    assert sink.offline("wm-1") == [EventState.RAISED, EventState.CLEARED]
