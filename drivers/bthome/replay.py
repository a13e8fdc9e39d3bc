"""Replay protection: the last accepted encryption counter per node, kept across restarts.

Counters live in the gateway's StateStore under `bthome.counter.<MAC>`. They are cached in memory
and written behind (`flush`), so the hot path never waits on SQLite; the driver flushes every
second and on close. A node never reuses a counter (device_fw persists it ahead of use), so the
only cost of a crash between accept and flush is accepting, once, an advert replayed from that
last second.
"""

from __future__ import annotations

import logging

from citynerve.gateway.api import StateStore

log = logging.getLogger(__name__)

KEY_PREFIX = "bthome.counter."


class CounterGuard:
    """Last accepted counter per MAC, loaded lazily from `state`, written behind."""

    def __init__(self, state: StateStore | None) -> None:
        self._state = state
        self._last: dict[str, int | None] = {}
        self._dirty: set[str] = set()

    async def last(self, mac: str) -> int | None:
        """The last accepted counter of `mac` (None: never seen)."""
        if mac not in self._last:
            try:
                stored = await self._state.get(KEY_PREFIX + mac) if self._state is not None else None
            except Exception as err:
                # The store is down: go on without the stored counter (the in-memory one protects
                # from the first accepted advert on) rather than refuse every advert of the node.
                log.warning("cannot read %s%s (%s): accepting without it", KEY_PREFIX, mac, err)
                return None
            try:
                self._last[mac] = int(stored) if stored else None
            except ValueError:
                log.warning("state %s%s holds %r, not a counter: starting afresh", KEY_PREFIX, mac, stored)
                self._last[mac] = None
        return self._last[mac]

    def cached(self, mac: str) -> int | None:
        """The cached counter without touching the store (for diagnostics)."""
        return self._last.get(mac)

    def accept(self, mac: str, counter: int) -> None:
        """Record `counter` as accepted; persisted at the next flush."""
        self._last[mac] = counter
        self._dirty.add(mac)

    def reset(self, mac: str) -> None:
        """Forget a node's counter (a node replaced or re-keyed): the next advert is accepted."""
        self._last[mac] = None
        self._dirty.add(mac)

    async def flush(self) -> None:
        """Write changed counters to the store."""
        if self._state is None:
            self._dirty.clear()
            return
        while self._dirty:
            mac = self._dirty.pop()
            value = self._last.get(mac)
            try:
                await self._state.put(KEY_PREFIX + mac, "" if value is None else str(value))
            except Exception:
                self._dirty.add(mac)  # try again at the next flush
                raise
