"""Bus owners: one task per physical channel; only the owner touches its channel."""

from gateway.bus.events import FAULT_KIND, FAULT_RULE, OFFLINE_KIND, DeviceFaultError
from gateway.bus.health import BusCounters, DeviceHealth
from gateway.bus.owner import BusNotRunningError, BusOwner, BusSink

__all__ = [
    "FAULT_KIND",
    "FAULT_RULE",
    "OFFLINE_KIND",
    "BusCounters",
    "BusNotRunningError",
    "BusOwner",
    "BusSink",
    "DeviceFaultError",
    "DeviceHealth",
]
