"""The `unwanted` composite mode: a detector whose alarms no second detector confirms (issue 18).

A smoke detector with a dusty chamber, or one placed where cooking smoke reaches it, alarms again
and again with nothing behind it. Fire alarm practice asks for such a detector to be investigated
rather than believed each time: BS 5839-1 (section 3, limitation of false alarms) asks for the
cause of every false alarm to be recorded and for an investigation when a single detector is the
source of repeated false alarms (three or more); NFPA 72 14.4.4.3 asks for detectors to be kept
within their listed sensitivity range (cleaned or replaced when they drift). A rule

    kind = "composite"
    mode = "unwanted"
    of = ["smoke", "smoke_register"]   # the device's alarms
    group = "zone"                      # the area whose other devices could confirm them
    within_s = 1800                     # confirmed: another device of the area in alarm within 30 min
    count = 3                           # unwanted alarms ...
    quiet_s = 2419200                   # ... each within four weeks of the last

raises on the device (a maintenance event) once `count` of its alarms ended without another device
of its area (`confirmed_by`, default `of`) in alarm or raising one within `within_s` of its own, each
within `quiet_s` of the previous; it clears after `quiet_s` without one. A coincidence rule naming it
in `alone_unless` stops confirming that device on its own while it is active; the device's immediate
alarm and its confirmation by a second device are untouched. A device with no other device in its
area (no `group` tag, or alone under it) gets no such rule: lasting alone is then its only way to be
confirmed, and a fire in a flat with one detector must still be confirmed. Ending a maintenance
window on the detector by hand (`citynerve operator maintenance DEVICE --end`, or the platform's
`end_maintenance`) says it was serviced: the count is forgotten and the rule clears
(RuleEngine.serviced).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from citynerve.gateway.rules.coincidence import in_alarm_since
from citynerve.gateway.rules.conditions import Condition
from citynerve.gateway.rules.config import CompositeRule
from citynerve.gateway.rules.snapdata import NEVER, latest, number, opt_number

if TYPE_CHECKING:
    from citynerve.gateway.rules.instance import RuleInstance


class UnwantedCondition(Condition):
    """True while the device has had `count` unconfirmed alarms, each within `quiet_s` of the last."""

    __slots__ = ("children", "confirmed", "count", "opened", "others", "own", "quiet_s", "times", "within_s")
    time_driven = True  # `quiet_s` runs out without a reading

    def __init__(
        self, rule: CompositeRule, own: Sequence[RuleInstance], others: Sequence[RuleInstance]
    ) -> None:
        super().__init__()
        assert rule.quiet_s is not None  # the model requires it for this mode
        self.count, self.within_s, self.quiet_s = rule.count, rule.within_s, rule.quiet_s
        self.own, self.others = tuple(own), tuple(others)
        self.children = [*own, *others]  # their changes re-evaluate
        self.opened: float | None = None  # when the device's current alarm was raised
        self.confirmed = False  # another device of the area joined it
        self.times: list[float] = []  # when the last run of unwanted alarms ended (at most `count`)

    def at(self, now: float) -> bool:
        active = [c for c in self.own if c.alarm.active]
        if active and self.opened is None:
            self.opened, self.confirmed = min(c.raised_at for c in active), False
        if self.opened is not None:
            since = self.opened - self.within_s
            self.confirmed = self.confirmed or any(in_alarm_since(o, since) for o in self.others)
            if not active:  # the alarm ended: unwanted unless the area confirmed it
                if not self.confirmed:
                    if self.times and now - self.times[-1] > self.quiet_s:
                        self.times.clear()
                    self.times = [*self.times, now][-self.count :]
                self.opened = None
        if self.times and now - self.times[-1] > self.quiet_s:
            self.times.clear()  # a quiet period: the detector is believed again
        self.value = len(self.times)
        return len(self.times) >= self.count

    def on_tick(self, now: float) -> bool | None:
        if self.opened is None and not self.times and not self.value:
            return None  # nothing to age (the usual case): the children's changes call `at`
        return self.at(now)

    def serviced(self) -> None:
        """The detector was serviced (cleaned, moved, replaced): its unwanted alarms are forgotten,
        and the next tick clears the rule (`value` still holds the old count until then)."""
        self.opened, self.confirmed, self.times = None, False, []

    def snapshot(self) -> list[Any]:
        return [self.opened, self.confirmed, list(self.times)]

    def restore(self, data: list[Any]) -> None:
        self.opened, self.confirmed = opt_number(data[0]), bool(data[1])
        self.times = [number(t) for t in data[2]][-self.count :]

    def shift(self, delta: float) -> None:
        if self.opened is not None:
            self.opened += delta
        self.times = [t + delta for t in self.times]

    def latest_time(self) -> float:
        return latest(NEVER if self.opened is None else self.opened, *self.times)
