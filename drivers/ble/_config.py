"""Bus config of a BLE adapter (the `[[buses]]` entry of a BLE bus)."""

from __future__ import annotations

from pydantic import Field, model_validator

from citynerve.drivers.ble._record import Backend
from citynerve.gateway.api import BusConfig


class BleBusConfig(BusConfig):
    """One BLE adapter. `transport` is bumble's transport string; `adapter` is the BlueZ adapter."""

    backend: Backend = Backend.BLEAK
    adapter: str = Field(default="hci0", description="BlueZ adapter name (bleak backend)")
    transport: str = Field(
        default="",
        description="bumble transport: 'usb:0', 'serial:/dev/ttyUSB0,1000000', 'tcp-client:host:port', "
        "or 'virtual:<name>' for an in-process link registered by a simulator",
    )
    passive: bool = Field(default=True, description="passive scanning (no scan requests) where possible")
    watchdog_s: float = Field(
        default=120.0, gt=0, le=3600, description="restart scanning after this long with nothing heard"
    )

    @model_validator(mode="after")
    def _bumble_needs_transport(self) -> BleBusConfig:
        if self.backend is Backend.BUMBLE and not self.transport:
            raise ValueError("backend 'bumble' needs a transport, e.g. 'usb:0' or 'serial:/dev/ttyACM0'")
        return self
