"""glibc heap settings for the long-running gateway (issue 17: peak RSS <= 50 MB on a Pi).

glibc's malloc raises its trim and mmap thresholds on its own after a large block is freed (the
retained inventory, ~1.4 MB at 1,000 meters, is one): from then on up to twice that much free heap
stays in the process for good, and each thread gets its own arena that keeps its own free memory.
`tune()` fixes both thresholds at 128 KiB (glibc's defaults, without the dynamic raise: large
blocks are mapped and returned on free, free heap above 128 KiB is given back) and one arena for
every thread. Measured at the footprint load (docs/benchmarks.md, 2026-12-06): steady RSS ~1 MB
lower and the start-up's large blocks returned.

Called once by `citynerve run` before any thread starts. A setting given in the environment
(`MALLOC_ARENA_MAX`, `MALLOC_TRIM_THRESHOLD_`, `MALLOC_MMAP_THRESHOLD_`, glibc's own variables) is
left as the operator set it. Other C libraries (musl): nothing is changed.

`settle_heap()` is about Python's own collector: a full (generation 2) collection walks every
tracked object in the process (the imported modules, the config models, the drivers and rule
packs, most of which live as long as the process); during a northbound drain one took up to 180 ms
on this box (docs/benchmarks.md, 2026-12-06), a stall of the event loop that every alarm waiting to
be published pays. It collects once and then moves what survives to the permanent generation
(`gc.freeze`), so later collections walk only what was allocated since. Called by the runtime once
it is ready and after each reload (which unfreezes first, so the previous config's cyclic garbage
is still collected).
"""

from __future__ import annotations

import ctypes
import gc
import logging
import os
import time

log = logging.getLogger(__name__)

# mallopt(3) parameters (glibc malloc.h)
M_TRIM_THRESHOLD = -1
M_MMAP_THRESHOLD = -3
M_ARENA_MAX = -8

THRESHOLD_BYTES = 128 * 1024
ARENAS = 1

_SETTINGS = (
    ("MALLOC_TRIM_THRESHOLD_", M_TRIM_THRESHOLD, THRESHOLD_BYTES),
    ("MALLOC_MMAP_THRESHOLD_", M_MMAP_THRESHOLD, THRESHOLD_BYTES),
    ("MALLOC_ARENA_MAX", M_ARENA_MAX, ARENAS),
)


def tune(environ: dict[str, str] | None = None) -> dict[str, int]:
    """Apply the settings glibc accepts; returns what was set (environment name -> value)."""
    env = os.environ if environ is None else environ
    try:
        mallopt = ctypes.CDLL(None).mallopt
    except (OSError, AttributeError):  # not glibc: nothing to tune
        return {}
    mallopt.argtypes = (ctypes.c_int, ctypes.c_int)
    mallopt.restype = ctypes.c_int
    applied: dict[str, int] = {}
    for name, param, value in _SETTINGS:
        if name in env:
            continue
        if mallopt(param, value) == 1:
            applied[name] = value
    return applied


def settle_heap() -> int:
    """Collect, then freeze what survives; returns the number of frozen objects."""
    started = time.perf_counter()
    gc.unfreeze()  # what an earlier settle froze and is garbage now is collected too
    gc.collect()
    gc.freeze()
    frozen = gc.get_freeze_count()
    log.debug("heap settled: %d objects frozen in %.0f ms", frozen, (time.perf_counter() - started) * 1000)
    return frozen
