"""The `coincidence` composite mode: an alarm confirmed by a second device of the same area (issue 18).

Smoke detectors alarm on burnt toast, steam and insects as well as on fires; a fire's smoke spreads
and sets off a second detector of the same flat, a puff of cooking smoke seldom does. A rule

    kind = "composite"
    mode = "coincidence"
    of = ["smoke", "smoke_register"]   # the per-device alarms that count
    group = "zone"                      # devices sharing a `zone:<id>` tag form an area
    count = 2                           # devices in alarm ...
    within_s = 1800                     # ... within 30 min of each other
    alone_s = 1800                      # or one device in alarm on its own for 30 min

raises on a device while its own child alarm is active and either `count` devices of its area
(itself included) are in alarm or raised one within the last `within_s`, or its own alarm has lasted
`alone_s` (a device alone in its area, or a fire only one detector sees). `confirmed_by` names the
rules whose alarms on the area's other devices confirm (default: `of`): a fire panel's `fire` (of)
is confirmed by a `smoke_confirmed` of a detector in its building (group `building`), not by the
detector alarm it merely relays. `solo_s` replaces `alone_s` for a device with nothing in its area
that could confirm it (a panel without gateway detectors keeps its own verification time).
`alone_unless` names rules of the device itself that take the `alone_s` path away while active (a
detector under unwanted-alarm management, unwanted.py); `relays` names the rules of the area's other
devices a device relays (a panel: its building's detectors): while its alarm follows one of them, its
lasting is the operator's reset time, not the fire's, and only `confirmed_by` confirms it.

This is the coincidence (dependency on more than one alarm signal) of EN 54-2 clause 7.12 and BS
5839-1's two-detector coincidence, and the "AND of two independent alarm devices" GB 50116-2013
4.1.6 asks for before a fire alarm system drives its linked equipment. The condition keeps no state
of its own: it is read off its children's alarms (kept in the rules snapshot), on their changes and
on every tick.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

from citynerve.gateway.rules.conditions import Condition
from citynerve.gateway.rules.config import CompositeRule

if TYPE_CHECKING:
    from citynerve.gateway.rules.instance import RuleInstance


def in_alarm_since(inst: RuleInstance, since: float) -> bool:
    """The instance's alarm is active, or was raised at or after `since` (a wall time)."""
    return inst.alarm.active or bool(inst.raised_at and inst.raised_at >= since)


class CoincidenceCondition(Condition):
    """True while the device's own child alarm is active and confirmed by its area or by lasting."""

    __slots__ = ("alone_s", "blockers", "children", "count", "own", "relayed", "within_s")
    time_driven = True  # `alone_s` runs out without a reading

    def __init__(
        self,
        rule: CompositeRule,
        own: list[RuleInstance],
        others: list[RuleInstance],
        *,
        blockers: Sequence[RuleInstance] = (),
        relayed: Sequence[RuleInstance] = (),
    ) -> None:
        super().__init__()
        self.blockers, self.relayed = tuple(blockers), tuple(relayed)
        self.count, self.within_s = rule.count, rule.within_s
        # Alone in its area (nothing there could confirm it): `solo_s`, if the rule sets one.
        self.alone_s = rule.solo_s if not others and rule.solo_s is not None else rule.alone_s
        self.own = own
        self.children = [*own, *others]  # every child instance in the area: their changes re-evaluate

    def at(self, now: float) -> bool:
        own = [c for c in self.own if c.alarm.active]
        if not own:
            self.value = 0
            return False
        recent = now - self.within_s
        devices = {c.device_id for c in self.children if in_alarm_since(c, recent)}
        self.value = len(devices)
        if len(devices) >= self.count:
            return True
        alone = self.alone_s
        if alone is None or any(b.alarm.active for b in self.blockers):
            return False
        since = min(c.raised_at for c in own) - self.within_s
        if any(in_alarm_since(r, since) for r in self.relayed):
            return False  # relaying another device's alarm: that device's confirmation decides
        return any(now - c.raised_at >= alone for c in own)

    def on_tick(self, now: float) -> bool | None:
        return self.at(now)
