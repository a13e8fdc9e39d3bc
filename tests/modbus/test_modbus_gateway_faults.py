"""A Modbus TCP gateway (a TCP-to-RTU converter) in front of meters, through a real ModbusDriver and
BusOwner: what it answers for a dead meter on its serial side (exception 0x0B / 0x0A), and a busy
meter (exception 6)."""

from __future__ import annotations

import random
from collections.abc import AsyncIterator
from typing import Any

import pytest
from modbus_support import BankServer, start_bank_server
from modbus_support import OfflineSink as Sink
from modbus_support import holding_meter as meter

from citynerve.drivers.modbus.config import ModbusTcpBusConfig
from citynerve.drivers.modbus.driver import ModbusDriver
from citynerve.gateway.api import DeviceUnreachableError, EventState, Quality
from citynerve.gateway.bus import BusOwner
from tests.bus.owner_support import running, wait_for


@pytest.fixture
async def gateway() -> AsyncIterator[BankServer]:
    srv = await start_bank_server((1, 2))
    yield srv
    await srv.server.shutdown()


@pytest.mark.parametrize("code", [11, 10])
async def test_a_dead_meter_behind_a_tcp_gateway_goes_offline_and_comes_back(
    gateway: BankServer, code: int
) -> None:
    """The gateway answers 0x0B (target failed to respond) or 0x0A (path unavailable) for its dead
    meter: that is the meter's silence, not an answer. It stayed online for ever (no device_offline,
    no offline rule) because every exception reply counted as proof of life."""
    gateway.banks[1].put("holding", 0, [7])
    gateway.banks[2].exceptions[("holding", 0)] = code
    bus = ModbusTcpBusConfig(
        id="b1", host=gateway.host, port=gateway.port, timeout_s=0.3, retries=1, offline_after=2,
        backoff_initial_s=0.2, backoff_max_s=0.4,
    )  # fmt: skip
    devices = [meter("wm-1", 1), meter("wm-2", 2)]
    sink = Sink()
    owner = BusOwner(bus, devices, ModbusDriver(bus, devices), sink, rng=random.Random(1))
    async with running(owner):
        await wait_for(lambda: sink.offline("wm-2"), 5.0, "wm-2 offline")
        health = owner.health["wm-2"]
        assert health.online is False
        assert health.last_error is not None and "unit 2" in health.last_error
        assert f"{code:#04x}" in health.last_error
        assert "gateway" in health.last_error
        assert owner.health["wm-1"].online is True and not sink.offline("wm-1")
        gateway.banks[2].exceptions.clear()  # the meter answers again
        await wait_for(lambda: owner.health["wm-2"].online, 5.0, "wm-2 back")
    assert sink.offline("wm-2") == [EventState.RAISED, EventState.CLEARED]


async def test_the_driver_raises_a_typed_error_naming_device_unit_and_code(gateway: BankServer) -> None:
    gateway.banks[2].exceptions[("holding", 0)] = 11
    bus = ModbusTcpBusConfig(id="b1", host=gateway.host, port=gateway.port, timeout_s=0.3)
    wm2 = meter("wm-2", 2)
    driver = ModbusDriver(bus, [wm2])
    await driver.open()
    try:
        with pytest.raises(DeviceUnreachableError) as info:
            await driver.read(wm2, driver.plan(wm2)[0])
    finally:
        await driver.close()
    err = info.value
    assert (err.device_id, err.unit, err.code, err.points) == ("wm-2", 2, 11, ("v",))
    assert str(err) == (
        "device wm-2 (unit 2): the gateway in front of it answered exception 0x0b"
        " (gateway target device failed to respond) reading v"
    )


async def test_a_busy_reply_is_retried_within_the_requests_retries(gateway: BankServer) -> None:
    """Exception 6 (server device busy) is transient: the poll asks again (bus `retries`) instead of
    marking the points BAD at once."""
    bank = gateway.banks[1]
    bank.put("holding", 0, [7])
    busy_left = [3]  # the meter is busy for its first three requests, one per poll and retry
    plain = bank.getValues

    def get(func_code: int, address: int, count: int = 1) -> Any:
        if busy_left[0]:
            busy_left[0] -= 1
            bank.exceptions[("holding", 0)] = 6
        else:
            bank.exceptions.clear()
        return plain(func_code, address, count)

    bank.getValues = get  # type: ignore[method-assign]
    bus = ModbusTcpBusConfig(id="b1", host=gateway.host, port=gateway.port, timeout_s=0.3, retries=3)
    devices = [meter("wm-1", 1)]
    sink = Sink()
    owner = BusOwner(bus, devices, ModbusDriver(bus, devices), sink, rng=random.Random(1))
    async with running(owner):
        await wait_for(lambda: sink.batches, 5.0, "a poll")
    assert [s.value for s in sink.batches[0].samples] == [7]
    assert sink.batches[0].samples[0].quality is Quality.GOOD
    assert owner.health["wm-1"].errors == 0 and owner.counters.exceptions == 3


async def test_a_scan_through_a_gateway_does_not_list_the_units_it_cannot_reach(gateway: BankServer) -> None:
    """`diag modbus scan` through a TCP gateway that answers 0x0B for a unit with no device behind
    it: that unit is not listed as present (every one of 247 was), only as the gateway's no-answer."""
    gateway.banks[2].exceptions[("holding", 0)] = 11
    bus = ModbusTcpBusConfig(id="b1", host=gateway.host, port=gateway.port, timeout_s=0.3)
    driver = ModbusDriver(bus, [])
    await driver.open()
    try:
        scan = await driver.diag("scan", {"first": 1, "last": 2, "timeout_s": 0.2})
    finally:
        await driver.close()
    assert scan["answered"] == [{"unit": 1, "reply": "data"}]
    assert scan["gateway_no_answer"] == [2]
