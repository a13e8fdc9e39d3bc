"""The `[rules]` table of the gateway config: packs, inline rules, actions, schedules, contacts.

Every check that can be made without the device list is a pydantic validator, so the config loader
reports it with its key path. `check_rules` adds the cross-checks against the configured devices.
"""

from __future__ import annotations

import re
import tomllib
import zoneinfo
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import BaseModel, Field, PrivateAttr, TypeAdapter, ValidationError, model_validator

from citynerve.gateway import shipped
from citynerve.gateway.api import STRICT, ConfigIssue, DeviceConfig, FiniteFloat, Severity
from citynerve.gateway.rules.household_config import HouseholdConfig, check_households, household_problems
from citynerve.gateway.rules.interlocks import DEFAULT_INTERLOCKS, InterlockConfig

_STRICT = STRICT
RULE_ID = r"^[A-Za-z0-9][A-Za-z0-9_.:-]{0,95}$"
PACKS_DIR = shipped.rule_packs()
"""Where shipped packs live (config/rules/<name>.toml in the repo, package data when installed)."""

SeverityName = Literal["info", "warning", "minor", "major", "critical"]
SEVERITY: dict[str, Severity] = {s.name.lower(): s for s in Severity}


class _Model(BaseModel):
    model_config = _STRICT


class Selector(_Model):
    """Which devices a rule applies to: a device matches if its id, profile or any tag is listed.

    An empty selector matches every device that has the rule's point.
    """

    devices: tuple[str, ...] = ()
    profiles: tuple[str, ...] = ()
    tags: tuple[str, ...] = ()

    @property
    def empty(self) -> bool:
        return not (self.devices or self.profiles or self.tags)

    def matches(self, device: DeviceConfig) -> bool:
        """True if the device is selected."""
        if self.empty:
            return True
        return (
            device.id in self.devices
            or device.profile in self.profiles
            or any(t in self.tags for t in device.tags)
        )


class _RuleBase(_Model):
    id: str = Field(pattern=RULE_ID)
    event: str = Field(default="", description="event kind; defaults to the rule id's last part")
    severity: SeverityName = "warning"
    select: Selector = Selector()
    hold_s: FiniteFloat = Field(default=0.0, ge=0, le=7 * 86400, description="condition held before raising")
    clear_hold_s: FiniteFloat = Field(
        default=0.0, ge=0, le=7 * 86400, description="clear held before clearing"
    )
    message: str = ""
    suppress_during: tuple[str, ...] = Field(default=(), description="schedule ids (quiet hours)")
    suppress_when_away: bool = False
    escalate: tuple[str, ...] = Field(default=(), description="contact ids, in escalation order")
    enabled: bool = True

    @property
    def event_kind(self) -> str:
        return self.event or self.id.rsplit(".", 1)[-1]


class ThresholdRule(_RuleBase):
    """Raise when the value is above `above` or below `below` (a band if both); clear past hysteresis."""

    kind: Literal["threshold"]
    point: str
    above: FiniteFloat | None = None
    below: FiniteFloat | None = None
    hysteresis: FiniteFloat = Field(default=0.0, ge=0)

    @model_validator(mode="after")
    def _limits(self) -> ThresholdRule:
        if self.above is None and self.below is None:
            raise ValueError("a threshold rule needs `above`, `below` or both")
        if self.above is not None and self.below is not None and self.below >= self.above:
            raise ValueError(f"`below` ({self.below}) must be less than `above` ({self.above})")
        if (
            self.above is not None
            and self.below is not None
            and 2 * self.hysteresis >= self.above - self.below
        ):
            raise ValueError("`hysteresis` must be less than half the band between `below` and `above`")
        return self


class RateRule(_RuleBase):
    """Raise when the value changes by more than `max_change` within `window_s`."""

    kind: Literal["rate"]
    point: str
    max_change: FiniteFloat = Field(gt=0)
    window_s: FiniteFloat = Field(gt=0, le=86400)
    direction: Literal["rising", "falling", "both"] = "both"


