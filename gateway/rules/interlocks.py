"""State interlocks: local actions that must not run while certain events are raised nearby.

The shipped default keeps water on during a fire: no valve closes while a fire or smoke alarm is
raised in the same building. `Interlocks` follows every raised and cleared event (rules, drivers such
as the fire panel, bus owners) and answers, for one action about to write, which interlock blocks it.
"""

from __future__ import annotations

import logging
from collections.abc import Collection, Iterable, Mapping
from typing import Any, Literal

from pydantic import BaseModel, Field, model_validator

from citynerve.gateway.api import ID_PATTERN, STRICT, Event, EventState, Value

log = logging.getLogger("citynerve.gateway.rules")

InterlockValue = bool | int | float | str
WILDCARD = "*"  # an event's subject meaning every subject (citynerve.gateway.api.Event.subject)


class InterlockConfig(BaseModel):
    """A state interlock: actions that must not run while events of some kinds are raised nearby.

    It guards the actions named in `actions` and every action writing one of `points`; with `values`,
    only writes of those values (closing a valve, not opening it). It blocks while an event of a kind
    in `while_raised` is raised on a device in the same building (`scope = "building"`; a device
    without a building counts as in every building), on the action's device itself ("device"), or
    anywhere on this gateway ("gateway").
    """

    model_config = STRICT
    id: str = Field(pattern=ID_PATTERN)
    description: str = ""
    actions: tuple[str, ...] = ()
    points: tuple[str, ...] = ()
    values: tuple[InterlockValue, ...] = Field(
        default=(), description="only writes of these values are held back (closing, not opening); empty: any"
    )
    while_raised: tuple[str, ...] = Field(min_length=1, description="event kinds, e.g. fire, smoke")
    scope: Literal["building", "device", "gateway"] = Field(
        default="building", description="where a raised event blocks: same building, same device, anywhere"
    )
    enabled: bool = True

    @model_validator(mode="after")
    def _guards_something(self) -> InterlockConfig:
        if not self.actions and not self.points:
            raise ValueError("an interlock needs `actions` or `points` (what it guards)")
        return self


DEFAULT_INTERLOCKS: tuple[InterlockConfig, ...] = (
    InterlockConfig(
        id="water_on_during_fire",
        description="no water valve closes while a fire or smoke alarm is raised in the same building "
        "(sprinklers and hose reels need the water)",
        points=("valve",),
        values=(False, 0, "close", "closed", "off"),
        while_raised=("fire", "smoke"),
        scope="building",
    ),
)
"""Shipped interlocks: always on unless an entry with the same id replaces or disables them."""


