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
    encoding: str = Field(  # gb18030 is a superset of GB2312: never fails on a panel that strays outside it
        default="gb18030",
        description=(
            "character set the panel prints in: a text encoding in which CR and LF are the bytes 0D 0A "
            "(gb18030, gb2312, big5, utf-8...; not UTF-16/32)"
        ),
    )
    date_order: Literal["ymd", "dmy", "mdy"] = "ymd"
    points: dict[str, FirePanelPoint] = Field(default_factory=dict)  # type: ignore[assignment]

    @field_validator("address", mode="before")
    @classmethod
    def _address(cls, v: object) -> object:
        return str(v) if isinstance(v, int) and not isinstance(v, bool) else v

    @field_validator("encoding")
    @classmethod
    def _encoding(cls, v: str) -> str:
        """A text encoding the listener can use: lines are split at CR/LF bytes, then each is
        decoded with errors="replace". Bytes-to-bytes codecs (hex, base64, zlib, rot13) and
        encodings in which CR/LF are not those bytes (UTF-16/32, EBCDIC) would fail or garble
        every line, so they are refused here, once, naming the key."""
        try:
            info = codecs.lookup(v)
        except LookupError:
            raise ValueError(
                f"encoding {v!r} is not a known codec (e.g. gb18030, gb2312, big5, utf-8)"
            ) from None
        if not getattr(info, "_is_text_encoding", True):
            raise ValueError(f"encoding {v!r} is not a text encoding (a bytes-to-bytes codec)")
        try:
            line_ends = "\r\n".encode(info.name) == b"\r\n"
            b"\r\n text \xff".decode(info.name, errors="replace")
        except (UnicodeError, LookupError, ValueError, TypeError):
            line_ends = False
        if not line_ends:
            raise ValueError(
                f"encoding {v!r} cannot be read line by line: CR and LF are not the bytes 0D 0A in it, "
                "or it cannot replace an invalid byte (UTF-16/32 and EBCDIC cannot be used)"
            )
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
