"""What a restore takes from a rules snapshot: times no later than the save, and no more than the
config can produce (RuleEngine.restore, RuleStateKeeper.restore).

Every time the engine stores is its own time when it stored it, so none is later than the
snapshot's `saved_at`. One that is (a flipped bit on the SD card: 1796695682 read as 9796695682)
is damage, not a time: a pending hold counted from it never runs out, so the alarm stayed pending
for good while its condition held, and every later snapshot saved the damage again. The instance
starts fresh instead, with a warning naming the rule and the device (`RestoredTimeError`).

A snapshot is only as big as the configured rules, devices and actions make it; a bigger one (a
damaged card, a file written by something else: 3 million `away` ids, 138 MB) is not parsed, and
away flags of devices or households no longer configured are dropped.
"""

from __future__ import annotations

import logging
from collections.abc import Collection, Iterable
from typing import TYPE_CHECKING, Any

from citynerve.gateway.rules.snapdata import NEVER, number

if TYPE_CHECKING:
    from citynerve.gateway.rules.engine import RuleEngine
    from citynerve.gateway.rules.instance import RuleInstance

log = logging.getLogger("citynerve.gateway.rules")

LATE_TOLERANCE_S = 60.0
"""A restored time up to this much after `saved_at` is taken as it is (float rounding, a time
stamped in the same second as the save); later is damage."""
BASE_BYTES = 1024 * 1024
"""Every snapshot may be this big, whatever the config (room for interlock entries, overrides)."""
PER_ENTRY_BYTES = 32 * 1024
"""Room per rule instance and per device and action (rate-limit history) beyond what a fresh
engine's snapshot of the same config holds: lists that grow (flap times, unwanted alarms)."""
FRESH_FACTOR = 8
"""A fresh engine's numbers are "0.0"; learned ones take up to 24 characters."""
MAX_SHOWN_CHARS = 200
"""Longest error text a restore logs: a damaged value is shown cut, never whole."""


class RestoredTimeError(ValueError):
    """A restored time of a rule instance later than the snapshot's `saved_at`: damage."""

    def __init__(self, rule: str, device_id: str, what: str, value: float, saved_at: float) -> None:
        self.rule, self.device_id, self.what = rule, device_id, what
        self.value, self.saved_at = value, saved_at
        super().__init__(
            f"rule {rule} on {device_id}: restored {what} {value:.0f} is {value - saved_at:.0f} s after "
            f"the snapshot was saved ({saved_at:.0f}): damaged"
        )


def saved_time(saved_at: object) -> float | None:
    """The snapshot's `saved_at` as a number, None without a usable one (clock_behind logs that)."""
    try:
        return None if saved_at is None else number(saved_at)
    except ValueError:
        return None


def late(t: float, saved_at: float | None) -> bool:
    """Whether a restored time `t` (NEVER: unset) lies after the save by more than the tolerance."""
    return saved_at is not None and t != NEVER and t > saved_at + LATE_TOLERANCE_S


def restore_instance(inst: RuleInstance, entry: Any, saved_at: float | None) -> None:
    """Restore a snapshot's entry of one instance, [alarm, condition, raised_at]. Raises on damage:
    a malformed entry (ValueError, TypeError...) or a time later than `saved_at` (check_times)."""
    alarm, cond, raised_at = entry
    inst.alarm.restore(alarm)
    inst.cond.restore(cond)
    inst.raised_at = number(raised_at)
    check_times(inst, saved_at)


def check_times(inst: RuleInstance, saved_at: float | None) -> None:
    """Raise RestoredTimeError if a restored time of `inst` (its alarm's hold, its raise, its
    condition's) is later than `saved_at` (None: an older snapshot without one, nothing checked)."""
    times = (
        ("alarm since", inst.alarm.latest_time()),
        ("raised_at", inst.raised_at or NEVER),
        ("condition time", inst.cond.latest_time()),
    )
    for what, t in times:
        if late(t, saved_at):
            raise RestoredTimeError(inst.rule.id, inst.device_id, what, t, saved_at or 0.0)


def shown(err: BaseException) -> str:
    """An error as a log line shows it, cut to MAX_SHOWN_CHARS."""
    text = f"{type(err).__name__}: {err}"
    return text if len(text) <= MAX_SHOWN_CHARS else text[:MAX_SHOWN_CHARS] + "..."


def max_snapshot_chars(engine: RuleEngine, fresh: int) -> int:
    """The largest snapshot the engine's config can produce, generously: the size of a fresh
    engine's snapshot (`fresh`, characters) times FRESH_FACTOR, PER_ENTRY_BYTES per instance and per
    device and action, BASE_BYTES."""
    entries = len(engine.instances) + len(engine.devices) * len(engine.config.actions)
    return BASE_BYTES + FRESH_FACTOR * fresh + PER_ENTRY_BYTES * entries


def known_away(away: Iterable[object], known: Collection[str]) -> set[str]:
    """The restored away ids the config knows (devices, households); the others dropped, logged once."""
    kept: set[str] = set()
    dropped = 0
    for a in away:
        if isinstance(a, str) and a in known:
            kept.add(a)
        else:
            dropped += 1
    if dropped:
        log.warning("rules snapshot: %d away flags name no configured device or household: dropped", dropped)
    return kept
