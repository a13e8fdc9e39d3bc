"""The `[rules]` table of the gateway config: packs, inline rules, actions, schedules, contacts.

Every check that can be made without the device list is a pydantic validator, so the config loader
reports it with its key path. `check_rules` adds the cross-checks against the configured devices.
The rule kinds live in rules/kinds.py, rule packs in rules/packs.py; both are re-exported here.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any, Literal

from pydantic import Field, PrivateAttr, model_validator

from citynerve.gateway.api import ConfigIssue, DeviceConfig, in_field_words
from citynerve.gateway.pipeline.derived import point_names
from citynerve.gateway.rules.household_config import HouseholdConfig, check_households, household_problems
from citynerve.gateway.rules.interlocks import DEFAULT_INTERLOCKS, InterlockConfig
from citynerve.gateway.rules.kinds import (
    RESERVED_RULE_IDS,
    RESERVED_RULE_PREFIXES,
    RULE_ID,
    SEVERITY,
    AnomalyRule,
    BooleanRule,
    CompositeRule,
    ConsumptionRule,
    MissingRule,
    OfflineRule,
    PointRule,
    RateRule,
    RoutineRule,
    RuleConfig,
    Selector,
    SeverityName,
    ThresholdRule,
    _check_tz,
    _Model,
    rule_points,
    severity_of,
)
from citynerve.gateway.rules.nesting import nesting_problems
from citynerve.gateway.rules.numbers import Count, Number, is_number
from citynerve.gateway.rules.packs import PACKS_DIR, RulePack, load_pack

__all__ = [
    "PACKS_DIR",
    "RULE_ID",
    "SEVERITY",
    "ActionConfig",
    "AnomalyRule",
    "BooleanRule",
    "CompositeRule",
    "ConsumptionRule",
    "Contact",
    "MissingRule",
    "OfflineRule",
    "PackRef",
    "PointRule",
    "RateRule",
    "RoutineRule",
    "RuleConfig",
    "RulePack",
    "RulesConfig",
    "Schedule",
    "Selector",
    "SeverityName",
    "ThresholdRule",
    "check_rules",
    "load_pack",
    "rule_points",
    "severity_of",
]


class ActionConfig(_Model):
    """A local action: on an event of one of `on` rules, write `value` to a point through its bus owner.

    `device` "" means the device that raised the event. Interlocks: at most one write that moves the
    target per `min_interval_s`, at most `max_per_day` (a write of the value last written, or for a
    raised critical event, is not limited; a refused write waits while its trigger stands), a
    manual override flag per device and action, and the state interlocks of `[[rules.interlocks]]`.
    After the write the point is read back (`verify`): `verify_after_s` later, up to
    `verify_retries` more times, it must read `expect` (default: the written value), else the
    action reports that the device did not follow.
    """

    id: str = Field(pattern=RULE_ID)
    on: tuple[str, ...] = Field(min_length=1, description="rule ids")
    when: Literal["raised", "cleared"] = "raised"
    device: str = ""
    point: str = Field(min_length=1)
    value: bool | int | float | str
    min_interval_s: Number = Field(default=600.0, ge=0)
    max_per_day: Count = Field(default=10, ge=1)
    timeout_s: Number = Field(default=10.0, gt=0, le=300)
    verify: bool = True
    verify_after_s: Number = Field(default=1.0, ge=0, le=600, description="wait before each read-back")
    verify_retries: Count = Field(default=3, ge=0, le=10, description="read-backs after the first")
    expect: bool | int | float | str | None = Field(
        default=None, description="what the point reads once the device followed (default: `value`)"
    )
    enabled: bool = True


class Schedule(_Model):
    """A recurring local time window (quiet hours); `start` > `end` spans midnight."""

    id: str = Field(pattern=RULE_ID)
    start: str = Field(pattern=r"^([01][0-9]|2[0-3]):[0-5][0-9]$")
    end: str = Field(pattern=r"^(([01][0-9]|2[0-3]):[0-5][0-9]|24:00)$")  # 24:00: to midnight
    days: tuple[Literal["mon", "tue", "wed", "thu", "fri", "sat", "sun"], ...] = (
        "mon",
        "tue",
        "wed",
        "thu",
        "fri",
        "sat",
        "sun",
    )
    tz: str = "Asia/Shanghai"

    @model_validator(mode="after")
    def _tz(self) -> Schedule:
        _check_tz(self.tz)
        return self


class Contact(_Model):
    """Someone to call when an event escalates: the data travels with the event, the platform dials."""

    id: str = Field(pattern=RULE_ID)
    name: str = ""
    role: Literal["emergency_contact", "community", "street", "operator", "other"] = "other"
    phone: str = Field(default="", pattern=r"^$|^\+?[0-9 -]{3,20}$")
    after_s: Number = Field(default=0.0, ge=0, description="escalate to this contact after this long")


class PackRef(_Model):
    """Use a rule pack: by name from config/rules/ or by path, with parameters and a device selector.

    Pack rule ids become `<pack>.<rule>`; `points` renames the pack's point names to the devices'.
    """

    name: str = Field(pattern=RULE_ID, description="a shipped pack's id: config/rules/<name>.toml")
    path: str = ""
    select: Selector = Selector()
    params: dict[str, bool | int | float | str] = Field(default_factory=dict)
    points: dict[str, str] = Field(default_factory=dict)
    disable: tuple[str, ...] = ()

    _rules: tuple[RuleConfig, ...] = PrivateAttr(default=())
    _pack: RulePack | None = PrivateAttr(default=None)

    @model_validator(mode="after")
    def _load(self) -> PackRef:
        pack = load_pack(Path(self.path) if self.path else PACKS_DIR / f"{self.name}.toml")
        unknown = set(self.params) - set(pack.params)
        if unknown:
            raise ValueError(
                f"pack {pack.id} has no parameters {sorted(unknown)}; known: {sorted(pack.params)}"
            )
        # A bool for a number (`fault_hold_s = true`) would be taken for 1 by the rule it fills in.
        mixed = [k for k, v in self.params.items() if isinstance(v, bool) and is_number(pack.params.get(k))]
        if mixed:
            raise in_field_words(
                "; ".join(
                    f"params.{k}: expected a number (the pack's default: {pack.params[k]!r}), found the "
                    f"boolean {str(self.params[k]).lower()}"
                    for k in mixed
                )
            )
        missing = set(self.disable) - {r["id"] for r in pack.rules}
        if missing:
            raise ValueError(f"`disable` names rules not in pack {pack.id}: {sorted(missing)}")
        self._pack = pack
        self._rules = pack.expand(self.params, self.points, self.select, self.disable)
        return self

    @property
    def rules(self) -> tuple[RuleConfig, ...]:
        """The pack's rules, ids qualified, parameters and point names applied."""
        return self._rules

    @property
    def pack(self) -> RulePack:
        assert self._pack is not None
        return self._pack


