"""Bus owners: one task per physical channel; only the owner touches its channel."""

from gateway.bus.health import BusCounters, DeviceHealth
from gateway.bus.owner import OFFLINE_KIND, BusNotRunningError, BusOwner, BusSink

__all__ = ["OFFLINE_KIND", "BusCounters", "BusNotRunningError", "BusOwner", "BusSink", "DeviceHealth"]
