"""ModbusDriver against a real pymodbus server over TCP (and RTU over TCP): reads, writes, errors, diag."""

from __future__ import annotations

import asyncio
import logging
import math
from collections.abc import Callable
from typing import Any

import pytest
from modbus_support import BankServer, free_port, start_bank_server, tcp_bus
from pydantic import ValidationError
from pymodbus.client.mixin import ModbusClientMixin

from citynerve.drivers.modbus import TCP_DRIVER
from citynerve.drivers.modbus._tcp import MbapClient
from citynerve.drivers.modbus.config import ModbusDeviceConfig, ModbusRtuOverTcpBusConfig, ModbusTcpBusConfig
from citynerve.drivers.modbus.driver import ModbusDriver, ModbusRequest
from citynerve.gateway.api import (
    ChannelError,
    DeviceExceptionError,
    DeviceTimeoutError,
    DiagParamError,
    PermanentError,
    Quality,
    Sample,
    TransientError,
    WriteRejectedError,
)

DT = ModbusClientMixin.DATATYPE
MakeDevice = Callable[..., ModbusDeviceConfig]


def swap(regs: list[int]) -> list[int]:
    return [((r & 0xFF) << 8) | (r >> 8) for r in regs]


ALL_TYPES_POINTS: dict[str, dict[str, Any]] = {
    "i16": {"table": "holding", "address": 0, "type": "int16"},
    "u16": {"table": "holding", "address": 1, "type": "uint16"},
    "i32_abcd": {"table": "holding", "address": 2, "type": "int32"},
    "u32_cdab": {"table": "holding", "address": 4, "type": "uint32", "word_order": "little"},
    "f32_badc": {"table": "holding", "address": 6, "type": "float32", "byte_order": "little"},
    "f32_dcba": {
        "table": "holding",
        "address": 8,
        "type": "float32",
        "word_order": "little",
        "byte_order": "little",
    },
    "i64": {"table": "holding", "address": 10, "type": "int64"},
    "f64_cdab": {"table": "holding", "address": 14, "type": "float64", "word_order": "little"},
    "name": {"table": "holding", "address": 18, "type": "string", "length": 4},
    "flag3": {"table": "holding", "address": 22, "type": "bool", "bit": 3},
    "flag4": {"table": "holding", "address": 22, "type": "bool", "bit": 4},
    "nan": {"table": "holding", "address": 23, "type": "float32"},
    "in_f32": {"table": "input", "address": 100, "type": "float32"},
    "coil5": {"table": "coil", "address": 5},
    "coil9": {"table": "coil", "address": 9},
    "di0": {"table": "discrete", "address": 0},
}


def fill_all_types(srv: BankServer, unit: int = 1) -> None:
    bank = srv.banks[unit]
    bank.put("holding", 0, ModbusClientMixin.convert_to_registers(-1234, DT.INT16))
    bank.put("holding", 1, ModbusClientMixin.convert_to_registers(54321, DT.UINT16))
    bank.put("holding", 2, ModbusClientMixin.convert_to_registers(-2_000_000_000, DT.INT32))
    bank.put("holding", 4, ModbusClientMixin.convert_to_registers(4_000_000_000, DT.UINT32, "little"))
    bank.put("holding", 6, swap(ModbusClientMixin.convert_to_registers(1.5, DT.FLOAT32)))
    bank.put("holding", 8, swap(ModbusClientMixin.convert_to_registers(-0.25, DT.FLOAT32, "little")))
    bank.put("holding", 10, ModbusClientMixin.convert_to_registers(-(2**62), DT.INT64))
    bank.put("holding", 14, ModbusClientMixin.convert_to_registers(math.pi, DT.FLOAT64, "little"))
    bank.put("holding", 18, ModbusClientMixin.convert_to_registers("SN42", DT.STRING))
    bank.put("holding", 22, [0b0000_1000])
    bank.put("holding", 23, ModbusClientMixin.convert_to_registers(float("nan"), DT.FLOAT32))
    bank.put("input", 100, ModbusClientMixin.convert_to_registers(230.5, DT.FLOAT32))
    bank.put("coil", 5, [True])
    bank.put("discrete", 0, [True])