class MissingRule(_RuleBase):
    """Raise when no good reading of `point` (any point if empty) arrived for `after_s`."""

    kind: Literal["missing"]
    point: str = ""
    after_s: FiniteFloat = Field(gt=0, le=30 * 86400)


class OfflineRule(_RuleBase):
    """Raise when the bus owner reports the device offline (held `hold_s`), clear when it is back."""

    kind: Literal["offline"]


class BooleanRule(_RuleBase):
    """Raise while a boolean input (smoke, tamper, door) is in its active state."""

    kind: Literal["boolean"]
    point: str
    active: bool = True


class ConsumptionRule(_RuleBase):
    """Use over a cumulative meter: sliding window, calendar day, or use in every slot.

    The meter's total is differenced; a drop is a rollover when the old total was near `rollover_at`,
    otherwise a meter replacement (re-baseline, no use counted); a jump above `max_step` is also a
    replacement. Use across a gap is spread over the gap; gaps longer than `gap_s` leave it unknown.
    """

    kind: Literal["consumption"]
    point: str
    window: Literal["sliding", "day", "slots"]
    window_s: FiniteFloat = Field(default=43200.0, gt=0, le=7 * 86400)
    bin_s: FiniteFloat = Field(default=900.0, gt=0, le=86400, description="resolution of sliding windows")
    below: FiniteFloat | None = Field(default=None, ge=0)
    above: FiniteFloat | None = Field(default=None, ge=0)
    slot_s: FiniteFloat = Field(default=1800.0, gt=0, le=86400)
    slots: int = Field(default=48, ge=1, le=1000)
    min_per_slot: FiniteFloat = Field(default=0.0, ge=0)
    rollover_at: FiniteFloat | None = Field(default=None, gt=0)
    max_step: FiniteFloat | None = Field(default=None, gt=0)
    gap_s: FiniteFloat = Field(
        default=7200.0,
        gt=0,
        description="readings further apart than this, seconds: the use between them is unknown",
    )
    stale_s: FiniteFloat = Field(default=7200.0, gt=0)
    tz: str = "Asia/Shanghai"

    @model_validator(mode="after")
    def _shape(self) -> ConsumptionRule:
        _check_tz(self.tz)
        if self.window == "slots":
            if self.below is not None or self.above is not None:
                raise ValueError("a `slots` window uses `min_per_slot`, not `below`/`above`")
        elif (self.below is None) == (self.above is None):
            raise ValueError(f"a `{self.window}` window needs exactly one of `below` or `above`")
        if self.window == "sliding" and self.window_s / self.bin_s > 2016:
            raise ValueError("window_s / bin_s must be at most 2016 (memory per point is bounded)")
        return self


class CompositeRule(_RuleBase):
    """Combine other rules of the same device: all / any active, or raised in sequence within a time."""

    kind: Literal["composite"]
    mode: Literal["all", "any", "sequence"]
    of: tuple[str, ...] = Field(min_length=2)
    within_s: FiniteFloat = Field(default=60.0, gt=0)
    household: bool = Field(
        default=False,
        description="children may be on any device sharing the device's `household:<id>` tag "
        "(a bed sensor and the same flat's water meter: one 'check on this person' alarm)",
    )