class RulesConfig(_Model):
    """The gateway's `[rules]` table."""

    packs: tuple[PackRef, ...] = ()
    rules: tuple[RuleConfig, ...] = ()
    actions: tuple[ActionConfig, ...] = ()
    interlocks: tuple[InterlockConfig, ...] = Field(
        default=(), description="added to the shipped DEFAULT_INTERLOCKS; the same id replaces one"
    )
    dry_run_actions: bool = Field(default=False, description="log and report actions, write nothing")
    schedules: tuple[Schedule, ...] = ()
    contacts: tuple[Contact, ...] = ()
    households: tuple[HouseholdConfig, ...] = Field(
        default=(), description="a bed-foot sensor and a water meter of one resident: 'check on this person'"
    )
    away: tuple[str, ...] = Field(
        default=(), description="device ids (or household ids) of households marked away"
    )
    snapshot_interval_s: Number = Field(default=300.0, gt=0, description="how often detector state is saved")

    @model_validator(mode="after")
    def _references(self) -> RulesConfig:
        rules = self.all_rules()
        ids = [r.id for r in rules]
        dup = sorted({i for i in ids if ids.count(i) > 1})
        if dup:
            raise ValueError(f"duplicate rule ids: {dup}")
        for i in ids:
            if i in RESERVED_RULE_IDS or i.startswith(RESERVED_RULE_PREFIXES):
                raise ValueError(
                    f"rule id {i!r} is the gateway's own (its alarms come from the gateway itself, not "
                    f"the rules): choose another id (not {sorted(RESERVED_RULE_IDS)}, nor starting "
                    f"with {' or '.join(RESERVED_RULE_PREFIXES)})"
                )
        known = set(ids)
        schedules = {s.id for s in self.schedules}
        contacts = {c.id for c in self.contacts}
        problems: list[str] = []
        for r in rules:
            if isinstance(r, CompositeRule):
                problems += [f"rule {r.id}: `of` names unknown rule {c}" for c in r.of if c not in known]
                problems += [
                    f"rule {r.id}: `{key}` names unknown rule {c}"
                    for key, refs in (
                        ("confirmed_by", r.confirmed_by),
                        ("alone_unless", r.alone_unless),
                        ("relays", r.relays),
                    )
                    for c in refs
                    if c not in known
                ]
                if r.id in (*r.of, *r.confirmed_by, *r.alone_unless, *r.relays):
                    problems.append(f"rule {r.id}: a composite cannot include itself")
            problems += [
                f"rule {r.id}: unknown schedule {s}" for s in r.suppress_during if s not in schedules
            ]
            problems += [f"rule {r.id}: unknown contact {c}" for c in r.escalate if c not in contacts]
        problems += nesting_problems(rules)  # cycles between composites, chains too deep
        problems += household_problems(self.households, known, contacts)
        for a in self.actions:
            problems += [f"action {a.id}: `on` names unknown rule {o}" for o in a.on if o not in known]
        action_ids = {a.id for a in self.actions}
        for lock in self.interlocks:
            problems += [
                f"interlock {lock.id}: `actions` names unknown action {a}"
                for a in lock.actions
                if a not in action_ids
            ]
        if problems:
            raise ValueError("; ".join(problems))
        return self

    def check(
        self, devices: Sequence[DeviceConfig], file: str = "", classes: Mapping[str, str] | None = None
    ) -> list[ConfigIssue]:
        """Cross-checks against the configured devices (the config loader calls this); `classes`:
        profile id -> device_class."""
        return check_rules(self, devices, file, classes)

    def effective_interlocks(self) -> tuple[InterlockConfig, ...]:
        """The shipped interlocks, each replaced by a configured one of the same id, then the others;
        disabled ones left out."""
        mine = {i.id: i for i in self.interlocks}
        out = [mine.pop(d.id, d) for d in DEFAULT_INTERLOCKS]
        out += mine.values()
        return tuple(i for i in out if i.enabled)

    def all_rules(self) -> tuple[RuleConfig, ...]:
        """Pack rules then inline rules, enabled or not."""
        out: list[RuleConfig] = []
        for p in self.packs:
            out.extend(p.rules)
        out.extend(self.rules)
        return tuple(out)


