"""Modbus TCP replies that leave the byte stream out of step, or that carry another transaction id,
through the real driver against a raw MBAP peer (an asyncio server): one misbehaving unit behind a
gateway must not be blamed on its healthy neighbours, and a gateway that answers is not reported as
a device that does not.

- A reply whose MBAP length is one byte short: the byte left over was read as the start of the
  next reply, so healthy unit 1's next read failed with a FrameError (a false device_offline at
  retries = 0). Now the connection is dropped (and opened again before the next request) whenever
  a reply does not split or bytes remain after it; the error names the unit that sent it.
- A reply with another transaction id was dropped silently: "device d2: no answer within 0.3 s"
  though the gateway answered every request. Now such replies are counted and a timeout that
  follows one is a FrameError naming both transaction ids.
"""

from __future__ import annotations

import asyncio
import struct
from collections.abc import AsyncIterator, Callable

import pytest
from modbus_support import LOCATION, device_model

from citynerve.drivers.modbus.config import ModbusDeviceConfig, ModbusTcpBusConfig
from citynerve.drivers.modbus.driver import ModbusDriver
from citynerve.gateway.api import DeviceTimeoutError, FrameError, FrameFault

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
    2: lambda tid, unit, pdu: [(mbap(tid ^ 0x55, unit, reply_pdu(pdu)), 0.0)],
}


class RawPeer:
    """Answers unit 1 (and any unit without a behaviour) like a device; counts connections."""

    def __init__(self) -> None:
        self.connections = 0
        self.late: dict[int, float] = {}  # unit -> seconds before its (well-formed) reply
        self.silent: set[int] = set()

    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        try:
            while True:
                tid, _, length, unit = struct.unpack(">HHHB", await reader.readexactly(7))
                pdu = await reader.readexactly(length - 1)
                if unit in self.silent:
                    continue
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


async def test_a_reply_with_another_transaction_id_is_a_frame_error_naming_both(
    peer: tuple[RawPeer, ModbusDriver],
) -> None:
    _, driver = peer
    assert await read(driver, 1) == {"v": (30, "good")}  # transaction id 1
    with pytest.raises(FrameError) as info:
        await read(driver, 2)  # transaction id 2, answered as 2 ^ 0x55 = 0x57
    assert info.value.fault is FrameFault.FUNCTION
    assert info.value.reason == (
        "no reply with transaction id 2 within 0.3 s; a reply with transaction id 87 came"
        " (a gateway that does not copy the transaction id?)"
    )
    assert driver.channel.stray_replies == 1
    assert await read(driver, 1) == {"v": (30, "good")}


async def test_a_device_answering_after_its_timeout_is_named_so(peer: tuple[RawPeer, ModbusDriver]) -> None:
    raw, driver = peer
    raw.late[3] = TIMEOUT_S + 0.15  # its reply to one request comes during the next
    with pytest.raises(DeviceTimeoutError):
        await read(driver, 3)  # transaction id 1: nothing came
    with pytest.raises(FrameError) as info:
        await read(driver, 3)
    assert info.value.reason == (
        "no reply with transaction id 2 within 0.3 s; a reply with transaction id 1 came"
        " (a late reply to an earlier request: the device answers slower than timeout_s?)"
    )
    # another unit's late reply during a silent unit's transaction: that unit did not answer
    raw.silent.add(8)
    with pytest.raises(DeviceTimeoutError):
        await read(driver, 8)  # the late reply to transaction 2 (unit 3) comes meanwhile
    del raw.late[3]
    assert await read(driver, 3) == {"v": (30, "good")}
    assert driver.channel.stray_replies == 2
