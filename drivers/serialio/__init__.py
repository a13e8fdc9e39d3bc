"""Shared async serial transport of the RS-485 meter drivers (DL/T 645, CJ/T 188) and fire panels."""

from citynerve.drivers.serialio._config import (
    MeterSerialSettings,
    SerialBusConfig,
    meter_number,
    serial_settings,
)
from citynerve.drivers.serialio._line import (
    MAX_PENDING,
    FrameAssembler,
    LineStats,
    LineTiming,
    ReplyTimeout,
    SerialLine,
    byte_time_s,
    frames_of,
    wildcard_reply_error,
)

__all__ = [
    "MAX_PENDING",
    "FrameAssembler",
    "LineStats",
    "LineTiming",
    "MeterSerialSettings",
    "ReplyTimeout",
    "SerialBusConfig",
    "SerialLine",
    "byte_time_s",
    "frames_of",
    "meter_number",
    "serial_settings",
    "wildcard_reply_error",
]