class Interlocks:
    """The raised events that interlocks look at, and the check of one action against them."""

    def __init__(
        self, interlocks: Iterable[InterlockConfig], device_attrs: Mapping[str, Mapping[str, Any]]
    ) -> None:
        self.interlocks = tuple(interlocks)
        self._kinds = {k for i in self.interlocks for k in i.while_raised}
        self._attrs = device_attrs
        # (device, kind, rule, what) -> building of each raised event an interlock cares about
        self._raised: dict[tuple[str, str, str, str], str] = {}

    def observe(self, event: Event, *, by_value: bool = True) -> bool:
        """Follow one event (raised or cleared), whatever raised it.

        A driver's events name what they are about in `value` (the fire panel: the zone or detector,
        the same on raise and clear), so two zones in fire are two entries and clearing one keeps
        the other. A rule's raise and clear carry different values (one alarm per rule and device):
        the engine passes `by_value=False`. An event with subject "*" clears as the alarm registry
        does (citynerve.gateway.alarms): a one-shot one (a fire panel's reset, the only one sent when
        the panel's driver knows of nothing raised, as after a restart) every entry of its device
        and rule, a CLEARED one every entry of its device, kind and rule. Returns whether the raised
        set changed."""
        if event.subject == WILDCARD and (event.one_shot or event.state is EventState.CLEARED):
            dev, kind, rule = event.device_id, event.kind, event.rule
            gone = [
                k for k in self._raised if k[0] == dev and k[2] == rule and (event.one_shot or k[1] == kind)
            ]
            for k in gone:
                del self._raised[k]
            return bool(gone)
        if event.kind not in self._kinds:
            return False
        key = (event.device_id, event.kind, event.rule, repr(event.value) if by_value else "")
        if event.state is EventState.RAISED:
            new = key not in self._raised
            self._raised[key] = self.building_of(event.device_id, event.attrs)
            return new
        return self._raised.pop(key, None) is not None

    def building_of(self, device_id: str, attrs: Mapping[str, Any] | None = None) -> str:
        for source in (self._attrs.get(device_id), attrs):
            location = (source or {}).get("location")
            if isinstance(location, Mapping) and location.get("building"):
                return str(location["building"])
        return ""

    def blocking(
        self, action_id: str, device_id: str, point: str, value: Value
    ) -> tuple[InterlockConfig, str] | None:
        """The first interlock that blocks this write and the raised event that makes it, or None."""
        building = self.building_of(device_id)
        for lock in self.interlocks:
            if action_id not in lock.actions and point not in lock.points:
                continue
            if lock.values and not any(_same(value, v) for v in lock.values):
                continue
            for (dev, kind, _rule, _what), where in self._raised.items():
                if kind not in lock.while_raised:
                    continue
                near = (
                    lock.scope == "gateway"
                    or (lock.scope == "device" and dev == device_id)
                    # a device without a building is in every building: err on the side of safety
                    or (lock.scope == "building" and (not building or not where or building == where))
                )
                if near:
                    return lock, f"{kind} raised on {dev}" + (f" (building {where})" if where else "")
        return None

    def snapshot(self) -> list[list[str]]:
        return [[*key, building] for key, building in self._raised.items()]

    def retain(self, names: Collection[tuple[str, str, str]], values: Collection[tuple[str, ...]]) -> int:
        """Keep only the entries of events still raised: a rule's alarm named in `names` (device,
        kind, rule), a driver's event in `values` (device, kind, rule, repr of its value). Returns
        how many were dropped."""
        gone = [
            key
            for key in self._raised
            if not (key[:3] in names if key[3] == "" else key in values)  # a rule's: by_value=False
        ]
        for key in gone:
            log.warning("interlock: %s on %s no longer raised (alarm registry): dropped", key[1], key[0])
            del self._raised[key]
        return len(gone)

    def forget_devices(self, keep: Collection[str]) -> int:
        """Drop the entries of devices not in `keep` (removed from the config: nothing clears their
        events any more), as the alarm registry drops their alarms. Returns how many were dropped."""
        gone = [key for key in self._raised if key[0] not in keep]
        for key in gone:
            log.warning("interlock: %s on %s, a device no longer configured: dropped", key[1], key[0])
            del self._raised[key]
        return len(gone)

    def forget_rules(self, keep: Collection[str]) -> int:
        """Drop the entries of rule alarms (the engine's, by_value=False) of rules not in `keep`
        (removed or renamed in the config: nothing clears them any more). Returns how many."""
        gone = [key for key in self._raised if key[3] == "" and key[2] not in keep]
        for key in gone:
            log.warning("interlock: %s on %s, rule %s no longer configured: dropped", key[1], key[0], key[2])
            del self._raised[key]
        return len(gone)

    def restore(self, data: Iterable[Any]) -> None:
        """Take a snapshot's entries (malformed ones are skipped)."""
        for item in data if isinstance(data, list | tuple) else ():
            if isinstance(item, list) and len(item) == 5 and all(isinstance(x, str) for x in item):
                self._raised[(item[0], item[1], item[2], item[3])] = item[4]


def _same(value: Value, guarded: InterlockValue) -> bool:
    if isinstance(value, str) or isinstance(guarded, str):
        return str(value).casefold() == str(guarded).casefold()
    return value == guarded
