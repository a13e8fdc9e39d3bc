"""The gateway's public API for drivers: records, errors, config base models and driver interfaces.

Drivers import only this package from the gateway (ARCHITECTURE: drivers -> gateway.api).
"""

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
    FrameFault,
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
    "BusConfig",
    "ChannelError",
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
    "FrameFault",
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
    "TransientError",
    "Value",
    "WriteRejectedError",
    "utc_now",
]
