"""Bus config for the RS-485 meter and panel drivers: a serial port and its half-duplex timing."""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Literal

from pydantic import Field

from citynerve.gateway.api import BusConfig, SerialSettings


class MeterSerialSettings(SerialSettings):
    """Serial settings with the defaults of Chinese utility meters: 2400 baud, 8E1."""

    baudrate: int = Field(default=2400, gt=0, le=4_000_000)
    parity: Literal["N", "E", "O"] = "E"


def serial_settings(bus: SerialSettings) -> SerialSettings:
    """The plain serial settings of a bus config that extends SerialSettings."""
    return SerialSettings(
        port=bus.port, baudrate=bus.baudrate, bytesize=bus.bytesize, parity=bus.parity, stopbits=bus.stopbits
    )


class SerialBusConfig(BusConfig, MeterSerialSettings):
    """An RS-485 meter bus, flat like every serial bus in the config (as Modbus RTU):
    `port = "/dev/ttyUSB0"`, optional `baudrate` (2400), `parity` ("E"), `bytesize`, `stopbits`.

    `gap_s` is the RS-485 turnaround a meter gets between the end of a frame and the start of the next
    request's frame; the request's FE wake-up bytes count toward it (`LineTiming`).
    """

    gap_s: float = Field(
        default=0.02,
        ge=0,
        le=2,
        description=(
            "turnaround between the end of a frame and the start (68) of the next request; the FE "
            "wake-up bytes count toward it, the line is silent for the rest (at least one character)"
        ),
    )

    @property
    def serial(self) -> SerialSettings:
        return serial_settings(self)


def meter_number(width: int) -> Callable[[str], str]:
    """A meter's BCD address as the driver reads it (DriverSpec.normalize_address): `width` digits,
    the leading zeros a spreadsheet dropped put back ("12345678" -> "000012345678" for DL/T 645).
    Raises ValueError for anything that is not 1 to `width` digits."""
    pattern = re.compile(rf"[0-9]{{1,{width}}}")

    def normalize(address: str) -> str:
        text = address.strip()
        if not pattern.fullmatch(text):
            raise ValueError(f"a meter number is up to {width} digits, not {address!r}")
        return text.zfill(width)

    return normalize
