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

    def adapter_node(self) -> str | None:
        """What says the adapter is plugged in: BlueZ's (and bumble's `hci-socket:N`) kernel HCI
        device under /sys/class/bluetooth, a serial dongle's port. None for bumble's USB (found by
        index or vendor id through libusb), TCP and in-process virtual transports."""
        if self.backend is Backend.BLEAK:
            return f"/sys/class/bluetooth/{self.adapter}"
        kind, _, spec = self.transport.partition(":")
        if kind == "serial" and spec:
            return spec.split(",", 1)[0]
        if kind == "hci-socket":
            return f"/sys/class/bluetooth/hci{spec or 0}"
        return None
