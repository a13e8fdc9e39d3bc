"""Modbus driver: TCP, RTU (any pyserial URL) and RTU over TCP, reads FC 1-4, writes FC 5/6/15/16.

Exports one `DriverSpec` per bus protocol (entry points `citynerve.drivers`: modbus_tcp,
modbus_rtu, modbus_rtu_over_tcp). The driver is imported only when a driver is created, so
reading configs or decoding frames does not pay for it; it runs on its own TCP and RTU transaction
layers (pymodbus is the tests' peer and reference). See docs/modbus.md.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from citynerve.drivers.modbus.config import (
    ModbusDeviceConfig,
    ModbusPointConfig,
    ModbusRtuBusConfig,
    ModbusRtuOverTcpBusConfig,
    ModbusTcpBusConfig,
    ModbusTcpDeviceConfig,
)
from citynerve.gateway.api import Driver, DriverSpec, StateStore


def _factory(
    bus: Any, devices: Sequence[ModbusDeviceConfig], state: StateStore | None = None
) -> Driver[Any, Any]:
    from citynerve.drivers.modbus.driver import ModbusDriver

    return ModbusDriver(bus, devices, state)


TCP_DRIVER = DriverSpec(
    protocol="modbus_tcp",
    family="modbus",
    bus_model=ModbusTcpBusConfig,
    device_model=ModbusTcpDeviceConfig,
    point_model=ModbusPointConfig,
    factory=_factory,
    description="Modbus TCP (MBAP framing) to a device or a TCP gateway",
)
RTU_DRIVER = DriverSpec(
    protocol="modbus_rtu",
    family="modbus",
    bus_model=ModbusRtuBusConfig,
    device_model=ModbusDeviceConfig,
    point_model=ModbusPointConfig,
    factory=_factory,
    description="Modbus RTU on a serial line (RS-485 adapter, pty, socket:// URL)",
)
RTU_OVER_TCP_DRIVER = DriverSpec(
    protocol="modbus_rtu_over_tcp",
    family="modbus",
    bus_model=ModbusRtuOverTcpBusConfig,
    device_model=ModbusDeviceConfig,
    point_model=ModbusPointConfig,
    factory=_factory,
    description="Modbus RTU frames through a serial-to-Ethernet converter (TCP socket)",
)

__all__ = [
    "RTU_DRIVER",
    "RTU_OVER_TCP_DRIVER",
    "TCP_DRIVER",
    "ModbusDeviceConfig",
    "ModbusPointConfig",
    "ModbusRtuBusConfig",
    "ModbusRtuOverTcpBusConfig",
    "ModbusTcpBusConfig",
    "ModbusTcpDeviceConfig",
]
