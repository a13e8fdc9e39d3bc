"""The rule kinds of `[rules]` (threshold, rate, missing, offline, boolean, consumption, composite,
anomaly, routine): their pydantic models and the `RuleConfig` union (moved from rules/config.py)."""

from __future__ import annotations

import zoneinfo
from typing import Annotated, Literal

from pydantic import BaseModel, Field, TypeAdapter, model_validator

from citynerve.gateway.api import STRICT, DeviceConfig, Severity
from citynerve.gateway.rules.flapping import FLAP_LIMIT, FLAP_SETTLE_S, FLAP_WINDOW_S
from citynerve.gateway.rules.numbers import Count, Number

_STRICT = STRICT
RULE_ID = r"^[A-Za-z0-9][A-Za-z0-9_.:-]{0,95}$"
# The `rule` the gateway's other event sources stamp on their alarms (bus supervisor, offline
# tracking, pipeline, remote config, credentials, certificates, operator, update, fire panels,
# BTHome nodes): a configured rule of the same id would make those alarms the engine's (the
# registry clears them at a restart when the engine does not hold them). tests/rules/test_config.py
# checks every source's constant is here.
RESERVED_RULE_IDS = frozenset(
    {"bus.offline", "bus.supervisor", "pipeline.rules", "config", "credentials", "certificates"}
    | {"operator", "update"}
)
RESERVED_RULE_PREFIXES = ("panel:", "bthome.")
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
    hold_s: Number = Field(default=0.0, ge=0, le=7 * 86400, description="condition held before raising")
    clear_hold_s: Number = Field(default=0.0, ge=0, le=7 * 86400, description="clear held before clearing")
    message: str = ""
    suppress_during: tuple[str, ...] = Field(default=(), description="schedule ids (quiet hours)")
    suppress_when_away: bool = False
    escalate: tuple[str, ...] = Field(default=(), description="contact ids, in escalation order")
    flap_limit: Count = Field(
        default=FLAP_LIMIT,
        ge=0,
        le=1000,
        description="more raises and clears than this within `flap_window_s`: flapping (alarm held "
        "raised, one `input_flapping` event; docs/rules.md); 0 = off",
    )
    flap_window_s: Number = Field(
        default=FLAP_WINDOW_S,
        gt=0,
        le=86400,
        description="the sliding window `flap_limit` counts in, seconds",
    )
    flap_settle_s: Number = Field(
        default=FLAP_SETTLE_S,
        gt=0,
        le=86400,
        description="a flapping alarm clears once its input stayed clear this long, seconds",
    )
    enabled: bool = True

    @property
    def event_kind(self) -> str:
        return self.event or self.id.rsplit(".", 1)[-1]


class ThresholdRule(_RuleBase):
    """Raise when the value is above `above` or below `below` (a band if both); clear past hysteresis."""

    kind: Literal["threshold"]
    point: str
    above: Number | None = None
    below: Number | None = None
    hysteresis: Number = Field(default=0.0, ge=0)

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
    max_change: Number = Field(gt=0)
    window_s: Number = Field(gt=0, le=86400)
    direction: Literal["rising", "falling", "both"] = "both"


