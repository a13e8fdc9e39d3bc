"""The raise-once / clear-once state machine every rule instance drives with its condition."""

from __future__ import annotations

import enum
from typing import Any

from citynerve.gateway.api import Value
from citynerve.gateway.rules.snapdata import NEVER, number, value


class AlarmPhase(enum.StrEnum):
    IDLE = "idle"
    PENDING = "pending"  # condition true, waiting for the hold time
    ACTIVE = "active"  # raised
    CLEARING = "clearing"  # raised, condition false, waiting for the clear hold time


class Transition(enum.Enum):
    NONE = 0
    RAISE = 1
    CLEAR = 2


class Alarm:
    """One rule on one device. `update` feeds the condition; `expire` lets hold times run out.

    A condition of None (bad quality, unknown) leaves everything as it is. Holds debounce: a
    condition that flips back before the hold time resets the timer, so a bus driving over a
    manhole cover (tilt spikes < 1 s) never raises a "held 2 s" rule.
    """

    __slots__ = ("clear_hold_s", "hold_s", "phase", "raised_value", "since", "value")

    def __init__(self, hold_s: float, clear_hold_s: float) -> None:
        self.hold_s = hold_s
        self.clear_hold_s = clear_hold_s
        self.phase = AlarmPhase.IDLE
        self.since = 0.0
        self.value: Value = None
        self.raised_value: Value = None

    @property
    def active(self) -> bool:
        return self.phase is AlarmPhase.ACTIVE or self.phase is AlarmPhase.CLEARING

    def update(self, cond: bool | None, ts: float, value: Value, allowed: bool = True) -> Transition:
        """Feed the condition at `ts`. `allowed` False (suppressed) keeps a pending alarm pending."""
        if cond is None:
            return Transition.NONE
        self.value = value
        phase = self.phase
        if cond:
            if phase is AlarmPhase.IDLE:
                self.phase = AlarmPhase.PENDING
                self.since = ts
            elif phase is AlarmPhase.CLEARING:
                self.phase = AlarmPhase.ACTIVE
        elif phase is AlarmPhase.PENDING:
            self.phase = AlarmPhase.IDLE
        elif phase is AlarmPhase.ACTIVE:
            self.phase = AlarmPhase.CLEARING
            self.since = ts
        return self.expire(ts, allowed)

    def expire(self, now: float, allowed: bool = True) -> Transition:
        """Raise or clear if a hold time has run out by `now`."""
        phase = self.phase
        if phase is AlarmPhase.PENDING and allowed and now - self.since >= self.hold_s:
            self.phase = AlarmPhase.ACTIVE
            self.raised_value = self.value
            return Transition.RAISE
        if phase is AlarmPhase.CLEARING and now - self.since >= self.clear_hold_s:
            self.phase = AlarmPhase.IDLE
            return Transition.CLEAR
        return Transition.NONE

    def snapshot(self) -> list[Any]:
        return [self.phase.value, self.since, self.value, self.raised_value]

    def latest_time(self) -> float:
        """The hold's start (NEVER when idle): a restore checks it against the snapshot's saved_at."""
        return NEVER if self.phase is AlarmPhase.IDLE else self.since

    def restore(self, data: list[Any]) -> None:
        self.phase = AlarmPhase(data[0])
        self.since = number(data[1])
        self.value = value(data[2])
        self.raised_value = value(data[3])