class AnomalyRule(_RuleBase):
    """Streaming statistical detector for points without a fixed threshold.

    `method` "ewma": exponentially weighted mean and deviation; "robust": streaming median and mean
    absolute deviation. With `cumulative`, the use per `slot_s` of a meter is scored; with `profile`,
    against a learned daily profile (one bin per slot of the local day). Scoring starts after `warmup`
    values (per bin with a profile). `min_scale` floors the deviation so a flat history cannot make
    every small change an anomaly; `min_value` ignores values too small to matter.
    """

    kind: Literal["anomaly"]
    point: str
    method: Literal["ewma", "robust"] = "robust"
    alpha: FiniteFloat = Field(default=0.05, gt=0, le=1)
    z: FiniteFloat = Field(default=5.0, gt=0)
    warmup: int = Field(default=20, ge=1)
    direction: Literal["high", "low", "both"] = "high"
    min_scale: FiniteFloat = Field(default=0.0, ge=0)
    min_value: FiniteFloat = Field(default=float("-inf"))
    cumulative: bool = False
    profile: bool = False
    slot_s: FiniteFloat = Field(default=1800.0, gt=0, le=86400)
    hours: tuple[int, int] | None = Field(default=None, description="[start, end) local hours scored")
    rollover_at: FiniteFloat | None = Field(default=None, gt=0)
    max_step: FiniteFloat | None = Field(default=None, gt=0)
    gap_s: FiniteFloat = Field(
        default=7200.0,
        gt=0,
        description="readings further apart than this, seconds: the use between them is unknown",
    )
    tz: str = "Asia/Shanghai"
    peers: str = Field(
        default="",
        pattern=r"^([a-z][a-z0-9_-]{0,31})?$",
        description="tag prefix of a peer group (`feeder`: devices tagged `feeder:<id>`): a slot's use "
        "is scored as the excess over the other members' median (gateway/rules/peers.py)",
    )
    peers_quantile: FiniteFloat = Field(
        default=0.5,
        ge=0,
        le=1,
        description="with `peers`: the quantile of the other members' uses a slot is compared with "
        "(0.5 the median; 0.75 the use a quarter of the group exceeds)",
    )
    base_s: FiniteFloat = Field(
        default=0.0,
        ge=0,
        le=86400,
        description="with `cumulative`: score the lowest slot value over this many seconds (slots in a "
        "row, a multiple of `slot_s`): a load present all along, not one burst; 0 = each slot",
    )

    @model_validator(mode="after")
    def _shape(self) -> AnomalyRule:
        _check_tz(self.tz)
        if self.profile and (86400 % self.slot_s or not self.cumulative):
            raise ValueError("`profile` needs `cumulative` and a `slot_s` that divides a day")
        if self.peers and not self.cumulative:
            raise ValueError("`peers` compares slot uses: it needs `cumulative`")
        if self.peers_quantile != 0.5 and not self.peers:
            raise ValueError("`peers_quantile` is a quantile of the peers' uses: it needs `peers`")
        if self.base_s and (not self.cumulative or self.base_s % self.slot_s):
            raise ValueError(
                f"`base_s` ({self.base_s:g}) spans whole slots of a meter: it needs `cumulative` and "
                f"a multiple of `slot_s` ({self.slot_s:g})"
            )
        if self.hours is not None and not (0 <= self.hours[0] <= 24 and 0 <= self.hours[1] <= 24):
            raise ValueError("`hours` are local hours 0..24")
        return self


_HHMM = r"^([01][0-9]|2[0-3]):[0-5][0-9]$"


class RoutineRule(_RuleBase):
    """Time-of-day expectations on a two-state point (in bed / out of bed), local time.

    `up_by`: at `by` the point is still in its `active` state and has not left it for at least `up_s`
    since `since` (the day has not started: a night-time visit to the bathroom is shorter).
    `back_within`: the point left its `active` state between `start` and `end` (may span midnight)
    and has not returned within `away_s`. `stale_s`: a state older than this is unknown.
    """

    kind: Literal["routine"]
    point: str
    mode: Literal["up_by", "back_within"]
    active: bool = True
    since: str = Field(default="04:00", pattern=_HHMM, description="up_by: the day may start from (HH:MM)")
    by: str = Field(default="09:00", pattern=_HHMM, description="up_by: out of bed by this time (HH:MM)")
    up_s: FiniteFloat = Field(
        default=600.0, ge=0, le=86400, description="up_by: out of the active state at least this long"
    )
    start: str = Field(default="22:00", pattern=_HHMM)
    end: str = Field(default="06:00", pattern=_HHMM)
    away_s: FiniteFloat = Field(
        default=2400.0, gt=0, le=86400, description="back_within: back in the active state within this"
    )
    stale_s: FiniteFloat = Field(default=1800.0, gt=0, le=7 * 86400)
    tz: str = "Asia/Shanghai"

    @model_validator(mode="after")
    def _shape(self) -> RoutineRule:
        _check_tz(self.tz)
        if self.mode == "up_by" and self.since >= self.by:
            raise ValueError(f"`since` ({self.since}) must be earlier in the day than `by` ({self.by})")
        return self


