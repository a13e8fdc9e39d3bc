"""DL/T 645-2007 / -1997 electricity meters over RS-485.

`DRIVER` is the `citynerve.drivers` entry point (bus protocol "dlt645"); `decode.decode` is the
`citynerve.decoders` entry point used by `citynerve diag decode dlt645 HEX`.
"""

from citynerve.drivers.dlt645._driver import DiRequest, Dlt645Driver
from citynerve.drivers.dlt645.models import DataItemConfig, Dlt645Device, Dlt645Point
from citynerve.drivers.serialio import SerialBusConfig, meter_number
from citynerve.gateway.api import DriverSpec

DRIVER = DriverSpec(
    protocol="dlt645",
    family="dlt645",
    bus_model=SerialBusConfig,
    device_model=Dlt645Device,
    point_model=Dlt645Point,
    factory=Dlt645Driver,
    normalize_address=meter_number(12),
    description="DL/T 645-2007/1997 electricity meters on RS-485 (2400 8E1 by default)",
)

__all__ = ["DRIVER", "DataItemConfig", "DiRequest", "Dlt645Device", "Dlt645Driver", "Dlt645Point"]
