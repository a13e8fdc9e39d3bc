"""Fire alarm control panels: a listen-only parser of the panel's printer/CRT print stream.

`DRIVER` is the `citynerve.drivers` entry point (bus protocol "firepanel"). Panel models are
plugins (`citynerve.drivers.firepanel.parsers.register_parser`); "gst" ships (GST-style GB2312 records).
"""

from citynerve.drivers.firepanel._driver import FirePanelDriver, PanelState, PanelStream
from citynerve.drivers.firepanel.models import FirePanelBusConfig, FirePanelDevice, FirePanelPoint
from citynerve.drivers.firepanel.parsers import (
    PARSERS,
    PanelParser,
    PanelRecord,
    RecordKind,
    parser_for,
    register_parser,
)
from citynerve.gateway.api import DriverSpec

DRIVER = DriverSpec(
    protocol="firepanel",
    family="firepanel",
    bus_model=FirePanelBusConfig,
    device_model=FirePanelDevice,
    point_model=FirePanelPoint,
    factory=FirePanelDriver,
    description="fire alarm control panel printer/CRT stream (listen only; GST-style GB2312 parser)",
)

__all__ = [
    "DRIVER",
    "PARSERS",
    "FirePanelBusConfig",
    "FirePanelDevice",
    "FirePanelDriver",
    "FirePanelPoint",
    "PanelParser",
    "PanelRecord",
    "PanelState",
    "PanelStream",
    "RecordKind",
    "parser_for",
    "register_parser",
]
