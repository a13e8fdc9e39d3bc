"""Fixtures of the Modbus tests: a real pymodbus TCP server over a register bank, pty links, configs."""

from __future__ import annotations

import socket
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from typing import Any

import pytest
from pymodbus.constants import ExcCodes
from pymodbus.datastore import ModbusBaseDeviceContext, ModbusServerContext
from pymodbus.framer import FramerType
from pymodbus.server import ModbusTcpServer

from citynerve.drivers.modbus.config import ModbusDeviceConfig, ModbusTcpBusConfig
from citynerve.gateway.api import Event, EventState, SampleBatch
from citynerve.gateway.bus import OFFLINE_KIND

_TABLE_OF_FC = {
    1: "coil",
    5: "coil",
    15: "coil",
    2: "discrete",
    3: "holding",
    6: "holding",
    16: "holding",
    4: "input",
}

LOCATION = {"address_code": "320508001001", "building": "B1", "floor": "1", "room": "plant"}

GATEWAY_RS485_TOML = """
[gateway]
id = "gw-1"
org = { city = "310100", district = "310106", street = "310106013" }

[[buses]]
id = "rs485-1"
protocol = "modbus_rtu"
port = "/dev/ttyUSB0"
"""
"""The head of a gateway config with one RS-485 Modbus RTU bus, for tests that add devices and packs."""


@dataclass
class RegisterBank(ModbusBaseDeviceContext):
    """A device's memory for a real pymodbus server: 0..`size` of each table, plus injected faults.

    `exceptions` maps (table, address) -> exception code answered for reads touching it.
    """

    size: int = 1000
    tables: dict[str, dict[int, int]] = field(
        default_factory=lambda: {"coil": {}, "discrete": {}, "holding": {}, "input": {}}
    )
    exceptions: dict[tuple[str, int], int] = field(default_factory=dict)
    requests: list[tuple[int, int, int]] = field(default_factory=list)

    def reset(self) -> None:
        for t in self.tables.values():
            t.clear()

    def getValues(self, func_code: int, address: int, count: int = 1) -> Any:
        table = _TABLE_OF_FC[func_code]
        self.requests.append((func_code, address, count))
        for a in range(address, address + count):
            if (table, a) in self.exceptions:
                return ExcCodes(self.exceptions[(table, a)])
        if address + count > self.size:
            return ExcCodes.ILLEGAL_ADDRESS
        values = [self.tables[table].get(a, 0) for a in range(address, address + count)]
        return [bool(v) for v in values] if table in ("coil", "discrete") else values

    def setValues(self, func_code: int, address: int, values: Any) -> Any:
        table = _TABLE_OF_FC[func_code]
        if address + len(values) > self.size:
            return ExcCodes.ILLEGAL_ADDRESS
        for i, v in enumerate(values):
            self.tables[table][address + i] = int(v)
        return None

    def put(self, table: str, address: int, values: list[int] | list[bool]) -> None:
        for i, v in enumerate(values):
            self.tables[table][address + i] = int(v)


@dataclass
class BankServer:
    host: str
    port: int
    banks: dict[int, RegisterBank]
    server: Any
    context: ModbusServerContext


async def start_bank_server(units: tuple[int, ...] = (1,), *, rtu_framing: bool = False) -> BankServer:
    banks = {u: RegisterBank() for u in units}
    ctx = ModbusServerContext(devices=dict(banks), single=False)
    server = ModbusTcpServer(
        ctx,
        framer=FramerType.RTU if rtu_framing else FramerType.SOCKET,
        address=("127.0.0.1", 0),
        ignore_missing_devices=True,
    )
    await server.serve_forever(background=True)
    port = server.transport.sockets[0].getsockname()[1]  # type: ignore[attr-defined]
    return BankServer("127.0.0.1", port, banks, server, ctx)


@pytest.fixture
async def bank_server() -> AsyncIterator[BankServer]:
    """A real pymodbus Modbus TCP server with units 1 and 2 (unit 9 silent)."""
    srv = await start_bank_server((1, 2))
    yield srv
    await srv.server.shutdown()


@pytest.fixture
def make_device() -> Callable[..., ModbusDeviceConfig]:
    def make(
        points: dict[str, dict[str, Any]], *, unit: int = 1, bus: str = "b1", **extra: Any
    ) -> ModbusDeviceConfig:
        return device_model(
            id=extra.pop("id", f"dev{unit}"),
            bus=bus,
            profile="test",
            address=unit,
            location=LOCATION,
            points=points,
            **extra,
        )

    return make


def device_model(**fields: Any) -> ModbusDeviceConfig:
    """A device config from plain values, as the config loader gives them (nested tables as dicts)."""
    return ModbusDeviceConfig.model_validate(fields)


def tcp_bus(srv: BankServer, **extra: Any) -> ModbusTcpBusConfig:
    return ModbusTcpBusConfig(
        id="b1", host=srv.host, port=srv.port, timeout_s=extra.pop("timeout_s", 0.3), **extra
    )


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class OfflineSink:
    """A bus owner's sink that keeps what it is given and tells a device's offline transitions."""

    def __init__(self) -> None:
        self.batches: list[SampleBatch] = []
        self.events: list[Event] = []

    def submit(self, batch: SampleBatch) -> None:
        self.batches.append(batch)

    def event(self, event: Event) -> None:
        self.events.append(event)

    def mark_offline(self, device_id: str, ts: float) -> None:
        pass

    def offline(self, device_id: str) -> list[EventState]:
        return [e.state for e in self.events if e.kind == OFFLINE_KIND and e.device_id == device_id]


def holding_meter(dev_id: str, unit: int, interval_s: float = 0.1) -> ModbusDeviceConfig:
    """A device on bus "b1" reading holding[0] as point `v`."""
    return device_model(
        id=dev_id, bus="b1", profile="t", address=unit, location=LOCATION, poll_interval_s=interval_s,
        points={"v": {"table": "holding", "address": 0}},
    )  # fmt: skip
