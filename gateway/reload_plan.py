"""What a reload of the config file changes (the runtime's `reload`): the buses to restart, add or
remove, and the sections read only at start, which keep running as they are until a restart."""

from __future__ import annotations

from collections.abc import Collection
from dataclasses import dataclass, replace
from typing import Any

from citynerve.gateway.config import GatewayConfig

__all__ = ["ReloadPlan", "plan_reload"]

_FIELDS = {"upstream": ("upstream", "destinations")}
"""The GatewayConfig fields of a section whose name is not one field."""


@dataclass(frozen=True, slots=True)
class ReloadPlan:
    changed: list[str]  # buses whose settings or devices changed: restarted
    added: list[str]
    removed: list[str]
    restart_needed_for: list[str]  # sections that changed but are read only at start
    config: GatewayConfig  # the new config, with those sections as they run

    def report(self) -> dict[str, Any]:
        return {
            "changed": self.changed,
            "added": self.added,
            "removed": self.removed,
            "restart_needed_for": self.restart_needed_for,
        }


def plan_reload(old: GatewayConfig, new: GatewayConfig, rules_devices: Collection[Any] | None) -> ReloadPlan:
    """Compare the running config `old` with the file's `new`. `rules_devices`: the devices the
    rule engine was bound to at start (None: no engine)."""
    old_buses = {b.id: (b, old.devices_on(b.id)) for b in old.buses if b.enabled}
    new_buses = {b.id: (b, new.devices_on(b.id)) for b in new.buses if b.enabled}
    changed = [b for b in new_buses if b in old_buses and new_buses[b] != old_buses[b]]
    added = [b for b in new_buses if b not in old_buses]
    removed = [b for b in old_buses if b not in new_buses]
    sections = {
        "store": (old.store, new.store),
        # Every [[upstream]] destination, not only the first (`upstream`): a second one removed,
        # renamed or re-pointed needs new uplinks too (`destinations` is empty in a config
        # built in code with `upstream` alone).
        "upstream": ((old.upstream, old.destinations), (new.upstream, new.destinations)),
        "rules": (old.rules, new.rules),
        "web": (old.web, new.web),
        "control": (old.control, new.control),
        "gateway": (old.gateway, new.gateway),
        "clock": (old.clock, new.clock),
        # Read only at start: the log setup, the security switches, the update handler.
        "log": (old.log, new.log),
        "security": (old.security, new.security),
        "update": (old.update, new.update),
    }
    needs_restart = [name for name, (was, now) in sections.items() if was != now]
    if new.rules is not None and rules_devices != new.devices and "rules" not in needs_restart:
        needs_restart.append("rules")  # the rule engine binds rules to devices at start
    kept = replace(new, **{f: getattr(old, f) for n in needs_restart for f in _FIELDS.get(n, (n,))})
    return ReloadPlan(changed, added, removed, needs_restart, kept)
