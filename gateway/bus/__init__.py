"""Bus owners: one task per physical channel; only the owner touches its channel."""

from citynerve.gateway.bus.events import FAULT_KIND, FAULT_RULE, OFFLINE_KIND, DeviceFaultError
from citynerve.gateway.bus.health import BusCounters, DeviceHealth
from citynerve.gateway.bus.owner import BusNotRunningError, BusOwner, BusSink, BusStoppedError

__all__ = [
    "FAULT_KIND",
    "FAULT_RULE",
    "OFFLINE_KIND",
    "BusCounters",
    "BusNotRunningError",
    "BusOwner",
    "BusSink",
    "BusStoppedError",
    "DeviceFaultError",
    "DeviceHealth",
]