RuleConfig = Annotated[
    ThresholdRule
    | RateRule
    | MissingRule
    | OfflineRule
    | BooleanRule
    | ConsumptionRule
    | CompositeRule
    | AnomalyRule
    | RoutineRule,
    Field(discriminator="kind"),
]
PointRule = ThresholdRule | RateRule | BooleanRule | ConsumptionRule | AnomalyRule | RoutineRule
_RULES = TypeAdapter(tuple[RuleConfig, ...])


class ActionConfig(_Model):
    """A local action: on an event of one of `on` rules, write `value` to a point through its bus owner.

    `device` "" means the device that raised the event. Interlocks: at most one write per target per
    `min_interval_s`, at most `max_per_day`, a manual override flag per device and action, and the
    state interlocks of `[[rules.interlocks]]`. After the write the point is read back (`verify`):
    `verify_after_s` later, up to `verify_retries` more times, it must read `expect` (default: the
    written value), else the action reports that the device did not follow.
    """

    id: str = Field(pattern=RULE_ID)
    on: tuple[str, ...] = Field(min_length=1, description="rule ids")
    when: Literal["raised", "cleared"] = "raised"
    device: str = ""
    point: str = Field(min_length=1)
    value: bool | int | float | str
    min_interval_s: FiniteFloat = Field(default=600.0, ge=0)
    max_per_day: int = Field(default=10, ge=1)
    timeout_s: FiniteFloat = Field(default=10.0, gt=0, le=300)
    verify: bool = True
    verify_after_s: FiniteFloat = Field(default=1.0, ge=0, le=600, description="wait before each read-back")
    verify_retries: int = Field(default=3, ge=0, le=10, description="read-backs after the first")
    expect: bool | int | float | str | None = Field(
        default=None, description="what the point reads once the device followed (default: `value`)"
    )
    enabled: bool = True


class Schedule(_Model):
    """A recurring local time window (quiet hours); `start` > `end` spans midnight."""

    id: str = Field(pattern=RULE_ID)
    start: str = Field(pattern=r"^([01][0-9]|2[0-3]):[0-5][0-9]$")
    end: str = Field(pattern=r"^([01][0-9]|2[0-4]):[0-5][0-9]$")
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
    after_s: FiniteFloat = Field(default=0.0, ge=0, description="escalate to this contact after this long")


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
    snapshot_interval_s: FiniteFloat = Field(
        default=300.0, gt=0, description="how often detector state is saved"
    )

    @model_validator(mode="after")
    def _references(self) -> RulesConfig:
        rules = self.all_rules()
        ids = [r.id for r in rules]
        dup = sorted({i for i in ids if ids.count(i) > 1})
        if dup:
            raise ValueError(f"duplicate rule ids: {dup}")
        known = set(ids)
        schedules = {s.id for s in self.schedules}
        contacts = {c.id for c in self.contacts}
        problems: list[str] = []
        for r in rules:
            if isinstance(r, CompositeRule):
                problems += [f"rule {r.id}: `of` names unknown rule {c}" for c in r.of if c not in known]
                if r.id in r.of:
                    problems.append(f"rule {r.id}: a composite cannot include itself")
            problems += [
                f"rule {r.id}: unknown schedule {s}" for s in r.suppress_during if s not in schedules
            ]
            problems += [f"rule {r.id}: unknown contact {c}" for c in r.escalate if c not in contacts]
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

    def check(self, devices: Sequence[DeviceConfig], file: str = "") -> list[ConfigIssue]:
        """Cross-checks against the configured devices (the config loader calls this)."""
        return check_rules(self, devices, file)

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