async def read_all(driver: ModbusDriver, device: ModbusDeviceConfig) -> dict[str, Sample]:
    out: dict[str, Sample] = {}
    for request in driver.plan(device):
        for sample in await driver.read(device, request):
            out[sample.point] = sample
    return out


async def test_reads_every_type_and_order(bank_server: BankServer, make_device: MakeDevice) -> None:
    fill_all_types(bank_server)
    device = make_device(ALL_TYPES_POINTS)
    driver = TCP_DRIVER.factory(tcp_bus(bank_server), [device])
    assert isinstance(driver, ModbusDriver)
    await driver.open()
    try:
        samples = await read_all(driver, device)
    finally:
        await driver.close()
    values = {k: s.value for k, s in samples.items()}
    assert values == {
        "i16": -1234,
        "u16": 54321,
        "i32_abcd": -2_000_000_000,
        "u32_cdab": 4_000_000_000,
        "f32_badc": 1.5,
        "f32_dcba": -0.25,
        "i64": -(2**62),
        "f64_cdab": math.pi,
        "name": "SN42",
        "flag3": True,
        "flag4": False,
        "nan": None,
        "in_f32": 230.5,
        "coil5": True,
        "coil9": False,
        "di0": True,
    }
    assert samples["nan"].quality is Quality.BAD
    assert all(s.quality is Quality.GOOD for k, s in samples.items() if k != "nan")
    # One read per table: the holding points 0..23 share one request.
    requests = bank_server.banks[1].requests
    assert sorted(requests) == [(1, 5, 5), (2, 0, 1), (3, 0, 25), (4, 100, 2)]


async def test_writes_fc5_fc6_fc16_and_read_back(bank_server: BankServer, make_device: MakeDevice) -> None:
    points = {
        "relay": {"table": "coil", "address": 3, "writable": True},
        "setpoint": {"table": "holding", "address": 40, "type": "int16", "writable": True},
        "limit": {
            "table": "holding",
            "address": 41,
            "type": "float32",
            "word_order": "little",
            "writable": True,
        },
        "label": {"table": "holding", "address": 43, "type": "string", "length": 3, "writable": True},
        "counter": {"table": "holding", "address": 46, "type": "uint64", "writable": True},
    }
    device = make_device(points)
    driver = ModbusDriver(tcp_bus(bank_server), [device])
    await driver.open()
    try:
        await driver.write(device, "relay", True)
        await driver.write(device, "setpoint", -40)
        await driver.write(device, "limit", 12.5)
        await driver.write(device, "label", "PUMP1")
        await driver.write(device, "counter", 2**64 - 1)
        await driver.write(device, "relay", 0)
        values = {k: s.value for k, s in (await read_all(driver, device)).items()}
    finally:
        await driver.close()
    assert values == {"relay": False, "setpoint": -40, "limit": 12.5, "label": "PUMP1", "counter": 2**64 - 1}
    bank = bank_server.banks[1]
    assert ModbusClientMixin.convert_from_registers(
        [bank.tables["holding"][41], bank.tables["holding"][42]], DT.FLOAT32, "little"
    ) == pytest.approx(12.5)
    assert bank.tables["holding"][40] == 0x10000 - 40


async def test_single_register_write_can_use_fc16(bank_server: BankServer, make_device: MakeDevice) -> None:
    points = {"sp": {"table": "holding", "address": 7, "writable": True}}
    seen: list[bytes] = []
    device = make_device(points, single_register_write_fc16=True)
    driver = ModbusDriver(tcp_bus(bank_server), [device])
    await driver.open()
    client = driver.channel._client
    assert isinstance(client, MbapClient)
    try:
        await driver.write(device, "sp", 9)
        seen.append(client.sent)
    finally:
        await driver.close()
    assert bank_server.banks[1].tables["holding"][7] == 9
    assert seen[-1][7] == 16  # MBAP header is 7 bytes, then the function code


