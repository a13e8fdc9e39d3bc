"""Modbus TCP unit ids as TCP devices use them: a device on the network itself is addressed as 255
or 0 (Modbus Messaging Implementation Guide 1.0b, 4.4.2), and some devices answer every request
with a fixed unit id instead of copying the request's (`reply_unit`). The peers: a real pymodbus
server holding units 0 and 255 (dev_id 0 is a device there, not a broadcast), and a raw asyncio
peer that answers with a fixed unit id, as such devices do."""

from __future__ import annotations

import asyncio
import json
import struct
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner, Result
from modbus_support import LOCATION, BankServer, start_bank_server, tcp_bus
from pydantic import ValidationError

from citynerve.drivers.modbus import TCP_DRIVER
from citynerve.drivers.modbus.config import (
    ModbusDeviceConfig,
    ModbusRtuOverTcpBusConfig,
    ModbusTcpDeviceConfig,
)
from citynerve.drivers.modbus.driver import ModbusDriver
from citynerve.gateway.api import DiagParamError, FrameError, FrameFault
from citynerve.gateway.cli import main

POINTS = {
    "v": {"table": "holding", "address": 10},
    "w": {"table": "holding", "address": 11, "writable": True},
}


def tcp_device(address: int, **extra: Any) -> ModbusTcpDeviceConfig:
    return ModbusTcpDeviceConfig.model_validate(
        {"id": f"d{address}", "bus": "b1", "profile": "t", "address": address, "location": LOCATION,
         "points": POINTS, **extra}
    )  # fmt: skip


def test_a_tcp_bus_takes_unit_ids_0_and_248_to_255_and_a_serial_line_does_not() -> None:
    assert TCP_DRIVER.device_model is ModbusTcpDeviceConfig
    assert tcp_device(255).address == 255
    assert tcp_device(0).points["v"].enabled  # on TCP unit 0 is the device itself, read like any
    fields = {"id": "d", "bus": "b1", "profile": "t", "location": LOCATION, "points": POINTS}
    with pytest.raises(ValidationError, match="less than or equal to 247"):
        ModbusDeviceConfig.model_validate({**fields, "address": 255})
    with pytest.raises(ValidationError, match="broadcast"):
        ModbusDeviceConfig.model_validate({**fields, "address": 0})
    with pytest.raises(ValidationError, match="reply_unit"):  # a serial reply carries the unit asked
        ModbusDeviceConfig.model_validate({**fields, "address": 1, "reply_unit": 0})
    with pytest.raises(ValidationError, match="less than or equal to 255"):
        tcp_device(1, reply_unit=256)


@pytest.fixture
async def direct_server() -> AsyncIterator[BankServer]:
    srv = await start_bank_server((0, 255))
    srv.banks[0].put("holding", 10, [1234])
    srv.banks[255].put("holding", 10, [2550])
    yield srv
    await srv.server.shutdown()


async def test_units_255_and_0_read_and_write_on_a_real_tcp_server(direct_server: BankServer) -> None:
    d255, d0 = tcp_device(255), tcp_device(0)
    driver = ModbusDriver(tcp_bus(direct_server), [d255, d0])
    await driver.open()
    try:
        for device, value in ((d255, 2550), (d0, 1234)):
            (request,) = driver.plan(device)
            assert {s.point: s.value for s in await driver.read(device, request)}["v"] == value
        # A write to unit 0 on TCP is no broadcast: the device's echo is awaited and checked.
        await driver.write(d0, "w", 77)
        assert direct_server.banks[0].getValues(3, 11, 1) == [77]
        result = await driver.diag("read", {"unit": 255, "address": 10})
        assert result["registers"] == [2550]
    finally:
        await driver.close()


class FixedUnitPeer:
    """A TCP device that answers every request with unit id `answer_as` (registers read as their
    address; writes echoed), whatever unit the request named."""

    def __init__(self, answer_as: int) -> None:
        self.answer_as = answer_as

    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while True:
                tid, _, length, _unit = struct.unpack(">HHHB", await reader.readexactly(7))
                pdu = await reader.readexactly(length - 1)
                fc, address, count = pdu[0], *struct.unpack(">HH", pdu[1:5])
                if fc in (3, 4):
                    data = b"".join((address + i).to_bytes(2, "big") for i in range(count))
                    reply = bytes([fc, len(data)]) + data
                else:
                    reply = pdu[:5]
                writer.write(struct.pack(">HHHB", tid, 0, len(reply) + 1, self.answer_as) + reply)
                await writer.drain()
        except (asyncio.IncompleteReadError, ConnectionError):
            pass


