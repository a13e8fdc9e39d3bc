"""Base config models that every driver extends with its protocol's own fields.

A driver's `DriverSpec` names its bus, device and point models (subclasses of these). The config
loader validates the common structure first, then each entry with its driver's model, so every
error carries the key path where it was found.
"""

from __future__ import annotations

import re
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

_STRICT = ConfigDict(extra="forbid", frozen=True, str_strip_whitespace=True)

ID_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9_.:-]{0,63}$"
"""Ids of gateways, buses, devices and points: letters, digits, `_ . : -`, at most 64 characters."""


class _Model(BaseModel):
    model_config = _STRICT


class Location(_Model):
    """Where a device is: the platform places every device by its address code and coordinates."""

    address_code: str = Field(pattern=r"^[0-9]{6,20}$", description="administrative/grid address code")
    lat: float | None = Field(default=None, ge=-90, le=90)
    lon: float | None = Field(default=None, ge=-180, le=180)
    building: str = ""
    floor: str = ""
    room: str = ""
    text: str = Field(default="", description="free-text location, e.g. 'stairwell B, 3F'")


class PointConfig(_Model):
    """One point of a device: the common part. Drivers add where the value lives (register, DI...)."""

    name: str = Field(default="", pattern=r"^$|" + ID_PATTERN)
    description: str = ""
    unit: str = ""
    scale: float = 1.0
    offset: float = 0.0
    poll_interval_s: float | None = Field(default=None, gt=0, le=86400)
    deadband: float = Field(default=0.0, ge=0)
    max_interval_s: float = Field(default=900.0, gt=0, description="report at least this often")
    bounds: tuple[float, float] | None = Field(
        default=None,
        description="physical bounds [min, max] of the engineering value; outside them a reading is "
        "suspect (default: shared bounds of the point's unit)",
    )
    writable: bool = False
    enabled: bool = True


class DeviceConfig(_Model):
    """One device on a bus. Drivers narrow `address` and may add fields (keys, meter type...)."""

    id: str = Field(pattern=ID_PATTERN)
    bus: str
    profile: str
    address: int | str
    name: str = ""
    enabled: bool = True
    poll_interval_s: float | None = Field(default=None, gt=0, le=86400)
    location: Location
    component_code: str | None = Field(
        default=None, description="16-digit city component id: county(6) class(2) subclass(2) serial(6)"
    )
    tags: tuple[str, ...] = ()
    points: dict[str, PointConfig] = Field(default_factory=dict)

    def event_attrs(self) -> dict[str, Any]:
        """What every event about this device carries, so the platform can place it on the map."""
        return {
            "bus": self.bus,
            "profile": self.profile,
            "component_code": self.component_code,
            "location": self.location.model_dump(exclude_defaults=True),
        }

    @field_validator("component_code")
    @classmethod
    def _component_code(cls, v: str | None) -> str | None:
        if v is not None and not re.fullmatch(r"[0-9]{16}", v):
            raise ValueError("expected a 16-digit city component code, e.g. '3205080101000001'")
        return v


class SerialSettings(_Model):
    """How to open a serial line. `port` is any pyserial URL: /dev/ttyUSB0, socket://host:port, ..."""

    port: str = Field(min_length=1)
    baudrate: int = Field(default=9600, gt=0, le=4_000_000)
    bytesize: Literal[7, 8] = 8
    parity: Literal["N", "E", "O"] = "N"
    stopbits: Literal[1, 2] = 1


class BusConfig(_Model):
    """One physical channel (serial port, TCP endpoint, BLE adapter) and how to poll it."""

    id: str = Field(pattern=ID_PATTERN)
    protocol: str
    description: str = ""
    enabled: bool = True
    timeout_s: float = Field(default=1.0, gt=0, le=60)
    retries: int = Field(default=1, ge=0, le=10, description="extra tries of one transaction")
    backoff_initial_s: float = Field(default=5.0, gt=0)
    backoff_max_s: float = Field(default=300.0, gt=0)
    offline_after: int = Field(default=3, ge=1, description="failed polls in a row before offline")