class RulePack:
    """A shipped rule pack: rule tables with `$param` placeholders, parameter defaults, its source."""

    def __init__(
        self,
        id: str,
        description: str,
        source: str,
        params: dict[str, Any],
        rules: list[dict[str, Any]],
        classes: tuple[str, ...] = (),
    ) -> None:
        self.id = id
        self.description = description
        self.source = source
        self.params = params
        self.rules = rules
        self.classes = classes  # the device classes (profiles' `device_class`) the pack is written for

    def rule_classes(self, rule: Mapping[str, Any]) -> tuple[str, ...]:
        """The device classes one of the pack's rules is for (`for_classes`, else the pack's)."""
        return tuple(rule.get("for_classes") or self.classes)

    def expand(
        self,
        params: Mapping[str, Any],
        points: Mapping[str, str],
        select: Selector,
        disable: Sequence[str] = (),
    ) -> tuple[RuleConfig, ...]:
        """Rules with parameters substituted, ids qualified and the pack's selector applied."""
        values = {**self.params, **params}
        local = {r["id"] for r in self.rules}
        raw: list[dict[str, Any]] = []
        for r in self.rules:
            if r["id"] in disable:
                continue
            d = {k: _subst(v, values) for k, v in r.items() if k not in _PACK_ONLY}
            d["id"] = f"{self.id}.{r['id']}"
            if "point" in d and d["point"] in points:
                d["point"] = points[d["point"]]
            if "of" in d:
                d["of"] = [f"{self.id}.{c}" if c in local else c for c in d["of"]]
            if "select" not in d:
                d["select"] = select.model_dump()
            raw.append(d)
        try:
            return _RULES.validate_python(raw)
        except ValidationError as err:
            # Name the pack's rule, not its index: "pack manhole: rule cover_tilt: threshold.above: ..."
            parts = []
            for e in err.errors():
                loc = list(e["loc"])
                local_id = raw[loc[0]]["id"].split(".", 1)[1] if loc and isinstance(loc[0], int) else ""
                where = f"rule {local_id}"
                rest = ".".join(str(p) for p in loc[1:])
                parts.append(f"{where}: {rest}: {e['msg']}" if rest else f"{where}: {e['msg']}")
            raise ValueError(f"pack {self.id}: {'; '.join(parts)}") from err


def load_pack(path: Path) -> RulePack:
    """Read a pack file. Raises ValueError (inside validation this becomes a pydantic error)."""
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError as err:
        shipped = sorted(p.stem for p in PACKS_DIR.glob("*.toml"))
        raise ValueError(f"no rule pack at {path}; shipped packs: {shipped}") from err
    except (OSError, tomllib.TOMLDecodeError, UnicodeDecodeError) as err:
        raise ValueError(f"cannot read rule pack {path}: {err}") from err
    try:
        header = _PackHeader.model_validate({k: v for k, v in data.items() if k not in ("params", "rules")})
    except ValidationError as err:
        raise ValueError(f"rule pack {path}: {_flatten(err)}") from err
    if header.id != path.stem:
        raise ValueError(f"rule pack {path}: id {header.id!r} must equal the file stem {path.stem!r}")
    rules = data.get("rules", [])
    if not isinstance(rules, list) or not all(isinstance(r, dict) and "id" in r for r in rules):
        raise ValueError(f"rule pack {path}: `rules` must be an array of tables each with an `id`")
    params = data.get("params", {})
    if not isinstance(params, dict):
        raise ValueError(f"rule pack {path}: `params` must be a table")
    for r in rules:
        unknown = set(r.get("for_classes") or ()) - set(header.classes)
        if unknown:
            raise ValueError(
                f"rule pack {path}: rule {r['id']}: for_classes {sorted(unknown)} not in `classes`"
            )
    return RulePack(header.id, header.description, header.source, params, rules, header.classes)


class _PackHeader(_Model):
    id: str = Field(pattern=RULE_ID)
    description: str = Field(min_length=1)
    source: str = Field(min_length=1, description="where the rules come from")
    classes: tuple[str, ...] = Field(default=(), description="device classes the pack is written for")


# Keys of a pack's rule table that describe how the pack fits profiles, not the rule itself:
# `for_classes` (the classes this rule is for) and `optional` (a point only some models have).
_PACK_ONLY = ("for_classes", "optional")


_PARAM = re.compile(r"^\$([A-Za-z_][A-Za-z0-9_]*)$")
_INLINE = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)(?::(h|min))?\}")
_UNIT_S = {"h": 3600, "min": 60}


