"""Modbus TCP replies that leave the byte stream out of step, through the real driver against a raw
MBAP peer (an asyncio server): one misbehaving unit behind a gateway must not be blamed on its
healthy neighbours.

- A reply whose MBAP length is one byte short: the byte left over was read as the start of the
  next reply, so healthy unit 1's next read failed with a FrameError (a false device_offline at
  retries = 0). Now the connection is dropped (and opened again before the next request) whenever
  a reply does not split or bytes remain after it; the error names the unit that sent it.
"""

from __future__ import annotations

import asyncio
import struct
from collections.abc import AsyncIterator, Callable

import pytest
from modbus_support import LOCATION, device_model

from citynerve.drivers.modbus.config import ModbusDeviceConfig, ModbusTcpBusConfig
from citynerve.drivers.modbus.driver import ModbusDriver
from citynerve.gateway.api import FrameError

TIMEOUT_S = 0.3

# unit -> what it sends for a request (tid, unit, pdu): (bytes, pause after) pieces
Behaviour = Callable[[int, int, bytes], list[tuple[bytes, float]]]


def reply_pdu(pdu: bytes) -> bytes:
    """FC 3: holding[a] = a * 10."""
    fc, address, count = struct.unpack(">BHH", pdu[:5])
    return bytes([fc, 2 * count]) + b"".join(struct.pack(">H", (address + i) * 10) for i in range(count))


def mbap(tid: int, unit: int, pdu: bytes, length: int | None = None) -> bytes:
    return struct.pack(">HHHB", tid, 0, len(pdu) + 1 if length is None else length, unit) + pdu


BEHAVIOURS: dict[int, Behaviour] = {
    4: lambda tid, unit, pdu: [(mbap(tid, unit, reply_pdu(pdu), length=len(reply_pdu(pdu))), 0.0)],
    5: lambda tid, unit, pdu: [(mbap(tid, unit, reply_pdu(pdu)) + b"\x00", 0.0)],
    6: lambda tid, unit, pdu: [(mbap(tid, unit, reply_pdu(pdu)), 0.05), (b"\x00\x07\x00", 0.0)],
}


class RawPeer:
    """Answers unit 1 (and any unit without a behaviour) like a device; counts connections."""

    def __init__(self) -> None:
        self.connections = 0
        self.late: dict[int, float] = {}  # unit -> seconds before its (well-formed) reply

    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        try:
            while True:
                tid, _, length, unit = struct.unpack(">HHHB", await reader.readexactly(7))
                pdu = await reader.readexactly(length - 1)
                if unit in self.late:
                    asyncio.get_running_loop().call_later(
                        self.late[unit], writer.write, mbap(tid, unit, reply_pdu(pdu))
                    )
                    continue
                pieces = BEHAVIOURS.get(unit, lambda t, u, p: [(mbap(t, u, reply_pdu(p)), 0.0)])(
                    tid, unit, pdu
                )
                for data, pause in pieces:
                    writer.write(data)
                    await writer.drain()
                    await asyncio.sleep(pause)
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            writer.close()


def meter(unit: int) -> ModbusDeviceConfig:
    return device_model(
        id=f"d{unit}", bus="b1", profile="t", address=unit, location=LOCATION,
        points={"v": {"table": "holding", "address": 3}},
    )  # fmt: skip


UNITS = {u: meter(u) for u in (1, 2, 3, 4, 5, 6, 8)}


@pytest.fixture
async def peer() -> AsyncIterator[tuple[RawPeer, ModbusDriver]]:
    raw = RawPeer()
    server = await asyncio.start_server(raw.handle, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    bus = ModbusTcpBusConfig(id="b1", host="127.0.0.1", port=port, timeout_s=TIMEOUT_S, retries=0)
    driver = ModbusDriver(bus, list(UNITS.values()))
    await driver.open()
    try:
        yield raw, driver
    finally:
        await driver.close()
        server.close()


async def read(driver: ModbusDriver, unit: int) -> object:
    device = UNITS[unit]
    (request,) = driver.plan(device)
    return {s.point: (s.value, s.quality.value) for s in await driver.read(device, request)}


async def test_a_short_mbap_length_is_blamed_on_its_unit_not_on_the_next(
    peer: tuple[RawPeer, ModbusDriver],
) -> None:
    raw, driver = peer
    assert await read(driver, 1) == {"v": (30, "good")}
    for _ in range(2):
        with pytest.raises(FrameError) as info:
            await read(driver, 4)
        assert info.value.data[6] == 4  # the whole MBAP frame: unit 4 sent it
        assert "unit 4" in info.value.reason
        assert "1 byte after" in info.value.reason
        assert not driver.channel.connected  # out of step: dropped at once
        assert await read(driver, 1) == {"v": (30, "good")}  # opened again, read in step
    assert raw.connections == 3


async def test_bytes_after_a_whole_reply_drop_the_connection_not_the_next_read(
    peer: tuple[RawPeer, ModbusDriver],
) -> None:
    raw, driver = peer
    assert await read(driver, 5) == {"v": (30, "good")}  # the reply itself answers the request
    assert not driver.channel.connected
    assert await read(driver, 1) == {"v": (30, "good")}
    # the stray bytes come after the reply was taken, before the next request
    assert await read(driver, 6) == {"v": (30, "good")}
    await asyncio.sleep(0.3)
    assert await read(driver, 1) == {"v": (30, "good")}
    assert raw.connections == 3
