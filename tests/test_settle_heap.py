"""settle_heap (gateway/heap.py): what survives start-up is frozen, so later collections skip it;
settling again (after a reload) first collects what an earlier settle froze and is garbage now."""

from __future__ import annotations

import gc
import weakref

from citynerve.gateway.heap import settle_heap


class _Node:
    def __init__(self) -> None:
        self.me = self  # a cycle: only the cyclic collector frees it


def test_settle_heap_freezes_and_a_later_settle_frees_frozen_garbage() -> None:
    try:
        node = _Node()
        ref = weakref.ref(node)
        frozen = settle_heap()
        assert frozen == gc.get_freeze_count() > 0
        del node
        gc.collect()  # a frozen cycle is not collected by an ordinary collection
        assert ref() is not None
        settle_heap()  # a reload settles again: unfreeze, collect, freeze
        assert ref() is None
    finally:
        gc.unfreeze()