@pytest.fixture
async def fixed_peer() -> AsyncIterator[tuple[FixedUnitPeer, int]]:
    peer = FixedUnitPeer(0)
    server = await asyncio.start_server(peer.handle, "127.0.0.1", 0)
    try:
        yield peer, server.sockets[0].getsockname()[1]
    finally:
        server.close()
        await server.wait_closed()


async def test_a_device_answering_a_fixed_unit_is_read_with_reply_unit_and_named_without(
    fixed_peer: tuple[FixedUnitPeer, int],
) -> None:
    peer, port = fixed_peer
    plain, fixed = tcp_device(1), tcp_device(2, reply_unit=0)
    bus = tcp_bus(BankServer("127.0.0.1", port, {}, None, None), timeout_s=0.5)  # type: ignore[arg-type]
    driver = ModbusDriver(bus, [plain, fixed])
    await driver.open()
    try:
        with pytest.raises(FrameError) as info:
            await driver.read(plain, driver.plan(plain)[0])
        assert info.value.fault is FrameFault.ADDRESS
        assert info.value.reason == (
            "reply from another address: unit 0, expected 1 (a device that always answers so: reply_unit = 0)"
        )
        samples = await driver.read(fixed, driver.plan(fixed)[0])
        assert {s.point: s.value for s in samples} == {"v": 10, "w": 11}
        await driver.write(fixed, "w", 5)
        # The diag tool takes it as a parameter; still strict about any other unit.
        assert (await driver.diag("read", {"unit": 2, "address": 10, "reply_unit": 0}))["registers"] == [10]
        peer.answer_as = 9
        with pytest.raises(FrameError) as info:
            await driver.read(fixed, driver.plan(fixed)[0])
        assert info.value.reason == "reply from another address: unit 9, expected 0"
    finally:
        await driver.close()


async def test_a_serial_line_refuses_tcp_unit_ids_and_reply_unit_in_the_diag_tool() -> None:
    bus = ModbusRtuOverTcpBusConfig(id="b1", host="127.0.0.1", port=9, timeout_s=0.1)
    driver = ModbusDriver(bus, [])
    with pytest.raises(DiagParamError, match=r"unit.*0\.\.247, got 255"):
        await driver.diag("read", {"unit": 255, "address": 0})
    with pytest.raises(DiagParamError, match=r"reply_unit.*Modbus TCP"):
        await driver.diag("read", {"unit": 1, "address": 0, "reply_unit": 0})


def config_toml(port: int, device_extra: str) -> str:
    return f"""
[gateway]
id = "gw-unit-0001"
org = {{ city = "310100", district = "310106", street = "310106013" }}

[[buses]]
id = "tcp-1"
protocol = "modbus_tcp"
host = "127.0.0.1"
port = {port}
timeout_s = 0.5

[[devices]]
id = "meter-1"
bus = "tcp-1"
profile = "modbus-power-meter-3ph"
address = 1
location = {{ address_code = "{LOCATION["address_code"]}" }}
{device_extra}
"""


async def test_the_diag_cli_uses_the_configured_reply_unit_and_takes_unit_255(
    fixed_peer: tuple[FixedUnitPeer, int], tmp_path: Path
) -> None:
    _, port = fixed_peer
    config = tmp_path / "gw.toml"

    def read(*extra: str) -> Result:
        args = ["diag", "modbus", "read", "-c", str(config), "--bus", "tcp-1", "--address", "10", "--json"]
        return CliRunner().invoke(main, [*args, *extra], catch_exceptions=False)

    config.write_text(config_toml(port, ""))
    refused = await asyncio.to_thread(read, "--unit", "1")
    assert refused.exit_code == 1 and "reply_unit = 0" in refused.output, refused.output
    ok = await asyncio.to_thread(read, "--unit", "255", "--reply-unit", "0")
    assert ok.exit_code == 0, ok.output
    assert json.loads(ok.output)["registers"] == [10]
    config.write_text(config_toml(port, "reply_unit = 0"))
    ok = await asyncio.to_thread(read, "--unit", "1")
    assert ok.exit_code == 0, ok.output
    assert json.loads(ok.output)["registers"] == [10]
