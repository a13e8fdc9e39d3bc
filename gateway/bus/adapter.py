"""A serial bus's USB adapter while its port cannot be opened: the owner's open backs off, doubling
up to the bus's backoff_max_s (5 minutes by default), so that a port that is busy or refused is not
hammered. A port whose device node is missing (the adapter unplugged, or absent at start) is
different: a technician plugging it back in expects the line to be read at once, and looking for
the node costs one stat. `AdapterWatch` says when a missing port is back, so the owner opens it
then instead of at its next retry."""

from __future__ import annotations

import logging
import os

from citynerve.gateway.api import BusConfig, SerialSettings

log = logging.getLogger("citynerve.bus")

ADAPTER_CHECK_S = 1.0  # how often a bus whose port is missing looks for it (one stat)


def adapter_port(bus: BusConfig) -> str | None:
    """The device node a serial bus opens (/dev/ttyUSB0, a /dev/serial/by-id link), or None: a TCP
    bus, a BLE adapter and a `socket://` converter URL have no node to look for."""
    if isinstance(bus, SerialSettings) and "://" not in bus.port:
        return bus.port
    return None


class AdapterWatch:
    """Whether a bus's port was missing when its channel last failed, and whether it is back since."""

    def __init__(self, bus: BusConfig) -> None:
        self.bus_id = bus.id
        self.port = adapter_port(bus)
        self.missing = False

    def failed(self) -> None:
        """An open failed, or the open channel was lost: watch the port only if its node is gone (a
        status read right after the loss says so). A port that is there and still fails (busy,
        permission denied, not a tty) keeps the open's backoff: no reopen loop."""
        self.missing = self.port is not None and not os.path.exists(self.port)

    def opened(self) -> None:
        self.missing = False

    def back(self) -> bool:
        """Whether the missing port is there again (logged once): open it now."""
        if self.port is None or not self.missing or not os.path.exists(self.port):
            return False
        log.warning("bus %s: adapter %s is back; reopening", self.bus_id, self.port)
        self.missing = False
        return True
