"""`TableCache`: what is worked out once per point table (decode plans, bounds), shared by devices.

The config loader gives the devices of one profile the same point config objects, but each device
its own mapping of them. Keyed by the mapping's identity, a cache built one entry per device (1,000
decode plans for 1,000 meters of one kind, about 2 MB). `TableCache` finds a device's entry by its
key and the identity of its mapping (one dict lookup on the hot path), and builds it only when no
other device with the same point objects under the same names has one: entries hold those objects,
so their ids cannot be reused while the entry lives.
"""

from __future__ import annotations

from collections.abc import Callable, Hashable, Mapping
from typing import Any, Generic, TypeVar

T = TypeVar("T")


class TableCache(Generic[T]):
    """`get(key, points, *args)` -> `build(points, *args)`, built once per distinct point table."""

    def __init__(self, build: Callable[..., T], *, tables: int = 4096, keys: int = 65536) -> None:
        self._build = build
        # Bounds for what reloads leave behind (old tables, removed devices): cleared when full.
        self._max_tables, self._max_keys = tables, keys
        self._by_key: dict[Hashable, tuple[Mapping[str, Any], T]] = {}
        self._shared: dict[Hashable, tuple[tuple[Any, ...], T]] = {}

    def get(self, key: Hashable, points: Mapping[str, Any], *args: Hashable) -> T:
        """The value for `key` (a device, and what else the value depends on: `args`)."""
        hit = self._by_key.get(key)
        if hit is not None and hit[0] is points:
            return hit[1]
        table = tuple(points.items())
        shared_key = (args, tuple((name, id(point)) for name, point in table))
        shared = self._shared.get(shared_key)
        if shared is None:
            if len(self._shared) >= self._max_tables:
                self._shared.clear()
            shared = self._shared[shared_key] = (table, self._build(points, *args))
        if len(self._by_key) >= self._max_keys:
            self._by_key.clear()
        self._by_key[key] = (points, shared[1])
        return shared[1]