@pytest.mark.parametrize(
    ("point", "value", "fragment"),
    [
        ("nope", 1, "no such point"),
        ("ro", 1, "not writable"),
        ("relay", 2, "coil takes"),
        ("relay", "on", "coil takes"),
        ("sp", 70000, "out of range"),
        ("sp", -1, "out of range"),
        ("sp", 1.5, "whole number"),
        ("sp", True, "needs a value"),
        ("sp", None, "needs a value"),
        ("f", 1e39, "too large"),
        ("f", float("nan"), "not a number"),
        ("f", float("inf"), "not a number"),
        ("f", "high", "needs a number"),
        ("txt", "TOO LONG", "does not fit"),
        ("txt", 5, "needs text"),
    ],
)
async def test_bad_writes_are_rejected_before_the_bus(
    bank_server: BankServer, make_device: MakeDevice, point: str, value: Any, fragment: str
) -> None:
    device = make_device(
        {
            "ro": {"table": "holding", "address": 0},
            "relay": {"table": "coil", "address": 0, "writable": True},
            "sp": {"table": "holding", "address": 1, "writable": True},
            "f": {"table": "holding", "address": 2, "type": "float32", "writable": True},
            "txt": {"table": "holding", "address": 4, "type": "string", "length": 2, "writable": True},
        }
    )
    driver = ModbusDriver(tcp_bus(bank_server), [device])
    await driver.open()
    try:
        with pytest.raises(WriteRejectedError) as info:
            await driver.write(device, point, value)
    finally:
        await driver.close()
    assert isinstance(info.value, PermanentError)
    assert (info.value.device_id, info.value.point) == ("dev1", point)
    assert fragment in info.value.reason
    assert bank_server.banks[1].requests == []  # nothing reached the device
    assert bank_server.banks[1].tables["holding"] == {}


async def test_exception_responses_are_typed(bank_server: BankServer, make_device: MakeDevice) -> None:
    bank = bank_server.banks[1]
    bank.exceptions[("holding", 500)] = 2
    bank.exceptions[("holding", 600)] = 6
    bank.exceptions[("input", 0)] = 5
    device = make_device(
        {
            "missing": {"table": "holding", "address": 500},
            "busy": {"table": "holding", "address": 600},
            "ack": {"table": "input", "address": 0},
        }
    )
    driver = ModbusDriver(tcp_bus(bank_server), [device])
    await driver.open()
    try:
        caught: dict[str, DeviceExceptionError] = {}
        for request in driver.plan(device):
            with pytest.raises(DeviceExceptionError) as info:
                await driver.read(device, request)
            caught[request.points[0]] = info.value
        # The device keeps answering after an exception.
        bank.exceptions.clear()
        assert [s.value for s in await driver.read(device, driver.plan(device)[0])] == [0]
    finally:
        await driver.close()
    assert (caught["missing"].code, caught["missing"].transient) == (2, False)
    assert caught["missing"].reason == "illegal data address"
    assert (caught["busy"].code, caught["busy"].transient) == (6, True)
    assert (caught["ack"].code, caught["ack"].transient) == (5, True)
    assert caught["missing"].device_id == "dev1" and caught["missing"].points == ("missing",)


async def test_read_past_the_device_map_is_an_exception(
    bank_server: BankServer, make_device: MakeDevice
) -> None:
    device = make_device({"far": {"table": "holding", "address": 5000}})
    driver = ModbusDriver(tcp_bus(bank_server), [device])
    await driver.open()
    try:
        with pytest.raises(DeviceExceptionError) as info:
            await driver.read(device, driver.plan(device)[0])
    finally:
        await driver.close()
    assert info.value.code == 2


