"""The gateway's heap after start-up: what the cyclic garbage collector walks.

A full (generation 2) collection walks every tracked object in the process: the imported modules,
the config models, the drivers and rule packs, most of which live as long as the process. On this
box such a collection took up to 180 ms during a drain (docs/benchmarks.md, northbound), a stall of
the event loop that every alarm waiting to be published pays. `settle_heap()` collects once and
then moves every surviving object to the permanent generation (`gc.freeze`), so later collections
walk only what was allocated since. Called by the runtime once it is ready and after each reload
(which unfreezes first, so the previous config's cyclic garbage is still collected).
"""

from __future__ import annotations

import gc
import logging
import time

log = logging.getLogger(__name__)


def settle_heap() -> int:
    """Collect, then freeze what survives; returns the number of frozen objects."""
    started = time.perf_counter()
    gc.unfreeze()  # what an earlier settle froze and is garbage now is collected too
    gc.collect()
    gc.freeze()
    frozen = gc.get_freeze_count()
    log.debug("heap settled: %d objects frozen in %.0f ms", frozen, (time.perf_counter() - started) * 1000)
    return frozen
