"""An independent peer: the third-party `dlt645` package's meter simulator (RTU server on a serial
port) answers our DL/T 645 driver through a pty null modem. Its encoder is not ours, so the
values it sends check our decoding, and our requests check against its parser."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import dlt645
import pytest
from serial_support import bus_config, dlt_device

from citynerve.drivers.dlt645 import Dlt645Driver
from citynerve.drivers.dlt645.codec import encode_address
from citynerve.gateway.api import DeviceExceptionError
from citynerve.hil.sim.serial import NullModem

ADDRESS = "000000000161"


@pytest.fixture
async def peer() -> AsyncIterator[tuple[Any, str]]:
    async with NullModem() as (meter_port, gateway_port):
        service = dlt645.MeterServerService.new_rtu_server(meter_port, 8, 1, 2400, "N", 0.2)
        # the package keeps the address in wire order (low byte first)
        service.set_address(encode_address(ADDRESS))
        assert service.start()
        try:
            yield service, gateway_port
        finally:
            service.stop()


async def test_third_party_meter_answers_our_reads(peer: tuple[Any, str]) -> None:
    service, port = peer
    assert service.set_00(0x00010000, 123.45)
    assert service.set_00(0x00000000, 98765.43)
    assert service.set_02(0x02010100, 220.1)
    assert service.set_02(0x02020100, 5.123)
    assert service.set_02(0x02800002, 49.98)
    device = dlt_device(
        ADDRESS,
        points={
            "fwd": {"di": "00010000"},
            "total": {"di": "00000000"},
            "va": {"di": "02010100"},
            "ia": {"di": "02020100"},
            "hz": {"di": "02800002"},
        },
    )
    driver = Dlt645Driver(bus_config(port, timeout_s=1.0), [device])
    values = {}
    try:
        for request in driver.plan(device):
            for sample in await driver.read(device, request):
                values[sample.point] = sample.value
        found = await driver.diag("read-address", {})
    finally:
        await driver.close()
    assert values == {"fwd": 123.45, "total": 98765.43, "va": 220.1, "ia": 5.123, "hz": 49.98}
    assert found["address"] == ADDRESS

    # its error reply for a DI it does not have is a typed error naming the device and point
    # (one test: building the package's meter data map takes seconds)
    unknown = dlt_device(ADDRESS, points={"x": {"di": "04000B99", "length": 2}})
    driver = Dlt645Driver(bus_config(port, timeout_s=1.0), [unknown])
    try:
        with pytest.raises(DeviceExceptionError) as info:
            await driver.read(unknown, driver.plan(unknown)[0])
    finally:
        await driver.close()
    assert info.value.device_id == unknown.id and info.value.points == ("x",)
