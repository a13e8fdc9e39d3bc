"""Devices of one profile share one read plan and one decode plan per read (issue 17): what a real
Modbus TCP server (pymodbus) returns is decoded per device as before, also for a request that was
planned for other point objects."""

from __future__ import annotations

from typing import Any

from modbus_support import BankServer, tcp_bus

from citynerve.drivers.modbus.driver import ModbusDriver

POINTS = {
    "level": {"table": "holding", "address": 0, "type": "int16"},
    "count": {"table": "holding", "address": 1, "type": "uint16"},
}


async def test_shared_plans_decode_each_device_and_foreign_requests(
    bank_server: BankServer, make_device: Any
) -> None:
    bank_server.banks[1].put("holding", 0, [0xFFFE, 7])  # -2, 7
    bank_server.banks[2].put("holding", 0, [5, 0xFFFF])  # 5, 65535
    first = make_device(POINTS, unit=1)
    second = first.model_copy(update={"id": "dev2", "address": 2, "points": dict(first.points)})
    unsigned = make_device({**POINTS, "level": {**POINTS["level"], "type": "uint16"}}, unit=1, id="dev3")
    driver = ModbusDriver(tcp_bus(bank_server), [first, second, unsigned])
    await driver.open()
    try:
        (request,) = driver.plan(first)
        assert driver.plan(second) == (request,) and driver.plan(second)[0] is request
        assert len(driver._decodes) == 1  # one decode plan for the profile's read
        values = {d.id: {s.point: s.value for s in await driver.read(d, request)} for d in (first, second)}
        assert values == {"dev1": {"level": -2, "count": 7}, "dev2": {"level": 5, "count": 65535}}
        # The first device's request read for a device with other point objects: its own types.
        read = await driver.read(unsigned, request)
        assert {s.point: s.value for s in read} == {"level": 65534, "count": 7}
    finally:
        await driver.close()
