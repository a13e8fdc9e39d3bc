"""Bus config for the RS-485 meter and panel drivers: a serial port and its half-duplex timing."""

from __future__ import annotations

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
