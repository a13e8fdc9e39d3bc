"""CJ/T 188-2004 / -2018 water, gas and heat meters over RS-485 (or M-Bus level converters).

`DRIVER` is the `citynerve.drivers` entry point (bus protocol "cjt188"); `decode.decode` is the
`citynerve.decoders` entry point used by `citynerve diag decode cjt188 HEX`.
"""

from citynerve.drivers.cjt188._driver import Cjt188Driver, valve_command
from citynerve.drivers.cjt188.models import Cjt188Device, Cjt188Point, StatusBits
from citynerve.drivers.serialio import SerialBusConfig, meter_number
from citynerve.gateway.api import DriverSpec

DRIVER = DriverSpec(
    protocol="cjt188",
    family="cjt188",
    bus_model=SerialBusConfig,
    device_model=Cjt188Device,
    point_model=Cjt188Point,
    factory=Cjt188Driver,
    normalize_address=meter_number(14),
    description="CJ/T 188-2004/2018 water, gas and heat meters on RS-485 (2400 8E1 by default)",
)

__all__ = ["DRIVER", "Cjt188Device", "Cjt188Driver", "Cjt188Point", "StatusBits", "valve_command"]