async def test_silent_unit_times_out_and_others_keep_working(
    bank_server: BankServer, make_device: MakeDevice
) -> None:
    silent = make_device(
        {"v": {"table": "holding", "address": 0}, "w": {"table": "holding", "address": 1}}, unit=9
    )
    alive = make_device({"v": {"table": "holding", "address": 0}}, unit=2)
    bank_server.banks[2].put("holding", 0, [77])
    driver = ModbusDriver(tcp_bus(bank_server, timeout_s=0.15), [silent, alive])
    await driver.open()
    try:
        # More silent polls in a row than pymodbus' own give-up count (retries + 3): the
        # connection must stay up for the unit that answers.
        for _ in range(6):
            loop = asyncio.get_running_loop()
            start = loop.time()
            with pytest.raises(DeviceTimeoutError) as info:
                await driver.read(silent, driver.plan(silent)[0])
            assert 0.1 <= loop.time() - start < 1.0
            assert (info.value.device_id, info.value.points, info.value.timeout_s) == (
                "dev9",
                ("v", "w"),
                0.15,
            )
            assert isinstance(info.value, TransientError)
            assert [s.value for s in await driver.read(alive, driver.plan(alive)[0])] == [77]
    finally:
        await driver.close()


async def test_per_device_timeout_override(bank_server: BankServer, make_device: MakeDevice) -> None:
    silent = make_device({"v": {"table": "holding", "address": 0}}, unit=9, timeout_s=0.05)
    driver = ModbusDriver(tcp_bus(bank_server, timeout_s=5.0), [silent])
    await driver.open()
    try:
        loop = asyncio.get_running_loop()
        start = loop.time()
        with pytest.raises(DeviceTimeoutError) as info:
            await driver.read(silent, driver.plan(silent)[0])
        assert loop.time() - start < 1.0
        assert info.value.timeout_s == 0.05
    finally:
        await driver.close()


async def test_refused_endpoint_is_a_channel_error() -> None:
    bus = ModbusTcpBusConfig(id="dead", host="127.0.0.1", port=free_port(), timeout_s=0.5)
    driver = ModbusDriver(bus, [])
    with pytest.raises(ChannelError) as info:
        await driver.open()
    assert info.value.bus_id == "dead"
    assert (
        info.value.reason
        == f"cannot connect to 127.0.0.1:{bus.port}: connection refused (nothing listens on that port)"
    )
    await driver.close()
    await driver.close()  # idempotent, also after a failed open


async def test_lost_connection_is_reported_and_not_reconnected_behind_the_owner(
    make_device: MakeDevice,
) -> None:
    srv = await start_bank_server((1,))
    device = make_device({"v": {"table": "holding", "address": 0}})
    driver = ModbusDriver(tcp_bus(srv), [device])
    await driver.open()
    request = driver.plan(device)[0]
    assert [s.value for s in await driver.read(device, request)] == [0]
    await srv.server.shutdown()
    await asyncio.sleep(0.2)
    with pytest.raises(ChannelError) as info:  # found closed: one reconnect before sending, refused
        await driver.read(device, request)
    assert info.value.reason.startswith(f"cannot connect to {srv.host}:{srv.port}: connection refused")
    await asyncio.sleep(0.3)
    assert not driver.channel.connected  # no reconnect loop of its own
    # The owner reopens once the endpoint is back.
    srv2 = await start_bank_server((1,))
    driver.bus = bus2 = tcp_bus(srv2)
    driver.channel.bus = bus2
    await driver.open()
    srv2.banks[1].put("holding", 0, [5])
    assert [s.value for s in await driver.read(device, request)] == [5]
    await driver.close()
    await srv2.server.shutdown()


async def test_read_before_open_is_a_channel_error(bank_server: BankServer, make_device: MakeDevice) -> None:
    device = make_device({"v": {"table": "holding", "address": 0}})
    driver = ModbusDriver(tcp_bus(bank_server), [device])
    with pytest.raises(ChannelError):
        await driver.read(device, driver.plan(device)[0])
    with pytest.raises(TypeError):
        await driver.read(device, object())  # type: ignore[arg-type]


