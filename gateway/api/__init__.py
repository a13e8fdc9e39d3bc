"""The gateway's public API for drivers: records, errors, config base models and driver interfaces.

Drivers import only this package from the gateway (ARCHITECTURE: drivers -> gateway.api).
"""

from gateway.api._clock import SYSTEM_CLOCK, Clock, SteadyWall, boot_id
from gateway.api._config import (
    BusConfig,
    DeviceConfig,
    Location,
    PointConfig,
    SerialSettings,
)
from gateway.api._driver import (
    Driver,
    DriverSpec,
    FrameDecoder,
    ListenDriver,
    PollDriver,
    PollRequest,
    SampleSink,
    StateStore,
)
from gateway.api._errors import (
    ChannelError,
    ConfigError,
    ConfigIssue,
    DeviceExceptionError,
    DeviceTimeoutError,
    FrameError,
    GatewayError,
    PermanentError,
    TransientError,
    WriteRejectedError,
)
from gateway.api._records import (
    Event,
    EventState,
    Quality,
    Reading,
    Sample,
    SampleBatch,
    Severity,
    Value,
    utc_now,
)

__all__ = [
    "SYSTEM_CLOCK",
    "BusConfig",
    "ChannelError",
    "Clock",
    "ConfigError",
    "ConfigIssue",
    "DeviceConfig",
    "DeviceExceptionError",
    "DeviceTimeoutError",
    "Driver",
    "DriverSpec",
    "Event",
    "EventState",
    "FrameDecoder",
    "FrameError",
    "GatewayError",
    "ListenDriver",
    "Location",
    "PermanentError",
    "PointConfig",
    "PollDriver",
    "PollRequest",
    "Quality",
    "Reading",
    "Sample",
    "SampleBatch",
    "SampleSink",
    "SerialSettings",
    "Severity",
    "StateStore",
    "SteadyWall",
    "TransientError",
    "Value",
    "WriteRejectedError",
    "boot_id",
    "utc_now",
]