def check_rules(
    config: RulesConfig,
    devices: Sequence[DeviceConfig],
    file: str = "",
    classes: Mapping[str, str] | None = None,
) -> list[ConfigIssue]:
    """Cross-checks that need the device list: unknown devices, points the devices do not have.

    `classes` (profile id -> device_class) lets a pack's rule that is `optional` or written for
    other classes (`for_classes`) pass over a device selected by id that lacks its point: the engine
    gives that device no such rule, as it does for devices selected by profile or tag."""
    issues: list[ConfigIssue] = []
    by_id = {d.id: d for d in devices}

    def sel_issues(
        sel: Selector, where: str, point: str, wants: Callable[[DeviceConfig], bool] = lambda d: True
    ) -> None:
        for i, dev in enumerate(sel.devices):
            if dev not in by_id:
                issues.append(ConfigIssue(file, f"{where}.select.devices[{i}]", f"unknown device {dev!r}"))
            elif point and by_id[dev].points and point not in point_names(by_id[dev]) and wants(by_id[dev]):
                have = sorted(point_names(by_id[dev]))
                issues.append(
                    ConfigIssue(
                        file, f"{where}.point", f"device {dev!r} has no point {point!r}; it has {have}"
                    )
                )

    for i, p in enumerate(config.packs):
        sel_issues(p.select, f"rules.packs[{i}]", "")
        raw = {f"{p.pack.id}.{r['id']}": r for r in p.pack.rules}
        for r in p.rules:
            point = rule_points(r)
            if point and p.select.devices:
                others = [
                    (rule_points(o), raw.get(o.id, {}))
                    for o in p.rules
                    if o is not r and o.event_kind == r.event_kind
                ]
                wants = _wants_point(p.pack, raw.get(r.id, {}), classes or {}, others)
                sel_issues(p.select, f"rules.packs[{i}]({r.id})", point, wants)
    for i, r in enumerate(config.rules):
        sel_issues(r.select, f"rules.rules[{i}]", rule_points(r))
        if not r.select.empty and not any(r.select.matches(d) for d in devices):
            issues.append(ConfigIssue(file, f"rules.rules[{i}].select", f"rule {r.id} selects no device"))
    issues += _action_issues(config, devices, file)
    issues += check_households(config.households, by_id, file)
    homes = {h.id for h in config.households}
    for i, dev in enumerate(config.away):
        if dev not in by_id and dev not in homes:
            issues.append(ConfigIssue(file, f"rules.away[{i}]", f"unknown device {dev!r}"))
    return issues


