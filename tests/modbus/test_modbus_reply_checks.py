"""Replies that do not answer the request are refused, on Modbus TCP and RTU over TCP: another
unit id, another function (also an exception reply of another function), more or fewer registers
or bits than asked, a write echo that is not the request's. A raw peer (asyncio server) answers
with CRC-valid / MBAP-valid frames that it tampers with; the real driver reads through it."""

from __future__ import annotations

import asyncio
import struct
from collections.abc import AsyncIterator

import pytest
from modbus_support import LOCATION, device_model

from citynerve.drivers.modbus.codec import build_rtu_frame
from citynerve.drivers.modbus.config import ModbusRtuOverTcpBusConfig, ModbusTcpBusConfig
from citynerve.drivers.modbus.driver import ModbusDriver
from citynerve.gateway.api import FrameError, FrameFault

DEVICE = device_model(
    id="m1", bus="b1", profile="t", address=1, location=LOCATION,
    points={
        "v": {"table": "holding", "address": 10},
        "w": {"table": "holding", "address": 11, "writable": True},
        "f": {"table": "holding", "address": 20, "type": "float32", "writable": True},
        "c": {"table": "coil", "address": 3},
    },
)  # fmt: skip


class TamperPeer:
    """Answers every request like a device would, then applies `mode` to the reply."""

    def __init__(self, rtu: bool) -> None:
        self.rtu = rtu
        self.mode = "ok"

    def reply(self, unit: int, pdu: bytes) -> tuple[int, bytes]:
        fc, address, count = pdu[0], *struct.unpack(">HH", pdu[1:5])
        mode = self.mode
        if fc in (1, 2, 3, 4):
            if fc in (3, 4):
                data = b"".join(((address + i) & 0xFFFF).to_bytes(2, "big") for i in range(count))
            else:
                data = bytes((count + 7) // 8)
            if mode == "extra":
                data += b"\xde\xad"
            elif mode == "short":
                data = data[:-2] if fc in (3, 4) else b""
            other = {1: 2, 2: 1, 3: 4, 4: 3}[fc]  # a read reply of the neighbouring table
            modes = {"wrong_function": other, "exception_of_another_function": other | 0x80}
            out_fc = modes.get(mode, fc)
            if out_fc & 0x80:
                return unit, bytes([out_fc, 2])
            return unit + (7 if mode == "wrong_unit" else 0), bytes([out_fc, len(data)]) + data
        echo = bytearray(pdu[:5])
        if mode == "bad_echo":
            echo[2] ^= 0x01  # the address the device says it wrote (another request's reply)
        return unit, bytes(echo)

    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while True:
                if self.rtu:
                    unit, fc = await reader.readexactly(2)
                    rest = await reader.readexactly(5 if fc in (15, 16) else 6)
                    if fc in (15, 16):
                        rest += await reader.readexactly(rest[4] + 2)
                    u, pdu = self.reply(unit, bytes([fc]) + rest[:-2])
                    writer.write(build_rtu_frame(u, pdu))
                else:
                    tid, _, length, unit = struct.unpack(">HHHB", await reader.readexactly(7))
                    u, pdu = self.reply(unit, await reader.readexactly(length - 1))
                    writer.write(struct.pack(">HHHB", tid, 0, len(pdu) + 1, u) + pdu)
                await writer.drain()
        except (asyncio.IncompleteReadError, ConnectionError):
            pass


@pytest.fixture(params=["tcp", "rtu_over_tcp"])
async def peer(request: pytest.FixtureRequest) -> AsyncIterator[tuple[TamperPeer, ModbusDriver]]:
    tamper = TamperPeer(rtu=request.param == "rtu_over_tcp")
    server = await asyncio.start_server(tamper.handle, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    model = ModbusTcpBusConfig if request.param == "tcp" else ModbusRtuOverTcpBusConfig
    driver = ModbusDriver(model(id="b1", host="127.0.0.1", port=port, timeout_s=0.2), [DEVICE])
    await driver.open()
    try:
        yield tamper, driver
    finally:
        await driver.close()
        server.close()


def request_of(driver: ModbusDriver, point: str) -> object:
    return next(r for r in driver.plan(DEVICE) if point in r.points)


async def test_a_reply_that_answers_the_request_is_taken(peer: tuple[TamperPeer, ModbusDriver]) -> None:
    _, driver = peer
    samples = await driver.read(DEVICE, request_of(driver, "v"))  # type: ignore[arg-type]
    assert {s.point: s.value for s in samples}["v"] == 10
    await driver.write(DEVICE, "w", 5)
    await driver.write(DEVICE, "f", 1.5)  # FC 16
    assert (await driver.diag("write", {"unit": 1, "table": "coil", "address": 3, "value": 1}))[
        "function"
    ] == 5


@pytest.mark.parametrize(
    ("mode", "fault"),
    [
        ("wrong_unit", FrameFault.ADDRESS),
        ("wrong_function", FrameFault.FUNCTION),
        ("exception_of_another_function", FrameFault.FUNCTION),
        ("extra", FrameFault.FUNCTION),
        ("short", FrameFault.FUNCTION),
    ],
)
async def test_a_read_reply_that_does_not_answer_is_a_frame_error(
    peer: tuple[TamperPeer, ModbusDriver], mode: str, fault: FrameFault
) -> None:
    tamper, driver = peer
    tamper.mode = mode
    for point in ("v", "c"):  # registers and bits
        with pytest.raises(FrameError) as info:
            await driver.read(DEVICE, request_of(driver, point))  # type: ignore[arg-type]
        assert info.value.fault is fault, (point, info.value)
    tamper.mode = "ok"  # and the next transaction is fine
    assert await driver.read(DEVICE, request_of(driver, "v"))  # type: ignore[arg-type]


async def test_a_write_echo_that_is_not_the_request_is_a_frame_error(
    peer: tuple[TamperPeer, ModbusDriver],
) -> None:
    tamper, driver = peer
    tamper.mode = "bad_echo"
    for point, value in (("w", 5), ("f", 1.5)):  # FC 6, FC 16
        with pytest.raises(FrameError) as info:
            await driver.write(DEVICE, point, value)
        assert info.value.fault is FrameFault.FUNCTION and "echo" in info.value.reason
    for values in ({"value": 1}, {"values": [1, 0, 1]}):  # FC 5, FC 15
        with pytest.raises(FrameError):
            await driver.diag("write", {"unit": 1, "table": "coil", "address": 3, **values})