async def test_concurrent_callers_are_serialised(bank_server: BankServer, make_device: MakeDevice) -> None:
    devices = [make_device({"v": {"table": "holding", "address": 0}}, unit=u) for u in (1, 2)]
    bank_server.banks[1].put("holding", 0, [11])
    bank_server.banks[2].put("holding", 0, [22])
    driver = ModbusDriver(tcp_bus(bank_server), devices)
    await driver.open()
    try:
        results = await asyncio.gather(
            *[driver.read(d, driver.plan(d)[0]) for d in devices for _ in range(20)]
        )
    finally:
        await driver.close()
    assert [r[0].value for r in results] == [11] * 20 + [22] * 20


async def test_diag_scan_read_write(bank_server: BankServer) -> None:
    bank_server.banks[2].exceptions[("holding", 0)] = 2
    bank_server.banks[1].put(
        "holding", 10, ModbusClientMixin.convert_to_registers(21.5, DT.FLOAT32, "little")
    )
    driver = ModbusDriver(tcp_bus(bank_server), [])
    await driver.open()
    try:
        scan = await driver.diag("scan", {"first": 1, "last": 4, "timeout_s": 0.1})
        read = await driver.diag("read", {"unit": 1, "address": 10, "type": "float32", "order": "CDAB"})
        raw = await driver.diag("read", {"unit": 1, "address": 10, "count": 3})
        wrote = await driver.diag("write", {"unit": 1, "table": "holding", "address": 30, "value": 7})
        many = await driver.diag("write", {"unit": 1, "table": "holding", "address": 31, "values": [1, 2]})
        coil = await driver.diag("write", {"unit": 1, "table": "coil", "address": 2, "value": True})
        coils = await driver.diag("write", {"unit": 1, "table": "coil", "address": 4, "values": [1, 0, 1]})
        bits = await driver.diag("read", {"unit": 1, "table": "coil", "address": 2, "count": 5})
    finally:
        await driver.close()
    assert scan["answered"] == [
        {"unit": 1, "reply": "data"},
        {"unit": 2, "reply": "exception", "exception_code": 2},
    ]
    assert scan["scanned"] == [1, 4]
    assert read["value"] == 21.5 and read["registers"] == raw["registers"][:2]
    assert raw["count"] == 3 and len(raw["hex"].split()) == 3
    assert (wrote["function"], many["function"], coil["function"], coils["function"]) == (6, 16, 5, 15)
    assert [bank_server.banks[1].tables["holding"][a] for a in (30, 31, 32)] == [7, 1, 2]
    assert bits["bits"] == [True, False, True, False, True]


@pytest.mark.parametrize(
    ("action", "params", "param"),
    [
        ("read", {"address": 0}, "unit"),
        ("read", {"unit": 1}, "address"),
        ("read", {"unit": 300, "address": 0}, "unit"),
        ("read", {"unit": 1, "address": 0, "table": "eeprom"}, "table"),
        ("read", {"unit": 1, "address": 0, "count": 126}, "count"),
        ("read", {"unit": 1, "address": 0, "type": "float16"}, "type"),
        ("read", {"unit": 1, "address": 0, "table": "coil", "type": "float32"}, "type"),
        ("read", {"unit": 1, "address": 0, "type": "float32", "order": "ABDC"}, "order"),
        ("read", {"unit": 1, "address": "x"}, "address"),
        ("read", {"unit": 1, "address": 65535, "type": "float32"}, "type"),  # past the last address
        ("read", {"unit": 1, "address": 65530, "count": 7}, "count"),
        ("read", {"unit": 1, "address": 65535, "table": "coil", "count": 2}, "count"),
        ("read", {"unit": 1, "address": 0, "timeout_s": -1}, "timeout_s"),
        ("write", {"unit": 1, "address": 0}, "value"),
        ("write", {"unit": 1, "address": 0, "table": "input", "value": 1}, "table"),
        ("write", {"unit": 1, "address": 0, "value": 70000}, "value"),
        ("write", {"unit": 1, "address": 0, "table": "coil", "value": 3}, "value"),
        ("write", {"unit": 1, "address": 0, "values": []}, "values"),
        ("write", {"unit": 1, "address": 0, "values": [1] * 124}, "values"),  # FC 16: 123 at most
        ("write", {"unit": 1, "address": 0, "table": "coil", "values": [1] * 1969}, "values"),
        ("write", {"unit": 1, "address": 65535, "values": [1, 2]}, "values"),  # past the last address
        ("write", {"unit": 1, "address": 10.7, "value": 1}, "address"),  # not truncated to 10
        ("identify", {}, "unit"),
        ("identify", {"unit": 256}, "unit"),  # TCP: 0..255 (0 and 255 are the device itself)
        ("read", {"unit": 1, "address": 0, "reply_unit": 256}, "reply_unit"),
        ("scan", {"first": 0}, "first"),
        ("scan", {"first": 5, "last": 4}, "last"),
    ],
)
async def test_diag_bad_params_name_the_parameter(
    bank_server: BankServer, action: str, params: dict[str, Any], param: str
) -> None:
    # The verdict is about parameter checks; a generous timeout keeps a busy machine's slow connect
    # from turning a DiagParamError into a DeviceTimeoutError.
    driver = ModbusDriver(tcp_bus(bank_server, timeout_s=10), [])
    await driver.open()
    try:
        with pytest.raises(DiagParamError) as info:
            await driver.diag(action, params)
    finally:
        await driver.close()
    assert info.value.param == param and info.value.action == action
    assert isinstance(info.value, PermanentError)


