"""Replay protection: the last accepted encryption counter per node, kept across restarts.

Counters live in the gateway's StateStore under `bthome.counter.<MAC>`. They are cached in memory
and written behind (`flush`), so the hot path never waits on SQLite; the driver flushes every
second and on close. A node never reuses a counter (device_fw persists it ahead of use), so the
only cost of a crash between accept and flush is accepting, once, an advert replayed from that
last second.

A counter that cannot be read is no counter at all: `last` raises CounterUnavailableError (the
driver refuses the advert as `store_unavailable`) and reads again next time, rather than accept a
replay. `flush` never writes a counter below the stored one (only `reset` lowers it).
"""

from __future__ import annotations

import logging

from citynerve.drivers.bthome.errors import CounterUnavailableError
from citynerve.gateway.api import StateStore

log = logging.getLogger(__name__)

KEY_PREFIX = "bthome.counter."


class CounterGuard:
    """Last accepted counter per MAC, loaded lazily from `state`, written behind."""

    def __init__(self, state: StateStore | None) -> None:
        self._state = state
        self._last: dict[str, int | None] = {}
        self._dirty: set[str] = set()
        self._overwrite: set[str] = set()  # reset: the next write may go below the stored counter

    async def last(self, mac: str) -> int | None:
        """The last accepted counter of `mac` (None: never seen). Raises CounterUnavailableError
        when the store cannot be read; nothing is cached then, so the next call reads again."""
        if mac not in self._last:
            try:
                stored = await self._state.get(KEY_PREFIX + mac) if self._state is not None else None
            except Exception as err:  # the store's own errors (sqlite3, OSError): all mean "unread"
                raise CounterUnavailableError(mac, err) from err
            self._last[mac] = _counter(mac, stored)
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
        self._overwrite.add(mac)

    async def flush(self) -> None:
        """Write changed counters to the store, never one below the stored counter (another writer,
        or an older gateway's, may have stored a higher one: that one stays and is adopted)."""
        if self._state is None:
            self._dirty.clear()
            self._overwrite.clear()
            return
        while self._dirty:
            mac = self._dirty.pop()
            key = KEY_PREFIX + mac
            try:
                value = self._last.get(mac)
                if mac not in self._overwrite:
                    stored = _counter(mac, await self._state.get(key))
                    if stored is not None and (value is None or stored >= value):
                        self._last[mac] = stored
                        continue
                await self._state.put(key, "" if value is None else str(value))
                self._overwrite.discard(mac)
            except Exception:
                self._dirty.add(mac)  # try again at the next flush
                raise


def _counter(mac: str, stored: str | None) -> int | None:
    try:
        return int(stored) if stored else None
    except ValueError:
        log.warning("state %s%s holds %r, not a counter: starting afresh", KEY_PREFIX, mac, stored)
        return None