def _shown(value: Any, unit: str | None = None) -> str:
    """A parameter inside a message: 90.0 -> "90", 235.4 -> "235.4", [0, 6] -> "0-6";
    `${window_s:h}` shows seconds as hours (43200 -> "12"), `:min` as minutes."""
    if unit and isinstance(value, int | float) and not isinstance(value, bool):
        value = round(value / _UNIT_S[unit], 2)
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    if isinstance(value, list):
        return "-".join(_shown(v) for v in value)
    return str(value)


def _param(name: str, values: Mapping[str, Any]) -> Any:
    if name not in values:
        raise ValueError(f"parameter ${name} is not defined in the pack's [params]")
    return values[name]


def _subst(v: Any, values: Mapping[str, Any]) -> Any:
    """`"$name"` becomes the parameter's value; `${name}` inside a text (a message) its text."""
    if isinstance(v, str):
        m = _PARAM.match(v)
        if m:
            return _param(m.group(1), values)
        return _INLINE.sub(lambda m: _shown(_param(m.group(1), values), m.group(2)), v)
    if isinstance(v, list):
        return [_subst(x, values) for x in v]
    if isinstance(v, dict):
        return {k: _subst(x, values) for k, x in v.items()}
    return v


def _flatten(err: ValidationError) -> str:
    return "; ".join(f"{'.'.join(str(p) for p in e['loc'])}: {e['msg']}" for e in err.errors())


def _check_tz(tz: str) -> None:
    try:
        zoneinfo.ZoneInfo(tz)
    except (zoneinfo.ZoneInfoNotFoundError, ValueError) as err:
        raise ValueError(f"unknown time zone {tz!r}") from err


def rule_points(rule: RuleConfig) -> str:
    """The point a rule reads, or "" for device-level rules (offline, composite, missing any)."""
    return getattr(rule, "point", "")


def check_rules(config: RulesConfig, devices: Sequence[DeviceConfig], file: str = "") -> list[ConfigIssue]:
    """Cross-checks that need the device list: unknown devices, points the devices do not have."""
    issues: list[ConfigIssue] = []
    by_id = {d.id: d for d in devices}

    def sel_issues(sel: Selector, where: str, point: str) -> None:
        for i, dev in enumerate(sel.devices):
            if dev not in by_id:
                issues.append(ConfigIssue(file, f"{where}.select.devices[{i}]", f"unknown device {dev!r}"))
            elif point and by_id[dev].points and point not in by_id[dev].points:
                have = sorted(by_id[dev].points)
                issues.append(
                    ConfigIssue(
                        file, f"{where}.point", f"device {dev!r} has no point {point!r}; it has {have}"
                    )
                )

    for i, p in enumerate(config.packs):
        sel_issues(p.select, f"rules.packs[{i}]", "")
        for r in p.rules:
            point = rule_points(r)
            if point and p.select.devices:
                sel_issues(p.select, f"rules.packs[{i}]({r.id})", point)
    for i, r in enumerate(config.rules):
        sel_issues(r.select, f"rules.rules[{i}]", rule_points(r))
        if not r.select.empty and not any(r.select.matches(d) for d in devices):
            issues.append(ConfigIssue(file, f"rules.rules[{i}].select", f"rule {r.id} selects no device"))
    for i, a in enumerate(config.actions):
        if a.device and a.device not in by_id:
            issues.append(ConfigIssue(file, f"rules.actions[{i}].device", f"unknown device {a.device!r}"))
        elif a.device and by_id[a.device].points and a.point not in by_id[a.device].points:
            issues.append(
                ConfigIssue(
                    file, f"rules.actions[{i}].point", f"device {a.device!r} has no point {a.point!r}"
                )
            )
    issues += check_households(config.households, by_id, file)
    homes = {h.id for h in config.households}
    for i, dev in enumerate(config.away):
        if dev not in by_id and dev not in homes:
            issues.append(ConfigIssue(file, f"rules.away[{i}]", f"unknown device {dev!r}"))
    return issues


def severity_of(rule: RuleConfig) -> Severity:
    """The rule's severity as the API enum."""
    return SEVERITY[rule.severity]
