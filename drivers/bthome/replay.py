"""Replay protection: the last accepted encryption counter per node and key, kept across restarts.

Counters live in the gateway's StateStore under `bthome.counter.<MAC>.<fingerprint>`, the
fingerprint being a short hash of the node's key (`key_fingerprint`, never the key): a node
provisioned anew with a new key (after its flash was erased, its counter restarting at 1) starts a
fresh counter, while the old key's counter stays, so adverts captured under the old key stay refused
if that key ever came back. They are cached in memory and written behind (`flush`), so the hot path
never waits on SQLite; the driver flushes every second and on close. A node never reuses a counter
(device_fw persists it ahead of use), so the only cost of a crash between accept and flush is
accepting, once, an advert replayed from that last second.

Older releases kept one counter per MAC (`bthome.counter.<MAC>`). That counter belongs to the key
the node had then, which is the configured key when an upgraded gateway first looks: the first key
that finds no counter of its own adopts it (its fingerprint is recorded under
`bthome.counter.<MAC>.adopted`), so an upgrade opens no replay window; a later key does not inherit
it. The MAC-only entry is left as it was, for a release rolled back to.

A counter that cannot be read is no counter at all: `last` raises CounterUnavailableError (the
driver refuses the advert as `store_unavailable`) and reads again next time, rather than accept a
replay. `flush` never writes a counter below the stored one (only `reset` lowers it).
"""

from __future__ import annotations

import hashlib
import logging

from citynerve.drivers.bthome.errors import CounterUnavailableError
from citynerve.gateway.api import StateStore

log = logging.getLogger(__name__)

KEY_PREFIX = "bthome.counter."
ADOPTED = "adopted"  # `<prefix><MAC>.adopted`: the fingerprint of the key that took the MAC-only counter
FINGERPRINT_HEX = 12
"""48 bits of SHA-256 over a fixed label and the key: tells a node's keys apart, reveals nothing of them."""

Slot = tuple[str, str]  # (MAC, key fingerprint)


def key_fingerprint(key: bytes) -> str:
    """The short hash of a node's AES key that names its counter (never the key itself)."""
    return hashlib.sha256(b"citynerve bthome counter\0" + key).hexdigest()[:FINGERPRINT_HEX]


def counter_key(mac: str, fingerprint: str) -> str:
    """The StateStore key of the counter of `mac` under the key with `fingerprint`."""
    return f"{KEY_PREFIX}{mac}.{fingerprint}"


class CounterGuard:
    """Last accepted counter per (MAC, key fingerprint), loaded lazily from `state`, written behind."""

    def __init__(self, state: StateStore | None) -> None:
        self._state = state
        self._last: dict[Slot, int | None] = {}
        self._dirty: set[Slot] = set()
        self._overwrite: set[Slot] = set()  # reset: the next write may go below the stored counter

    async def last(self, mac: str, fingerprint: str) -> int | None:
        """The last accepted counter of `mac` under this key (None: never seen). Raises
        CounterUnavailableError when the store cannot be read; nothing is cached then, so the next
        call reads again."""
        slot = (mac, fingerprint)
        if slot not in self._last:
            try:
                self._last[slot] = await self._load(mac, fingerprint)
            except Exception as err:  # the store's own errors (sqlite3, OSError): all mean "unread"
                raise CounterUnavailableError(mac, err) from err
        return self._last[slot]

    async def _load(self, mac: str, fingerprint: str) -> int | None:
        if self._state is None:
            return None
        stored = await self._state.get(counter_key(mac, fingerprint))
        if stored is not None:  # "" is a counter reset: none, and no MAC-only one to adopt
            return _counter(counter_key(mac, fingerprint), stored)
        legacy = _counter(KEY_PREFIX + mac, await self._state.get(KEY_PREFIX + mac))
        if legacy is None:
            return None
        adopted = await self._state.get(f"{KEY_PREFIX}{mac}.{ADOPTED}")
        if adopted not in (None, fingerprint):
            return None  # another key took the MAC-only counter: this key is a fresh start
        # Recorded now, before any advert is accepted under it: the counter first, then who took it.
        await self._state.put(counter_key(mac, fingerprint), str(legacy))
        await self._state.put(f"{KEY_PREFIX}{mac}.{ADOPTED}", fingerprint)
        log.info("replay counter of %s (%d) kept from before, for its current key", mac, legacy)
        return legacy

    def cached(self, mac: str, fingerprint: str) -> int | None:
        """The cached counter without touching the store (for diagnostics)."""
        return self._last.get((mac, fingerprint))

    def accept(self, mac: str, fingerprint: str, counter: int) -> None:
        """Record `counter` as accepted; persisted at the next flush."""
        self._last[(mac, fingerprint)] = counter
        self._dirty.add((mac, fingerprint))

    def reset(self, mac: str, fingerprint: str) -> None:
        """Forget a node's counter under this key (a node reflashed with its old key): the next
        advert is accepted. The MAC-only counter of an older release is not adopted after this."""
        slot = (mac, fingerprint)
        self._last[slot] = None
        self._dirty.add(slot)
        self._overwrite.add(slot)

    async def flush(self) -> None:
        """Write changed counters to the store, never one below the stored counter (another writer,
        or an older gateway's, may have stored a higher one: that one stays and is adopted)."""
        if self._state is None:
            self._dirty.clear()
            self._overwrite.clear()
            return
        while self._dirty:
            slot = self._dirty.pop()
            key = counter_key(*slot)
            try:
                value = self._last.get(slot)
                if slot not in self._overwrite:
                    stored = _counter(key, await self._state.get(key))
                    if stored is not None and (value is None or stored >= value):
                        self._last[slot] = stored
                        continue
                await self._state.put(key, "" if value is None else str(value))
                self._overwrite.discard(slot)
            except Exception:
                self._dirty.add(slot)  # try again at the next flush
                raise


def _counter(key: str, stored: str | None) -> int | None:
    try:
        return int(stored) if stored else None
    except ValueError:
        log.warning("state %s holds %r, not a counter: starting afresh", key, stored)
        return None
