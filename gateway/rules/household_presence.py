"""The third signal of a household (issue 18): the flat's door contact and a PIR motion sensor tell
a resident who is out, or moving about, from one who lies still (gateway/rules/household.py).

`Presence` keeps what the two nodes said; the household condition asks it whether the resident is
out and when someone last moved. Out: the door was opened and closed, and since then nothing showed
anyone at home - no motion (after the PIR's own clear time, `GRACE_S`: the leaving resident passed
it), no water drawn, nobody getting into bed - for `motion_quiet_s`. A node silent for
`node_stale_s` is unknown (the household judges without its signal, as before) and raises a
maintenance event of its own (`NodeSilentCondition`), never the "check on this person" alarm.
"""

from __future__ import annotations

from typing import Any

from citynerve.gateway.api import Value
from citynerve.gateway.rules.conditions import Condition, as_bool
from citynerve.gateway.rules.snapdata import NEVER, latest, number

GRACE_S = 120.0
"""After the door closed, motion this soon is the leaving resident still in the PIR's view (battery
PIR nodes clear 30-60 s after the last movement), not someone at home."""

CLEAR_S = 60.0
"""A PIR's "clear" comes this long after the last movement it saw (the usual clear time of battery
PIR nodes): a clear after a detection dates movement until then."""

NODE_EVENT_KIND = "household_node_silent"


class Presence:
    """Door and motion state of one flat (constant memory)."""

    __slots__ = (
        "door_closed",
        "door_moved",
        "door_open",
        "door_seen",
        "entered",
        "last_motion",
        "motion_on",
        "motion_seen",
        "quiet_s",
        "stale_s",
    )

    def __init__(self, motion_quiet_s: float, node_stale_s: float) -> None:
        self.quiet_s = motion_quiet_s
        self.stale_s = node_stale_s
        self.door_seen = NEVER  # last door reading
        self.motion_seen = NEVER
        self.door_open: bool | None = None
        self.door_closed = NEVER  # when the door last closed (NEVER: not since the first reading)
        self.door_moved = NEVER  # when the door last opened or closed: someone was at it
        self.entered = False  # the door last opened on an empty flat: someone came in
        self.last_motion = NEVER  # last movement the PIR showed
        self.motion_on = False

    def on_door(self, value: Value, ts: float, home_since: float) -> bool:
        """A door reading; False if it carries no state. Opening the door of a flat judged empty is
        someone coming in: at home until the door next closes behind someone."""
        b = as_bool(value)
        if b is None:
            return False
        if b and not self.door_open:
            self.entered = self.out(ts, home_since)
        if self.door_open and not b:
            self.door_closed = ts
        if self.door_open is not None and b != self.door_open:
            self.door_moved = ts
        self.door_open = b
        self.door_seen = latest(self.door_seen, ts)
        return True

    def on_motion(self, value: Value, ts: float) -> bool:
        """A PIR reading (a detection, a clear, or the heartbeat's state); False if no state."""
        b = as_bool(value)
        if b is None:
            return False
        if b:
            self.last_motion = latest(self.last_motion, ts)
        elif self.motion_on:  # the clear after a detection: movement until CLEAR_S before it
            self.last_motion = latest(self.last_motion, ts - CLEAR_S)
        self.motion_on = b
        self.motion_seen = latest(self.motion_seen, ts)
        return True

    def last_sign(self, now: float) -> float:
        """The last movement the nodes saw: a motion reading, the door opened or closed (someone
        was at it), with each node counted only while it is fresh; NEVER if none."""
        t = self.last_motion if self.motion_fresh(now) else NEVER
        return latest(t, self.door_moved) if self.door_fresh(now) else t

    def door_fresh(self, now: float) -> bool:
        return self.door_seen != NEVER and now - self.door_seen <= self.stale_s

    def motion_fresh(self, now: float) -> bool:
        return self.motion_seen != NEVER and now - self.motion_seen <= self.stale_s

    def out(self, now: float, home_since: float) -> bool:
        """The resident went out: both nodes fresh, the door closed at least `motion_quiet_s` ago,
        and no motion since (after GRACE_S) nor any other sign of someone at home after
        `home_since` (water drawn, getting into bed: the caller's latest such time, NEVER if none)."""
        if not (self.door_fresh(now) and self.motion_fresh(now)) or self.door_open is not False:
            return False
        if self.entered:
            return False
        t = self.door_closed
        if t == NEVER or now - t < self.quiet_s:
            return False
        return (self.last_motion == NEVER or self.last_motion <= t + GRACE_S) and (
            home_since == NEVER or home_since <= t
        )

    def snapshot(self) -> list[Any]:
        return [
            self.door_seen,
            self.motion_seen,
            self.door_open,
            self.door_closed,
            self.last_motion,
            self.door_moved,
            self.entered,
            self.motion_on,
        ]

    def restore(self, data: list[Any]) -> None:
        self.door_seen, self.motion_seen = number(data[0]), number(data[1])
        self.door_open = None if data[2] is None else bool(data[2])
        self.door_closed, self.last_motion = number(data[3]), number(data[4])
        self.door_moved, self.entered, self.motion_on = number(data[5]), bool(data[6]), bool(data[7])

    def shift(self, delta: float) -> None:
        for name in _TIMES:
            t = getattr(self, name)
            if t != NEVER:
                setattr(self, name, t + delta)

    def latest_time(self) -> float:
        """The latest of the stored times (NEVER if none): checked at a restore."""
        return latest(*(getattr(self, name) for name in _TIMES))


_TIMES = ("door_seen", "motion_seen", "door_closed", "last_motion", "door_moved")


class NodeSilentCondition(Condition):
    """A household's door or PIR node sent nothing for `stale_s` (counted from the first tick when it
    never reported): a maintenance event; the household judges without that signal meanwhile."""

    __slots__ = ("heard", "last", "stale_s")
    time_driven = True

    def __init__(self, stale_s: float) -> None:
        super().__init__()
        self.stale_s = stale_s
        self.last = NEVER
        self.heard = False  # a reading came since the start

    def on_reading(self, value: Value, ts: float) -> bool | None:
        self.last = latest(self.last, ts)
        self.heard = True
        return self._judge(ts)

    def on_tick(self, now: float) -> bool | None:
        if self.last == NEVER:
            self.last = now
        silent = self._judge(now)
        return silent if silent or self.heard else None  # the grace period after the start: unknown

    def _judge(self, now: float) -> bool:
        silent = now - self.last
        self.value = round(silent) if silent >= self.stale_s else None
        return silent >= self.stale_s

    def carry(self, running: Condition) -> None:
        if isinstance(running, NodeSilentCondition):  # a reload is no start: no new grace period
            self.last, self.heard, self.value = running.last, running.heard, running.value

    def snapshot(self) -> list[Any]:
        return [self.last]  # not restored: the gateway's start is a grace period, as for `missing`

    def shift(self, delta: float) -> None:
        if self.last != NEVER:
            self.last += delta
