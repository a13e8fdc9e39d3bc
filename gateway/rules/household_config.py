"""`[[rules.households]]`: one elderly resident living alone, seen by a bed-foot sensor and the flat's
water meter (and, as a third signal, the flat's door contact and a PIR), and the settings of their
"check on this person" alarm (gateway/rules/household.py).

Every time of day is the resident's own (set with the family or the community worker); the
defaults are local defaults an installer must confirm (docs/rules.md, "Households").
"""

from __future__ import annotations

import zoneinfo
from collections.abc import Collection, Mapping, Sequence
from typing import Literal

from pydantic import BaseModel, Field, model_validator

from citynerve.gateway.api import STRICT, ConfigIssue, DeviceConfig
from citynerve.gateway.rules.numbers import Number

_HHMM = r"^([01][0-9]|2[0-3]):[0-5][0-9]$"
_HHMM_OR_OFF = r"^(([01][0-9]|2[0-3]):[0-5][0-9])?$"
_ID = r"^[A-Za-z0-9][A-Za-z0-9_.:-]{0,95}$"


def minutes(hhmm: str) -> int:
    """Minutes after local midnight of an HH:MM time."""
    h, m = hhmm.split(":")
    return int(h) * 60 + int(m)


class HouseholdConfig(BaseModel):
    """One household: its bed-foot sensor, its water meter, optionally its door contact and PIR, and
    the resident's own times."""

    model_config = STRICT

    id: str = Field(pattern=_ID, description="household id (a flat); the alarm's rule is `household.<id>`")
    bed: str = Field(min_length=1, description="device id of the bed-foot sensor")
    water: str = Field(default="", description="device id of the flat's water meter; empty: bed only")
    bed_point: str = Field(default="in_bed", min_length=1, description="the bed sensor's in-bed point")
    water_point: str = Field(
        default="flow_total", min_length=1, description="the meter's cumulative total (m3)"
    )
    door: str = Field(default="", description="device id of the flat's door contact; empty: no door signal")
    door_point: str = Field(default="door_open", min_length=1, description="the door contact's open point")
    motion: str = Field(
        default="", description="device id of the PIR in the living room / hallway; empty: no motion signal"
    )
    motion_point: str = Field(default="motion", min_length=1, description="the PIR's motion point")
    motion_quiet_s: Number = Field(
        default=600.0,
        gt=0,
        le=86400,
        description="door closed and no motion, water use or bed since for this long: the resident is out",
    )
    still_s: Number = Field(
        default=7200.0,
        gt=0,
        le=86400,
        description="at home (door: not out), out of bed, no motion and no water use this long: raise",
    )
    home_by: str = Field(
        default="",
        pattern=_HHMM_OR_OFF,
        description="out (door and PIR) at this time or later, until `day_starts`: raise; empty: off",
    )
    node_stale_s: Number = Field(
        default=3600.0,
        gt=0,
        le=86400,
        description="door or PIR node silent this long: its signal is unknown; a maintenance event is raised",
    )
    tz: str = "Asia/Shanghai"
    night_start: str = Field(
        default="22:30", pattern=_HHMM, description="the resident's night begins (after their usual bedtime)"
    )
    night_end: str = Field(
        default="05:00", pattern=_HHMM, description="the night ends (before their earliest usual wake time)"
    )
    night_out_s: Number = Field(
        default=2400.0, gt=0, le=86400, description="out of bed at night this long with no water use: raise"
    )
    night_long_s: Number = Field(
        default=10800.0,
        gt=0,
        le=86400,
        description="out of bed at night this long and no water use in the last `night_out_s`: raise",
    )
    day_starts: str = Field(default="04:00", pattern=_HHMM, description="the resident's day may start from")
    up_by: str = Field(
        default="09:00", pattern=_HHMM, description="out of bed by this time (own wake + margin)"
    )
    up_s: Number = Field(
        default=600.0, ge=0, le=86400, description="an absence this long counts as getting up"
    )
    morning_m3: Number = Field(
        default=0.02,
        ge=0,
        description="water used since `day_starts` that shows the morning routine (the resident is up)",
    )
    quiet_s: Number = Field(
        default=43200.0,
        gt=0,
        le=7 * 86400,
        description="out of bed with no water use this long: raise (the published 12 h no-use window)",
    )
    activity_m3: Number = Field(
        default=0.002, gt=0, description="use between two reads that shows someone using water"
    )
    running_m3_h: Number = Field(
        default=0.1, gt=0, description="flow while the resident is in bed that is a tap left running"
    )
    settle_s: Number = Field(
        default=600.0, ge=0, le=86400, description="in bed this long before water use counts as running"
    )
    bed_stale_s: Number = Field(
        default=1800.0, gt=0, le=86400, description="a bed state older than this is unknown"
    )
    water_stale_s: Number = Field(
        default=2700.0, gt=0, le=86400, description="no meter read this long: water use unknown"
    )
    rollover_m3: Number = Field(default=100000.0, gt=0, description="the meter's register wraps here")
    max_step_m3: Number = Field(
        default=5.0, gt=0, description="a larger rise between two reads is a meter change, not use"
    )
    severity: Literal["info", "warning", "minor", "major", "critical"] = "critical"
    escalate: tuple[str, ...] = Field(default=(), description="contact ids, in escalation order")
    suppress_when_away: bool = Field(
        default=True, description="not raised while the household, its bed or its meter is marked away"
    )
    enabled: bool = True

    @model_validator(mode="after")
    def _shape(self) -> HouseholdConfig:
        try:
            zoneinfo.ZoneInfo(self.tz)
        except (zoneinfo.ZoneInfoNotFoundError, ValueError) as err:
            raise ValueError(f"unknown time zone {self.tz!r}") from err
        if minutes(self.day_starts) >= minutes(self.up_by):
            raise ValueError(f"`day_starts` ({self.day_starts}) must be earlier than `up_by` ({self.up_by})")
        if self.night_long_s < self.night_out_s:
            raise ValueError("`night_long_s` must be at least `night_out_s`")
        named = [
            (k, v)
            for k, v in (
                ("bed", self.bed),
                ("water", self.water),
                ("door", self.door),
                ("motion", self.motion),
            )
            if v
        ]
        for i, (k, v) in enumerate(named):
            for k2, v2 in named[:i]:
                if v == v2:
                    raise ValueError(f"`{k2}` and `{k}` must be different devices")
        return self

    @property
    def rule_id(self) -> str:
        """The rule id its events carry."""
        return f"household.{self.id}"


