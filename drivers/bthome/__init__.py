"""BTHome v2 sensors over BLE: codec (sans-I/O), decryption, replay protection and the ListenDriver.

`DRIVER` is the DriverSpec for bus protocol "bthome" (entry point `citynerve.drivers`).
"""

from citynerve.drivers.ble import BleBusConfig
from citynerve.drivers.bthome.codec import Advert, Measurement, build, normalize_mac, parse
from citynerve.drivers.bthome.config import BTHomeDevice, BTHomePoint
from citynerve.drivers.bthome.driver import BTHomeDriver, DeviceLinkStats, NearbyNode
from citynerve.drivers.bthome.errors import (
    BTHomeFrameError,
    CounterUnavailableError,
    DecryptionError,
    MalformedAdvertError,
    MissingKeyError,
    RejectReason,
    ReplayError,
    UnencryptedAdvertError,
)
from citynerve.gateway.api import (
    DiagParamError,  # (shared by every driver's diag actions)
    DriverSpec,
)

DRIVER = DriverSpec(
    protocol="bthome",
    family="bthome",
    bus_model=BleBusConfig,
    device_model=BTHomeDevice,
    point_model=BTHomePoint,
    factory=BTHomeDriver,
    description="BTHome v2 BLE sensors (manhole covers, smoke, water leak, temperature), AES-CCM keys",
    normalize_address=normalize_mac,
)

__all__ = [
    "DRIVER",
    "Advert",
    "BTHomeDevice",
    "BTHomeDriver",
    "BTHomeFrameError",
    "BTHomePoint",
    "BleBusConfig",
    "CounterUnavailableError",
    "DecryptionError",
    "DeviceLinkStats",
    "DiagParamError",
    "MalformedAdvertError",
    "Measurement",
    "MissingKeyError",
    "NearbyNode",
    "RejectReason",
    "ReplayError",
    "UnencryptedAdvertError",
    "build",
    "parse",
]
