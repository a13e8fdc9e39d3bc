"""Checks for values read back from a rules snapshot (JSON written by an older run, maybe damaged).

A restore takes what it can: a value of the wrong type raises ValueError here, so the engine starts
that one rule instance fresh instead of keeping a value that would raise on every reading or tick.
"""

from __future__ import annotations

import logging
import math
import reprlib
from collections.abc import Callable
from typing import Any

from citynerve.gateway.api import Value

log = logging.getLogger("citynerve.gateway.rules")

MAX_TEXT_CHARS = 8192
"""The longest text value restored (the store's own bound on a string value, store/_codec.py)."""
NEVER = -1.0
"""A stored time not set yet. Compared by equality, never by sign: a restore on a clock far behind
the snapshot's (1970 before NTP, RuleEngine.restore) moves real times below zero."""
NO_SLOT = -(2**62)
"""A slot or bin index not set yet; below any index of a real time, moved or not (see NEVER)."""


def latest(*times: float) -> float:
    """The latest of some stored times, NEVER skipped (NEVER when all are): not `max`, which takes
    NEVER for a time when the real ones were moved below zero (a restore on a 1970 clock)."""
    best = NEVER
    for t in times:
        if t != NEVER and (best == NEVER or t > best):
            best = t
    return best


def number(v: Any) -> float:
    """A finite number (a time, a total, a count), else ValueError."""
    if isinstance(v, bool) or not isinstance(v, int | float):
        raise ValueError(f"not a number: {reprlib.repr(v)}")  # cut: a damaged value may be megabytes
    try:
        f = float(v)
    except OverflowError:
        raise ValueError(f"not a finite number: {reprlib.repr(v)}") from None
    if not math.isfinite(f):
        raise ValueError(f"not a finite number: {reprlib.repr(v)}")
    return f


def opt_number(v: Any) -> float | None:
    """None, or a finite number."""
    return None if v is None else number(v)


def whole(v: Any) -> int:
    """An index or a count: a finite number, as an int."""
    return int(number(v))


def value(v: Any) -> Value:
    """What an event reports: None, bool, a finite number or text (at most MAX_TEXT_CHARS, as the
    store takes); anything else becomes None."""
    if v is None or isinstance(v, bool):
        return v
    if isinstance(v, str):
        return v if len(v) <= MAX_TEXT_CHARS else None
    if isinstance(v, int | float):
        try:
            return v if math.isfinite(v) else None
        except OverflowError:  # an int beyond float range
            return None
    return None


def clock_behind(saved_at: object, now: Callable[[], float] | None) -> float:
    """How far (s, negative) the engine's clock `now` (None: no `steady`) reads behind a snapshot's
    `saved_at`, or 0.0: no `steady`, no (or a malformed) `saved_at`, or a clock at or after it
    (RuleEngine.restore; moved here from rules/engine.py)."""
    if now is None or saved_at is None:
        return 0.0
    try:
        saved = number(saved_at)
    except (TypeError, ValueError) as err:
        log.warning("rules snapshot: saved_at %r (%s): restored times taken as they are", saved_at, err)
        return 0.0
    t = now()
    if t >= saved:
        return 0.0
    log.warning(
        "rules snapshot saved at %.0f, the clock reads %.0f: restored times moved by %+.0f s "
        "(the wall clock is not set yet; its step will move them back)",
        saved,
        t,
        t - saved,
    )
    return t - saved
