"""Binding the configured rules to the devices: one `RuleInstance` per rule and device it applies
to, composites wired to their children (on the device, its household or its area), and the tables
the engine routes readings, device events and ticks by. Moved from rules/engine.py; the engine
builds one `RuleBinding` at start and at every reload that changes the devices.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from citynerve.gateway.api import DeviceConfig, Value
from citynerve.gateway.pipeline.derived import point_names
from citynerve.gateway.rules.coincidence import CoincidenceCondition
from citynerve.gateway.rules.conditions import AnomalyCondition, OfflineCondition
from citynerve.gateway.rules.config import AnomalyRule, CompositeRule, RuleConfig, RulesConfig, rule_points
from citynerve.gateway.rules.household import HouseholdCondition, HouseholdRule
from citynerve.gateway.rules.household_config import HouseholdConfig
from citynerve.gateway.rules.instance import CompositeCondition, RuleInstance, make_condition
from citynerve.gateway.rules.nesting import build_order
from citynerve.gateway.rules.peers import PeerSlots
from citynerve.gateway.rules.suppression import QuietHours
from citynerve.gateway.rules.unwanted import UnwantedCondition

__all__ = ["Feed", "RuleBinding"]

log = logging.getLogger("citynerve.gateway.rules")

Feed = Callable[[Value, float], bool | None]
"""A household condition's input for one (device, point): takes a value and its time."""


