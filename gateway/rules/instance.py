"""A rule instance (one rule on one device), the conditions built for it, and what its events carry."""

from __future__ import annotations

import itertools
from collections.abc import Collection, Container, Iterable
from dataclasses import dataclass
from typing import Any

from citynerve.gateway.api import DeviceConfig, Event, EventState, Severity, Value
from citynerve.gateway.rules.alarm import Alarm, AlarmPhase
from citynerve.gateway.rules.conditions import (
    AnomalyCondition,
    BooleanCondition,
    Condition,
    MissingCondition,
    OfflineCondition,
    RateCondition,
    ThresholdCondition,
)
from citynerve.gateway.rules.config import (
    SEVERITY,
    AnomalyRule,
    BooleanRule,
    CompositeRule,
    ConsumptionRule,
    MissingRule,
    OfflineRule,
    RateRule,
    RoutineRule,
    RuleConfig,
    ThresholdRule,
)
from citynerve.gateway.rules.consumption import DayUse, SlidingUse, SlotUse
from citynerve.gateway.rules.flapping import FlapDamper
from citynerve.gateway.rules.household import HouseholdRule
from citynerve.gateway.rules.routine import RoutineCondition
from citynerve.gateway.rules.suppression import QuietHours


@dataclass(frozen=True, slots=True)
class ActiveAlarm:
    """A raised alarm, for status pages and `citynerve status`."""

    rule: str
    device_id: str
    kind: str
    severity: Severity
    raised_at: float
    value: Value


class CompositeCondition(Condition):
    """All / any of other rules' alarms on the device active, or raised in order within a time."""

    __slots__ = ("children", "mode", "within_s")

    def __init__(self, rule: CompositeRule, children: list[RuleInstance]) -> None:
        super().__init__()
        self.mode, self.within_s, self.children = rule.mode, rule.within_s, children

    def evaluate(self) -> bool:
        active = [c.alarm.active for c in self.children]
        self.value = sum(active)
        if self.mode == "any":
            return any(active)
        if not all(active):
            return False
        if self.mode == "all":
            return True
        times = [c.raised_at for c in self.children]
        in_order = all(a <= b for a, b in itertools.pairwise(times))
        return in_order and times[-1] - times[0] <= self.within_s


class RuleInstance:
    """One rule on one device: its condition, its alarm and what its events carry."""

    __slots__ = (
        "alarm",
        "attrs",
        "away_ids",
        "cond",
        "device_id",
        "flap",
        "key",
        "kind",
        "parents",
        "quiet",
        "raised_at",
        "rule",
        "severity",
        "suppress_away",
    )

    def __init__(
        self, rule: RuleConfig | HouseholdRule, device_id: str, cond: Condition, attrs: dict[str, Any]
    ) -> None:
        self.rule = rule
        self.device_id = device_id
        self.key = f"{rule.id}|{device_id}"
        self.cond = cond
        self.alarm = Alarm(rule.hold_s, rule.clear_hold_s)
        self.flap = FlapDamper(rule.flap_limit, rule.flap_window_s, rule.flap_settle_s)
        self.kind = rule.event_kind
        self.severity = SEVERITY[rule.severity]
        self.attrs = attrs
        self.quiet: list[QuietHours] = []
        self.suppress_away = rule.suppress_when_away
        self.away_ids: tuple[str, ...] = (device_id,)  # marked away: the device, or its household
        self.parents: list[RuleInstance] = []
        self.raised_at = 0.0

    def shift(self, delta: float) -> None:
        """Move the stored times by `delta` s (a step of the wall clock, or a restore on a clock
        behind the snapshot's)."""
        if self.alarm.phase is not AlarmPhase.IDLE:
            self.alarm.since += delta
        if self.raised_at:
            self.raised_at += delta
        self.cond.shift(delta)
        self.flap.shift(delta)

    def event(self, raised: bool, ts: float) -> Event:
        """The event of a raise or clear of this instance's alarm."""
        rule = self.rule
        value = self.alarm.raised_value if raised else self.alarm.value
        if type(value) is float:
            value = round(value, 6)  # meter sums carry float noise (0.009000000001)
        state = EventState.RAISED if raised else EventState.CLEARED
        text = rule.message.replace("{value}", str(value)).replace("{device}", self.device_id)
        message = f"{text or rule.id} ({state.value}, value {value!r})"
        # A copy per event: whoever handles the event (uplink, outbox) may add to its attrs.
        attrs = dict(self.attrs)
        return Event(self.device_id, self.kind, state, self.severity, ts, rule.id, value, message, attrs)


def make_condition(rule: RuleConfig) -> Condition:
    if isinstance(rule, ThresholdRule):
        return ThresholdCondition(rule)
    if isinstance(rule, BooleanRule):
        return BooleanCondition(rule)
    if isinstance(rule, RateRule):
        return RateCondition(rule)
    if isinstance(rule, MissingRule):
        return MissingCondition(rule)
    if isinstance(rule, OfflineRule):
        return OfflineCondition()
    if isinstance(rule, ConsumptionRule):
        if rule.window == "sliding":
            return SlidingUse(rule)
        return DayUse(rule) if rule.window == "day" else SlotUse(rule)
    if isinstance(rule, AnomalyRule):
        return AnomalyCondition(rule)
    if isinstance(rule, RoutineRule):
        return RoutineCondition(rule)
    raise TypeError(f"no condition for rule kind {rule.kind}")  # composites are built by the engine


def device_attrs(device: DeviceConfig) -> dict[str, Any]:
    """What every event of a device carries: where it is and which city component it is."""
    attrs: dict[str, Any] = {
        "location": device.location.model_dump(exclude_defaults=True),
        "profile": device.profile,
    }
    if device.component_code:
        attrs["component_code"] = device.component_code
    if device.name:
        attrs["device_name"] = device.name
    return attrs


def still_raised(
    instances: Iterable[RuleInstance], held: Container[RuleInstance], rules: Collection[str], but: str
) -> str | None:
    """An alarm of `rules` raised on a device other than `but` (held raised by a flap damper
    counts: the platform sees it raised), as "<rule> on <device>"; None when there is none."""
    for i in instances:
        if i.rule.id in rules and i.device_id != but and (i.alarm.active or i in held):
            return f"{i.rule.id} on {i.device_id}"
    return None
