"""Small pieces of the local actions (gateway/rules/actions.py): a held write, the rate limit's wait,
the snapshot's entries and how a read-back is matched to the written value."""

from __future__ import annotations

import logging
from collections import deque
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from citynerve.gateway.api import Event, EventState, Value
from citynerve.gateway.rules.config import ActionConfig

log = logging.getLogger("citynerve.gateway.rules.actions")


@dataclass
class Due:
    """A held write: the action that asked last, the triggers standing behind it (each asks for its
    value; oldest first, one per rule and device) and an interlock. The rate limit's held writes (by
    point) keep the interlock that held them before (""); an interlock's (by device and action), the
    interlock that holds them."""

    action: ActionConfig
    triggers: list[Event]
    held_by: str

    def stands(self, state: EventState) -> Event | None:
        """The latest trigger of this state behind the write."""
        return next((t for t in reversed(self.triggers) if t.state is state), None)

    def add(self, event: Event) -> None:
        """`event` stands behind the write too, in place of an older trigger of its rule and device."""
        source = (event.rule, event.device_id)
        self.triggers = [t for t in self.triggers if (t.rule, t.device_id) != source] + [event]

    def undo(self, source: tuple[str, str], state: EventState) -> bool:
        """Rule and device `source` went to `state`: its trigger asking for another state no longer
        stands (the leak that was to close the valve dried). Returns whether one was dropped."""
        stand = [t for t in self.triggers if (t.rule, t.device_id) != source or t.state is state]
        undone = len(stand) != len(self.triggers)
        self.triggers = stand
        return undone


def trigger_entry(t: Event) -> list[Any]:
    """A held action's trigger in the snapshot (restored by `ActionRunner.restore`)."""
    return [t.device_id, t.kind, t.state.value, int(t.severity), t.ts, t.rule, t.value, t.id]


def wait_s(a: ActionConfig, hist: deque[float], ts: float) -> float:
    """Seconds from `ts` until the rate limit lets `a` write again (<= 0: now), given the times of
    its counted writes `hist` (those a day old are dropped)."""
    while hist and ts - hist[0] >= 86400:
        hist.popleft()
    wait = hist[-1] + a.min_interval_s - ts if hist else 0.0
    if len(hist) >= a.max_per_day:
        wait = max(wait, hist[0] + 86400 - ts)
    return wait


def entries(data: Mapping[str, Any], key: str) -> list[Any]:
    """A snapshot's list under `key` (missing or not a list: empty)."""
    got = data.get(key)
    if isinstance(got, list):
        return got
    if got is not None:
        log.warning("rules snapshot: actions.%s is %s, not a list: not restored", key, type(got))
    return []


_STATE_OF = {"close": "closed", "shut": "closed", "opened": "open"}
"""A command word and the state a device reports after it (CJ/T 188 valves: "close" -> "closed")."""


def matches(read: Value, want: Value) -> bool:
    """Whether a read-back shows the written state: numbers (and bools) within a relative 1e-6,
    text without regard to case, a command word as the state it leads to."""
    if isinstance(read, str) or isinstance(want, str):
        a, b = (str(v).strip().casefold() for v in (read, want))
        return _STATE_OF.get(a, a) == _STATE_OF.get(b, b)
    if read is None or want is None:
        return read is want
    return abs(float(read) - float(want)) <= 1e-6 * max(1.0, abs(float(want)))
