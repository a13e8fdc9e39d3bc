"""A serial bus's USB adapter while its port cannot be opened: the owner's open backs off, doubling
up to the bus's backoff_max_s (5 minutes by default), so that a port that is busy or refused is not
hammered. A port whose device node is missing (the adapter unplugged, or absent at start) is
different: a technician plugging it back in expects the line to be read at once, and looking for
the node costs one stat. `AdapterWatch` says when a missing port is back, so the owner opens it
then instead of at its next retry.

A port whose node is there but whose open fails with EIO, ENODEV or ENXIO is a half-gone adapter
(a USB glitch, a wedged converter): no program holds it and no setting is wrong, the device behind
the node does not answer. Its open is tried every check too (one failing open a second) and the
bus's channel error names the port and the errno and says what to do, instead of pyserial's text."""

from __future__ import annotations

import errno
import logging
import os

from citynerve.gateway.api import BusConfig, SerialSettings, os_errno

log = logging.getLogger("citynerve.bus")

ADAPTER_CHECK_S = 1.0  # how often a bus whose port is missing looks for it (one stat)
HALF_GONE_ERRNOS = frozenset({errno.EIO, errno.ENODEV, errno.ENXIO})
"""An open failing with one of these on a node that is there: the adapter, not the port's use."""


def adapter_port(bus: BusConfig) -> str | None:
    """The device node a serial bus opens (/dev/ttyUSB0, a /dev/serial/by-id link), or the one its
    config names for its adapter (a BLE bus: `BusConfig.adapter_node`), or None: a TCP bus, a
    `socket://` converter URL and a BLE dongle found by USB index have no node to look for."""
    if isinstance(bus, SerialSettings):
        return bus.port if "://" not in bus.port else None
    return bus.adapter_node()


class AdapterWatch:
    """Whether a bus's port was missing (or there but half-gone) when its channel last failed, and
    whether to try the open again at the next check."""

    def __init__(self, bus: BusConfig) -> None:
        self.bus_id = bus.id
        self.port = adapter_port(bus)
        self.missing = False
        self.half_gone: int | None = None  # the errno of an open that failed on a node that is there

    @property
    def watching(self) -> bool:
        """Whether the owner checks the port every ADAPTER_CHECK_S."""
        return self.missing or self.half_gone is not None

    def failed(self, err: BaseException | None = None) -> None:
        """An open failed (`err`, the driver's error), or the open channel was lost: watch the port
        if its node is gone (a status read right after the loss says so) or if the open failed on
        it with EIO/ENODEV/ENXIO. A port that is there and still fails (busy, permission denied,
        not a tty) keeps the open's backoff: no reopen loop."""
        self.missing = self.port is not None and not os.path.exists(self.port)
        code = os_errno(err) if self.port is not None and not self.missing else None
        self.half_gone = code if code in HALF_GONE_ERRNOS else None

    def reason(self, reason: str) -> str:
        """The channel error to show for a failed open: for a half-gone adapter, in field words."""
        if self.half_gone is None:
            return reason
        code = self.half_gone
        return (
            f"adapter {self.port} is there but does not work ({errno.errorcode.get(code, code)}: "
            f"{os.strerror(code)}): unplug it and plug it back in"
        )

    def gone(self) -> bool:
        """Whether the port's node is not there (looked at while the channel is open: one stat)."""
        return self.port is not None and not os.path.exists(self.port)

    def opened(self) -> None:
        self.missing = False
        self.half_gone = None

    def due(self) -> bool:
        """Whether to open now: the missing port is there again (logged once), or the half-gone
        adapter's open is tried again (once a check)."""
        if self.half_gone is not None:
            return True
        if self.port is None or not self.missing or not os.path.exists(self.port):
            return False
        log.warning("bus %s: adapter %s is back; reopening", self.bus_id, self.port)
        self.missing = False
        return True
