"""Bus config for the RS-485 meter and panel drivers: a serial port and its half-duplex timing."""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from gateway.api import BusConfig, SerialSettings


class MeterSerialSettings(SerialSettings):
    """Serial settings with the defaults of Chinese utility meters: 2400 baud, 8E1."""

    baudrate: int = Field(default=2400, gt=0, le=4_000_000)
    parity: Literal["N", "E", "O"] = "E"


class SerialBusConfig(BusConfig):
    """A serial bus: `[buses.serial] port = "/dev/ttyUSB0"` plus optional baudrate/parity/stop bits.

    `gap_s` is the silence kept between the end of one frame and the next request (RS-485 turnaround).
    """

    serial: MeterSerialSettings
    gap_s: float = Field(default=0.02, ge=0, le=2)