def _wants_point(
    pack: RulePack,
    rule: Mapping[str, Any],
    classes: Mapping[str, str],
    others: Sequence[tuple[str, Mapping[str, Any]]],
) -> Callable[[DeviceConfig], bool]:
    """Whether a device selected by id must have a pack rule's point. Not for a rule only some models
    have (`optional`); not for a rule written for classes other than the device's profile's; not for
    a rule of every class of the pack when a rule of the same event written for the device's class
    (`for_classes`) reads a point the device has (`others`: the point and pack table of each rule of
    the same event; a relay's toroid-connected bit for a detector's fault bit). A device whose
    profile has no known class is held to every rule that is not optional."""

    def wants(dev: DeviceConfig) -> bool:
        if rule.get("optional"):
            return False
        cls = classes.get(dev.profile, "")
        if not cls:
            return True
        if rule.get("for_classes"):
            return cls in pack.rule_classes(rule)
        have = point_names(dev)
        return not any(point in have and cls in (other.get("for_classes") or ()) for point, other in others)

    return wants


MAX_NAMED_DEVICES = 10
"""A config issue names at most this many devices (a pack on 1,000 detectors: the first ten, and
how many more)."""


def _action_issues(config: RulesConfig, devices: Sequence[DeviceConfig], file: str) -> list[ConfigIssue]:
    """Actions whose target does not exist or cannot be written: found here, not at the first alarm
    (a valve that does not close, found during a real leak). `device = ""` writes the device that
    raised: every enabled device an `on` rule applies to that has the point is checked."""
    issues: list[ConfigIssue] = []
    by_id = {d.id: d for d in devices}
    rules = {r.id: r for r in config.all_rules() if r.enabled}
    for i, a in enumerate(config.actions):
        where = f"rules.actions[{i}]"
        target = by_id.get(a.device)
        if a.device and target is None:
            issues.append(ConfigIssue(file, f"{where}.device", f"unknown device {a.device!r}"))
        elif target is not None and target.points and a.point not in target.points:
            issues.append(
                ConfigIssue(file, f"{where}.point", f"device {a.device!r} has no point {a.point!r}")
            )
        elif target is not None and target.points and not target.points[a.point].writable:
            issues.append(
                ConfigIssue(
                    file,
                    f"{where}.point",
                    f"point {a.point!r} of device {a.device!r} is not writable (its profile "
                    f"{target.profile!r} does not say `writable = true`): action {a.id} would fail "
                    "at every alarm",
                )
            )
        elif not a.device and a.enabled:
            read_only = [
                d.id
                for d in devices
                if d.enabled
                and a.point in d.points
                and not d.points[a.point].writable
                and any(_applies(rules, o, d, set()) for o in a.on)
            ]
            if read_only:
                more = len(read_only) - MAX_NAMED_DEVICES
                named = ", ".join(read_only[:MAX_NAMED_DEVICES]) + (f" and {more} more" if more > 0 else "")
                issues.append(
                    ConfigIssue(
                        file,
                        f"{where}.point",
                        f'point {a.point!r} is not writable on {named} (device = "": the device that '
                        f"raised; rules {', '.join(a.on)} apply to them): action {a.id} would fail there",
                    )
                )
    return issues


def _applies(rules: Mapping[str, RuleConfig], rule_id: str, dev: DeviceConfig, seen: set[str]) -> bool:
    """Whether the engine gives `dev` an instance of the rule (as RuleEngine._instance: selected, and
    the point there; a composite needs its rules there, a household one is taken as selected)."""
    rule = rules.get(rule_id)
    if rule is None or rule_id in seen or not rule.select.matches(dev):
        return False
    point = rule_points(rule)
    if point and dev.points and point not in point_names(dev):
        return False
    if not isinstance(rule, CompositeRule) or rule.household:
        return True
    children = [_applies(rules, c, dev, seen | {rule_id}) for c in rule.of]
    return any(children) if rule.mode in ("coincidence", "unwanted") else all(children)