class RuleBinding:
    """The rules of `config` bound to `devices` (enabled ones, by id); `attrs`: each device's event
    attributes (instance.device_attrs).

    `instances` by key (`<rule>|<device>`); the routing tables: `by_dev` (device -> point ->
    instances that read it), `any_point` (instances of rules without a point), `offline` (offline
    rules by device), `ticked` (time-driven instances), `feeds` (household inputs by device and
    point) and `peers` (anomaly peer groups by rule and group tag).
    """

    def __init__(
        self,
        config: RulesConfig,
        devices: Mapping[str, DeviceConfig],
        attrs: Mapping[str, dict[str, Any]],
    ) -> None:
        self.devices = devices
        self.attrs = attrs
        self.instances: dict[str, RuleInstance] = {}
        self.by_dev: dict[str, dict[str, list[RuleInstance]]] = {}
        self.any_point: dict[str, list[RuleInstance]] = {}
        self.offline: dict[str, list[RuleInstance]] = {}
        self.ticked: list[RuleInstance] = []
        self.peers: dict[str, PeerSlots] = {}  # anomaly rules with `peers`: one per rule and group
        # Household alarms: (device, point) -> the instances and their condition's feed for it.
        self.feeds: dict[str, dict[str, list[tuple[RuleInstance, Feed]]]] = {}
        self.unbound: list[str] = []  # enabled rules with no instance on any device
        self._tagged: dict[str, list[DeviceConfig]] | None = None  # devices by tag, on first use
        self._position: dict[str, int] = {}  # config order of the devices, with `_tagged`
        quiet = {s.id: QuietHours(s) for s in config.schedules}
        contacts = {c.id: c.model_dump(exclude_defaults=True) for c in config.contacts}
        # Each rule after the rules it names (nesting.py): a composite listed before its children
        # was bound to none of them and silently never raised.
        for rule in build_order(config.all_rules()):
            if not rule.enabled:
                continue
            bound = len(self.instances)
            point = rule_points(rule)  # once per rule (a composite's missing `point` is slow to ask)
            for dev in self.devices.values():
                inst = self.instance(rule, dev, point)
                if inst is None:
                    continue
                inst.quiet = [quiet[s] for s in rule.suppress_during]
                if rule.escalate:
                    inst.attrs = {**inst.attrs, "escalation": [contacts[c] for c in rule.escalate]}
                self.instances[inst.key] = inst
                if isinstance(inst.cond, OfflineCondition):
                    self.offline.setdefault(dev.id, []).append(inst)
                elif isinstance(inst.cond, CompositeCondition | CoincidenceCondition | UnwantedCondition):
                    for child in inst.cond.children:
                        child.parents.append(inst)
                elif point:
                    self.by_dev.setdefault(dev.id, {}).setdefault(point, []).append(inst)
                else:
                    self.any_point.setdefault(dev.id, []).append(inst)
                if inst.cond.time_driven:
                    self.ticked.append(inst)
            if len(self.instances) == bound:
                self.unbound.append(rule.id)
        self._log_unbound(config)
        for hh in config.households:
            if hh.enabled and hh.bed in self.devices:
                self._add_household(hh, contacts)

    def _log_unbound(self, config: RulesConfig) -> None:
        """Once per build: the enabled rules that apply to no device. An inline rule is the site's
        own (a warning: a mistake, or a device not configured yet); a pack's rules cover device
        classes the site may not have (one line, info)."""
        inline = {r.id for r in config.rules}
        for rule_id in self.unbound:
            if rule_id in inline:
                log.warning(
                    "rule %s applies to no device (none selected has its point, or its composite's "
                    "rules on the same device): it raises nothing",
                    rule_id,
                )
        packs = [r for r in self.unbound if r not in inline]
        if packs:
            log.info("rules: %d pack rules apply to no device: %s", len(packs), ", ".join(packs))

    def _add_household(self, hh: HouseholdConfig, contacts: Mapping[str, dict[str, Any]]) -> None:
        """One "check on this person" alarm, raised on the bed sensor, fed by the bed and the meter."""
        cond = HouseholdCondition(hh)
        rule = HouseholdRule.of(hh)
        attrs = {**self.attrs[hh.bed], "household": hh.id}
        if hh.water:
            attrs["water_meter"] = hh.water
        if hh.escalate:
            attrs["escalation"] = [contacts[c] for c in hh.escalate]
        inst = RuleInstance(rule, hh.bed, cond, attrs)
        inst.away_ids = tuple(d for d in (hh.id, hh.bed, hh.water) if d)
        self.instances[inst.key] = inst
        self.ticked.append(inst)
        self.feeds.setdefault(hh.bed, {}).setdefault(hh.bed_point, []).append((inst, cond.on_bed))
        if hh.water in self.devices:
            self.feeds.setdefault(hh.water, {}).setdefault(hh.water_point, []).append((inst, cond.on_water))
        # The third signal: the door contact and the PIR feed the alarm; a silent one is maintenance.
        node_rule = HouseholdRule.node(hh)
        for dev_id, point, feed in (
            (hh.door, hh.door_point, cond.on_door),
            (hh.motion, hh.motion_point, cond.on_motion),
        ):
            if dev_id not in self.devices:
                continue
            node = RuleInstance(
                node_rule, dev_id, node_rule.condition(), {**self.attrs[dev_id], "household": hh.id}
            )
            self.instances[node.key] = node
            self.ticked.append(node)
            self.feeds.setdefault(dev_id, {}).setdefault(point, []).extend(
                [(inst, feed), (node, node.cond.on_reading)]
            )

    def instance(
        self, rule: RuleConfig | HouseholdRule, dev: DeviceConfig, point: str | None = None
    ) -> RuleInstance | None:
        """A fresh instance of `rule` on `dev` (its children those bound so far), or None if the rule
        does not apply to the device; `point`: the rule's (rule_points), if known."""
        if isinstance(rule, HouseholdRule):
            return RuleInstance(rule, dev.id, rule.condition(), self.attrs[dev.id])
        if not rule.select.matches(dev):
            return None
        if point is None:
            point = rule_points(rule)
        if point and dev.points and point not in dev.points and point not in point_names(dev):
            return None  # selected by profile or tag, but this device has no such point
        attrs = self.attrs[dev.id]
        if isinstance(rule, CompositeRule) and rule.mode in ("coincidence", "unwanted"):
            return self._coincidence(rule, dev, attrs)
        if isinstance(rule, CompositeRule):
            homes = [d.id for d in self._household(dev)] if rule.household else [dev.id]
            children = [
                next((i for h in homes if (i := self.instances.get(f"{c}|{h}")) is not None), None)
                for c in rule.of
            ]
            if any(c is None for c in children):
                return None
            return RuleInstance(rule, dev.id, CompositeCondition(rule, [c for c in children if c]), attrs)
        cond = make_condition(rule)
        if isinstance(rule, AnomalyRule) and isinstance(cond, AnomalyCondition) and rule.peers:
            group = next((t for t in sorted(dev.tags) if t.startswith(rule.peers + ":")), "")
            if group:  # without the tag: scored on its own use
                key = f"{rule.id}|{group}"
                slots = self.peers.setdefault(key, PeerSlots(rule.peers_quantile, rule.slot_s))
                cond.join(slots, dev.id)
        return RuleInstance(rule, dev.id, cond, attrs)

    def _coincidence(
        self, rule: CompositeRule, dev: DeviceConfig, attrs: dict[str, Any]
    ) -> RuleInstance | None:
        """A coincidence (coincidence.py) or unwanted (unwanted.py) composite on a device with one of
        its children."""
        instances = self.instances

        def found(rules: Sequence[str], devs: Sequence[DeviceConfig]) -> list[RuleInstance]:
            return [i for m in devs for c in rules if (i := instances.get(f"{c}|{m.id}")) is not None]

        own = found(rule.of, [dev])
        if not own:
            return None  # the device has none of the alarms that count: its area is not looked up
        others_in_area = self._sharing(dev, rule.group)
        others = found(rule.confirmed_by or rule.of, others_in_area)  # what the area's others confirm with
        if rule.mode == "unwanted":
            if not others:  # alone in its area: lasting alone is its only confirmation, never taken away
                return None
            return RuleInstance(rule, dev.id, UnwantedCondition(rule, own, others), attrs)
        blockers, relayed = found(rule.alone_unless, [dev]), found(rule.relays, others_in_area)
        cond = CoincidenceCondition(rule, own, others, blockers=blockers, relayed=relayed)
        return RuleInstance(rule, dev.id, cond, attrs)

    def _household(self, dev: DeviceConfig) -> list[DeviceConfig]:
        """The device, then the other devices sharing one of its `household:` tags."""
        return [dev, *self._sharing(dev, "household")]

    def _sharing(self, dev: DeviceConfig, group: str) -> list[DeviceConfig]:
        """The other devices sharing one of the device's `<group>:<id>` tags, in config order (none
        without such a tag). From the index of devices by tag, built once: scanning every device for
        every device made binding quadratic (4,000 detectors: 15 s, on the event loop)."""
        if self._tagged is None:
            self._tagged, self._position = {}, {}
            for d in self.devices.values():
                self._position[d.id] = len(self._position)
                for t in dict.fromkeys(d.tags):
                    self._tagged.setdefault(t, []).append(d)
        tags = [t for t in dict.fromkeys(dev.tags) if t.startswith(group + ":")]
        if len(tags) <= 1:
            return [d for t in tags for d in self._tagged.get(t, ()) if d.id != dev.id]
        # In several areas of one group: their devices once each, in config order.
        members = {d.id: d for t in tags for d in self._tagged.get(t, ()) if d.id != dev.id}
        return sorted(members.values(), key=lambda d: self._position[d.id])
