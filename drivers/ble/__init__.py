"""BLE scanning behind one interface, with bleak (BlueZ) and bumble (HCI dongle / virtual link)
backends chosen by `Backend`. A backend's library is imported only when that backend is used."""

from citynerve.drivers.ble._config import BleBusConfig
from citynerve.drivers.ble._record import (
    AdStructureError,
    Advertisement,
    Backend,
    build_ad_structures,
    parse_ad_structures,
    uuid16_to_128,
)
from citynerve.drivers.ble._scanner import AdvertCallback, Scanner, ScannerBackend, ScannerStats, make_backend
from citynerve.drivers.ble._virtual import register_virtual_link, unregister_virtual_link, virtual_link

__all__ = [
    "AdStructureError",
    "AdvertCallback",
    "Advertisement",
    "Backend",
    "BleBusConfig",
    "Scanner",
    "ScannerBackend",
    "ScannerStats",
    "build_ad_structures",
    "make_backend",
    "parse_ad_structures",
    "register_virtual_link",
    "unregister_virtual_link",
    "uuid16_to_128",
    "virtual_link",
]