class MissingRule(_RuleBase):
    """Raise when no good reading of `point` (any point if empty) arrived for `after_s`."""

    kind: Literal["missing"]
    point: str = ""
    after_s: Number = Field(gt=0, le=30 * 86400)


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
    window_s: Number = Field(default=43200.0, gt=0, le=7 * 86400)
    bin_s: Number = Field(default=900.0, gt=0, le=86400, description="resolution of sliding windows")
    below: Number | None = Field(default=None, ge=0)
    above: Number | None = Field(default=None, ge=0)
    slot_s: Number = Field(default=1800.0, gt=0, le=86400)
    slots: Count = Field(default=48, ge=1, le=1000)
    min_per_slot: Number = Field(default=0.0, ge=0)
    rollover_at: Number | None = Field(default=None, gt=0)
    max_step: Number | None = Field(default=None, gt=0)
    gap_s: Number = Field(
        default=7200.0,
        gt=0,
        description="readings further apart than this, seconds: the use between them is unknown",
    )
    stale_s: Number = Field(default=7200.0, gt=0)
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
    """Combine other rules of the same device: all / any active, or raised in sequence within a time;
    or `coincidence`: a device's alarm confirmed by other devices of its area (coincidence.py);
    or `unwanted`: a device whose alarms no other device of its area confirms (unwanted.py)."""

    kind: Literal["composite"]
    mode: Literal["all", "any", "sequence", "coincidence", "unwanted"] = Field(
        description="all or any of the rules active, raised in sequence, in coincidence on `count` "
        "devices of one area, or `count` unwanted alarms of a device (none of its area's confirmed them)"
    )
    of: tuple[str, ...] = Field(min_length=1)
    within_s: Number = Field(
        default=60.0,
        gt=0,
        description="sequence mode: the rules must raise within this many seconds; coincidence: the "
        "area's alarms within this many seconds of each other",
    )
    household: bool = Field(
        default=False,
        description="children may be on any device sharing the device's `household:<id>` tag "
        "(a bed sensor and the same flat's water meter: one 'check on this person' alarm)",
    )
    count: Count = Field(
        default=2,
        ge=2,
        le=64,
        description="coincidence: devices of the area in alarm (or raised within `within_s`) that confirm; "
        "unwanted: alarms of the device, each within `quiet_s` of the last, that no other device of its "
        "area confirmed within `within_s`",
    )
    alone_s: Number | None = Field(
        default=None,
        gt=0,
        le=7 * 86400,
        description="coincidence: a device's own alarm lasting this long confirms without a second device",
    )
    solo_s: Number | None = Field(
        default=None,
        gt=0,
        le=7 * 86400,
        description="coincidence: for a device with no other device of its area to confirm it (no "
        "`<group>:` tag shared), its own alarm lasting this long confirms (default: `alone_s`)",
    )
    confirmed_by: tuple[str, ...] = Field(
        default=(),
        description="coincidence: the rules whose alarms on the area's other devices confirm (default: "
        "`of`); a fire panel's `fire` confirmed by a detector's `smoke_confirmed`",
    )
    alone_unless: tuple[str, ...] = Field(
        default=(),
        description="coincidence: while one of these rules is active on the device (its `unwanted` "
        "alarms), its alarm lasting `alone_s` does not confirm; a second device still does",
    )
    relays: tuple[str, ...] = Field(
        default=(),
        description="coincidence: the rules of the area's other devices this device relays (a fire "
        "panel: its building's detectors); while its alarm follows one of them (raised within `within_s` "
        "before it or during it), lasting `alone_s` does not confirm: `confirmed_by` decides",
    )
    quiet_s: Number | None = Field(
        default=None,
        gt=0,
        le=366 * 86400,
        description="unwanted: clears after this long without an unwanted alarm; `count` unwanted alarms "
        "each within this long of the last raise it",
    )
    group: str = Field(
        default="zone",
        pattern=r"^[a-z][a-z0-9_-]{0,31}$",
        description="coincidence, unwanted: devices sharing a `<group>:<id>` tag form an area (a flat, "
        "a zone)",
    )

    @model_validator(mode="after")
    def _children(self) -> CompositeRule:
        area_modes = ("coincidence", "unwanted")
        if self.mode not in area_modes and len(self.of) < 2:
            raise ValueError(f"mode {self.mode!r} combines at least 2 rules in `of`")
        if self.confirmed_by and self.mode not in area_modes:
            raise ValueError(f"`confirmed_by` is for mode 'coincidence' or 'unwanted', not {self.mode!r}")
        if (self.alone_unless or self.relays) and self.mode != "coincidence":
            raise ValueError(f"`alone_unless` and `relays` are for mode 'coincidence', not {self.mode!r}")
        if (self.quiet_s is None) != (self.mode != "unwanted"):
            raise ValueError("mode 'unwanted' needs `quiet_s`; no other mode takes it")
        return self


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
    alpha: Number = Field(default=0.05, gt=0, le=1)
    z: Number = Field(default=5.0, gt=0)
    warmup: Count = Field(default=20, ge=1)
    direction: Literal["high", "low", "both"] = "high"
    min_scale: Number = Field(default=0.0, ge=0)
    min_value: Number = Field(default=float("-inf"))
    cumulative: bool = False
    profile: bool = False
    slot_s: Number = Field(default=1800.0, gt=0, le=86400)
    hours: tuple[Count, Count] | None = Field(default=None, description="[start, end) local hours scored")
    rollover_at: Number | None = Field(default=None, gt=0)
    max_step: Number | None = Field(default=None, gt=0)
    gap_s: Number = Field(
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
    peers_quantile: Number = Field(
        default=0.5,
        ge=0,
        le=1,
        description="with `peers`: the quantile of the other members' uses a slot is compared with "
        "(0.5 the median; 0.75 the use a quarter of the group exceeds)",
    )
    base_s: Number = Field(
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
    up_s: Number = Field(
        default=600.0, ge=0, le=86400, description="up_by: out of the active state at least this long"
    )
    start: str = Field(default="22:00", pattern=_HHMM)
    end: str = Field(default="06:00", pattern=_HHMM)
    away_s: Number = Field(
        default=2400.0, gt=0, le=86400, description="back_within: back in the active state within this"
    )
    stale_s: Number = Field(default=1800.0, gt=0, le=7 * 86400)
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


def _check_tz(tz: str) -> None:
    try:
        zoneinfo.ZoneInfo(tz)
    except (zoneinfo.ZoneInfoNotFoundError, ValueError) as err:
        raise ValueError(f"unknown time zone {tz!r}") from err


def rule_points(rule: RuleConfig) -> str:
    """The point a rule reads, or "" for device-level rules (offline, composite, missing any)."""
    return getattr(rule, "point", "")


def severity_of(rule: RuleConfig) -> Severity:
    """The rule's severity as the API enum."""
    return SEVERITY[rule.severity]
