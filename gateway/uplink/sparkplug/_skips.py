"""Records the edge node cannot send (a device past its limits): counted, and each cause logged once."""

from __future__ import annotations

import logging

log = logging.getLogger(__name__)

MAX_LOGGED = 1_000
"""Causes (a device and a reason) logged one by one; past that, one last line says so."""


class SkipLog:
    """`count` of the records not sent; the first record of each device and reason is logged, so
    that none is unseen, and a device that skips a record in every batch does not flood the log."""

    def __init__(self) -> None:
        self.count = 0
        self._logged: set[tuple[str, str]] = set()

    def skip(self, device_id: str, why: str) -> None:
        self.count += 1
        key = (device_id, why)
        if key in self._logged or len(self._logged) > MAX_LOGGED:
            return
        self._logged.add(key)
        if len(self._logged) > MAX_LOGGED:
            log.warning("sparkplug: records of more devices are not sent, no longer logged (skipped_records)")
            return
        log.warning(
            "sparkplug: device %r: %s: such records are not sent (counted in skipped_records, logged once)",
            device_id,
            why,
        )