async def test_diag_unknown_action(bank_server: BankServer) -> None:
    driver = ModbusDriver(tcp_bus(bank_server), [])
    with pytest.raises(PermanentError):
        await driver.diag("selftest", {})


async def test_rtu_over_tcp(make_device: MakeDevice) -> None:
    srv = await start_bank_server((3,), rtu_framing=True)
    srv.banks[3].put("holding", 4, ModbusClientMixin.convert_to_registers(-7, DT.INT32))
    device = make_device({"n": {"table": "holding", "address": 4, "type": "int32", "writable": True}}, unit=3)
    bus = ModbusRtuOverTcpBusConfig(id="gw", host=srv.host, port=srv.port, timeout_s=0.3)
    driver = ModbusDriver(bus, [device])
    await driver.open()
    try:
        (request,) = driver.plan(device)
        assert isinstance(request, ModbusRequest)
        assert [s.value for s in await driver.read(device, request)] == [-7]
        await driver.write(device, "n", 123456)
        assert [s.value for s in await driver.read(device, request)] == [123456]
        silent = make_device({"n": {"table": "holding", "address": 0}}, unit=4)
        with pytest.raises(DeviceTimeoutError):
            await driver.read(silent, driver.plan(silent)[0])
    finally:
        await driver.close()
        await srv.server.shutdown()


async def test_cancelled_read_stays_cancelled_and_the_channel_stays_usable(
    bank_server: BankServer, make_device: MakeDevice
) -> None:
    silent = make_device({"v": {"table": "holding", "address": 0}}, unit=9)
    alive = make_device({"v": {"table": "holding", "address": 0}}, unit=1)
    driver = ModbusDriver(tcp_bus(bank_server, timeout_s=5.0), [silent, alive])
    await driver.open()
    try:
        # The owner's own deadline cancels the read: that must surface as a cancellation
        # (TimeoutError from wait_for), not be turned into a device error.
        with pytest.raises(TimeoutError):
            await asyncio.wait_for(driver.read(silent, driver.plan(silent)[0]), 0.1)
        assert [s.value for s in await driver.read(alive, driver.plan(alive)[0])] == [0]
    finally:
        await driver.close()


async def test_pymodbus_does_not_log_what_the_driver_raises(
    bank_server: BankServer, make_device: MakeDevice, caplog: pytest.LogCaptureFixture
) -> None:
    silent = make_device({"v": {"table": "holding", "address": 0}}, unit=9)
    driver = ModbusDriver(tcp_bus(bank_server, timeout_s=0.05), [silent])
    await driver.open()
    try:
        with caplog.at_level(logging.INFO):
            for _ in range(3):
                with pytest.raises(DeviceTimeoutError):
                    await driver.read(silent, driver.plan(silent)[0])
    finally:
        await driver.close()
    assert [r for r in caplog.records if r.name.startswith("pymodbus") and r.levelno >= logging.ERROR] == []


