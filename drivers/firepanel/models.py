"""Config models of the fire panel listener."""

from __future__ import annotations

import codecs
from typing import Literal

from pydantic import Field, field_validator

from citynerve.gateway.api import BusConfig, DeviceConfig, PointConfig, SerialSettings


class PanelSerialSettings(SerialSettings):
    """Printer ports are mostly 9600 8N1 (some panels 2400 or 4800: set it)."""

    baudrate: int = Field(default=9600, gt=0, le=4_000_000)


class FirePanelBusConfig(BusConfig, PanelSerialSettings):
    """The serial port wired to the panel's printer/CRT output (listen only: never transmits):
    `port`, optional `baudrate` (9600), `parity` ("N"), `bytesize`, `stopbits`."""

    @property
    def serial(self) -> SerialSettings:
        return SerialSettings(
            port=self.port,
            baudrate=self.baudrate,
            bytesize=self.bytesize,
            parity=self.parity,
            stopbits=self.stopbits,
        )


PanelField = Literal["fire_alarm", "alarms_active", "faults_active", "last_event", "raw"]


class FirePanelPoint(PointConfig):
    """A value the listener keeps: `fire_alarm` (any fire/smoke raised), `alarms_active`,
    `faults_active` (counts), `last_event` (the panel's words), `raw` (lines no parser knew)."""

    field: PanelField


class FirePanelDevice(DeviceConfig):
    """The panel itself: `address` is the panel id (as printed or as the installer names it)."""

    address: str = Field(min_length=1, max_length=64)
    panel_model: str = Field(default="gst", description="parser plugin name")
    encoding: str = "gb18030"  # superset of GB2312: never fails on a panel that strays outside it
    date_order: Literal["ymd", "dmy", "mdy"] = "ymd"
    points: dict[str, FirePanelPoint] = Field(default_factory=dict)  # type: ignore[assignment]

    @field_validator("address", mode="before")
    @classmethod
    def _address(cls, v: object) -> object:
        return str(v) if isinstance(v, int) and not isinstance(v, bool) else v

    @field_validator("encoding")
    @classmethod
    def _encoding(cls, v: str) -> str:
        codecs.lookup(v)  # LookupError -> config error naming the key
        return v

    @field_validator("panel_model")
    @classmethod
    def _model(cls, v: str) -> str:
        from citynerve.drivers.firepanel.parsers import parser_for

        try:
            parser_for(v)
        except KeyError as err:
            raise ValueError(err.args[0]) from err
        return v