def household_problems(
    households: Sequence[HouseholdConfig], rule_ids: Collection[str], contacts: Collection[str]
) -> list[str]:
    """What `RulesConfig` can check without the devices: unique ids, known contacts."""
    problems: list[str] = []
    ids = [h.id for h in households]
    for i, h in enumerate(households):
        if ids.count(h.id) > 1:
            problems.append(f"households[{i}]: duplicate household id {h.id!r}")
        if h.rule_id in rule_ids:
            problems.append(f"households[{i}]: rule id {h.rule_id} is taken by a rule")
        problems += [f"households[{i}]: unknown contact {c}" for c in h.escalate if c not in contacts]
    return problems


def check_households(
    households: Sequence[HouseholdConfig], by_id: Mapping[str, DeviceConfig], file: str = ""
) -> list[ConfigIssue]:
    """The bed sensor, the meter, the door contact and the PIR must be configured devices with the
    named points."""
    issues: list[ConfigIssue] = []
    for i, h in enumerate(households):
        for key, dev_id, point in (
            ("bed", h.bed, h.bed_point),
            ("water", h.water, h.water_point),
            ("door", h.door, h.door_point),
            ("motion", h.motion, h.motion_point),
        ):
            if not dev_id:
                continue
            where = f"rules.households[{i}].{key}"
            dev = by_id.get(dev_id)
            if dev is None:
                issues.append(ConfigIssue(file, where, f"unknown device {dev_id!r}"))
            elif dev.points and point not in dev.points:
                have = sorted(dev.points)
                issues.append(
                    ConfigIssue(file, where, f"device {dev_id!r} has no point {point!r}; it has {have}")
                )
    return issues