def test_raw_from_engineering_inverts_scale_and_offset() -> None:
    from citynerve.drivers.modbus.codec import CodecError
    from citynerve.drivers.modbus.config import ModbusPointConfig
    from citynerve.drivers.modbus.driver import raw_from_engineering

    temp = ModbusPointConfig(table="holding", address=0, type="int16", scale=0.1, offset=-40.0, writable=True)
    assert raw_from_engineering(temp, 21.5) == 615
    assert 615 * temp.scale + temp.offset == pytest.approx(21.5)
    flow = ModbusPointConfig(table="holding", address=0, type="float32", scale=2.0)
    assert raw_from_engineering(flow, 3.0) == 1.5
    assert raw_from_engineering(flow, "x") == "x" and raw_from_engineering(flow, True) is True
    # A scale of 0 is refused by the config; the driver still refuses to divide by it.
    with pytest.raises(ValidationError, match="non-zero scale"):
        ModbusPointConfig(table="holding", address=0, scale=0.0)
    unscaled = ModbusPointConfig.model_construct(**{**flow.__dict__, "scale": 0.0})
    with pytest.raises(CodecError):
        raw_from_engineering(unscaled, 1.0)


async def test_refused_gap_falls_back_to_reading_points_apart(
    bank_server: BankServer, make_device: MakeDevice, caplog: pytest.LogCaptureFixture
) -> None:
    bank = bank_server.banks[1]
    bank.put("holding", 0, [11, 12])
    bank.put("holding", 8, [13])
    bank.exceptions[("holding", 5)] = 2  # the device has no register 5: a merged read 0..8 fails
    device = make_device(
        {
            "a": {"table": "holding", "address": 0},
            "b": {"table": "holding", "address": 1},
            "c": {"table": "holding", "address": 8},
        }
    )
    driver = ModbusDriver(tcp_bus(bank_server), [device])
    await driver.open()
    try:
        (request,) = driver.plan(device)
        assert (request.address, request.count) == (0, 9)
        with caplog.at_level(logging.WARNING, logger="citynerve.drivers.modbus.driver"):
            first = await driver.read(device, request)
            bank.requests.clear()
            second = await driver.read(device, request)
    finally:
        await driver.close()
    assert [(s.point, s.value) for s in first] == [("a", 11), ("b", 12), ("c", 13)]
    assert second == first
    # Remembered: the second poll goes straight to the gap-free reads (touching points together).
    assert sorted(bank.requests) == [(3, 0, 2), (3, 8, 1)]
    assert len([r for r in caplog.records if "reading its 3 points apart" in r.getMessage()]) == 1


async def test_one_refused_point_does_not_blank_its_neighbours(
    bank_server: BankServer, make_device: MakeDevice
) -> None:
    bank = bank_server.banks[1]
    bank.put("holding", 0, [1, 2, 3])
    bank.exceptions[("holding", 1)] = 2  # point b names a register the device lacks
    device = make_device({n: {"table": "holding", "address": i} for i, n in enumerate("abc")})
    driver = ModbusDriver(tcp_bus(bank_server), [device])
    await driver.open()
    try:
        samples = await driver.read(device, driver.plan(device)[0])
        # Every point refused: that is the device's answer, raised as such.
        bank.exceptions.update({("holding", 0): 2, ("holding", 2): 2})
        with pytest.raises(DeviceExceptionError) as info:
            await driver.read(device, driver.plan(device)[0])
    finally:
        await driver.close()
    assert [(s.point, s.value, s.quality) for s in samples] == [
        ("a", 1, Quality.GOOD),
        ("b", None, Quality.BAD),
        ("c", 3, Quality.GOOD),
    ]
    assert info.value.code == 2
