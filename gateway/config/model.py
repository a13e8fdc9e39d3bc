"""The gateway config file's own sections (identity, control, log) and the validated result."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from pydantic import BaseModel, Field, field_validator, model_validator

from citynerve.gateway.api import (
    ID_PATTERN,
    STRICT,
    BusConfig,
    ConfigIssue,
    DeviceConfig,
    DriverSpec,
    FiniteFloat,
)
from citynerve.gateway.config.identify import IdentifySpec
from citynerve.gateway.timecheck import SITE_TZ

_STRICT = STRICT


class OrgCodes(BaseModel):
    """Administrative codes (GB/T 2260 for city and district; township code for the street)."""

    model_config = _STRICT
    city: str = Field(pattern=r"^[0-9]{6}$", description="6-digit city code, e.g. 310100")
    district: str = Field(pattern=r"^[0-9]{6}$", description="6-digit district/county code, e.g. 310106")
    street: str = Field(pattern=r"^[0-9]{9}([0-9]{3})?$", description="9- or 12-digit street code")


class Identity(BaseModel):
    model_config = _STRICT
    id: str = Field(pattern=ID_PATTERN)
    name: str = ""
    org: OrgCodes
    tz: str = Field(
        default=SITE_TZ,
        description="the site's time zone (IANA name, e.g. Europe/Zurich): meters' clocks carry no UTC "
        "offset and are read in it (the time check of `status`), whatever zone the system is set to; "
        "also the `tz` of every rule, pack, schedule and household in [rules] that does not set its own",
    )

    @field_validator("tz")
    @classmethod
    def _known_zone(cls, v: str) -> str:
        try:
            ZoneInfo(v)
        except (ZoneInfoNotFoundError, ValueError):
            raise ValueError(f"unknown time zone {v!r}: an IANA name such as Asia/Shanghai") from None
        return v


class ControlConfig(BaseModel):
    """The local control socket that `citynerve status` and the diag commands talk to."""

    model_config = _STRICT
    socket: str = "var/citynerve.sock"


class LogConfig(BaseModel):
    model_config = _STRICT
    level: Literal["debug", "info", "warning", "error"] = "info"
    format: Literal["auto", "text", "json"] = Field(
        default="auto", description="auto: readable on a terminal, JSON lines otherwise"
    )


class SecurityConfig(BaseModel):
    """`[security]`: how strict the gateway is about its own secrets."""

    model_config = _STRICT
    allow_insecure_secret_files: bool = Field(
        default=False, description="accept key/password files readable by group or others (a warning)"
    )


class ClockConfig(BaseModel):
    """How the gateway learns whether its wall clock is synchronised (docs/upstream-contract.md)."""

    model_config = _STRICT
    sync: Literal["auto", "kernel", "timesyncd", "file", "synced", "unsynced"] = Field(
        default="auto",
        description="auto: the kernel's NTP status, then systemd-timesyncd's flag; file: synchronised "
        "while `sync_file` exists (chrony, gpsd or a script keeps it); synced: the operator vouches "
        "for the clock (RTC, GNSS); unsynced: treat every stamp as unsynchronised",
    )
    sync_file: str = Field(default="", max_length=4096, description="for sync = file")

    @model_validator(mode="after")
    def _file_needs_a_path(self) -> ClockConfig:
        if self.sync == "file" and not self.sync_file:
            raise ValueError("sync = 'file' needs sync_file (the flag file's path)")
        return self


MAX_PROFILE_POINTS = 1024
"""Most points one profile may hold (the largest shipped profile has 24; a Modbus unit's whole
documented map rarely passes a few hundred). Each device of a profile holds its point table, and
checks walk it: an unbounded table made `config check` take seconds per thousand points."""

DEVICE_ENTRY_KEYS = ("id", "bus", "profile", "address")
"""Keys of a `[[devices]]` entry that a profile's `[device]` table may not set: each names one
device, so a default would give every device of the profile the same id or address (and duplicate
checks judge the entries as written)."""


class Profile(BaseModel):
    """A reusable device type: what the points are and where they live (config/profiles/<id>.toml)."""

    model_config = _STRICT
    id: str = Field(pattern=ID_PATTERN)
    family: str
    device_class: str = Field(
        default="",
        pattern=r"^$|^[a-z0-9][a-z0-9-]*$",
        description="what kind of device (electricity-meter-1ph, water-meter, smoke-detector, ...): "
        "profiles of one class share one point vocabulary, and rule packs name the classes they are for",
    )
    description: str = ""
    vendor: str = ""
    model: str = ""
    source: str = Field(default="", description="where the register map / object table comes from")
    poll_interval_s: FiniteFloat = Field(default=60.0, gt=0, le=86400)
    device: dict[str, Any] = Field(
        default_factory=dict, description="defaults for device fields (never id, bus, profile, address)"
    )
    identify: IdentifySpec = Field(
        default_factory=IdentifySpec,
        description="how commissioning recognises the device: FC 43 objects, registers, DIs, plausible",
    )
    points: dict[str, dict[str, Any]] = Field(min_length=1, max_length=MAX_PROFILE_POINTS)

    @field_validator("points", mode="before")
    @classmethod
    def _few_enough_points(cls, v: Any) -> Any:
        if isinstance(v, dict) and len(v) > MAX_PROFILE_POINTS:
            raise ValueError(f"at most {MAX_PROFILE_POINTS} points in a profile; found {len(v)}")
        return v

    @field_validator("device")
    @classmethod
    def _defaults_only(cls, v: dict[str, Any]) -> dict[str, Any]:
        given = [k for k in DEVICE_ENTRY_KEYS if k in v]
        if given:
            raise ValueError(
                f"defaults of driver fields only: {', '.join(given)} belong in each [[devices]] entry"
            )
        return v

    @model_validator(mode="after")
    def _plausible_points(self) -> Profile:
        unknown = sorted(set(self.identify.plausible) - set(self.points))
        if unknown:
            raise ValueError(f"identify.plausible names points the profile does not have: {unknown}")
        return self


@dataclass(frozen=True, slots=True)
class GatewayConfig:
    """A validated gateway config: every bus, device and point checked against its driver's models."""

    source: Path
    gateway: Identity
    control: ControlConfig
    log: LogConfig
    store: Any  # citynerve.gateway.store.StoreConfig
    upstream: Any | None  # citynerve.gateway.uplink.config.UpstreamConfig
    rules: Any | None  # citynerve.gateway.rules.config.RulesConfig
    web: Any | None  # citynerve.gateway.web.config.WebConfig
    buses: tuple[BusConfig, ...]
    devices: tuple[DeviceConfig, ...]
    profiles: dict[str, Profile] = field(default_factory=dict)
    drivers: dict[str, DriverSpec] = field(default_factory=dict)  # by bus protocol
    security: SecurityConfig = field(default_factory=SecurityConfig)
    warnings: tuple[ConfigIssue, ...] = ()  # allowed but weakening: `config check` shows, `run` logs
    clock: ClockConfig = field(default_factory=ClockConfig)
    destinations: tuple[Any, ...] = ()  # every UpstreamConfig, `upstream` (the first) included
    update: Any | None = None  # citynerve.gateway.release.config.UpdateConfig

    def bus(self, bus_id: str) -> BusConfig:
        for b in self.buses:
            if b.id == bus_id:
                return b
        raise KeyError(bus_id)

    def device(self, device_id: str) -> DeviceConfig:
        for d in self.devices:
            if d.id == device_id:
                return d
        raise KeyError(device_id)

    def devices_on(self, bus_id: str) -> list[DeviceConfig]:
        return [d for d in self.devices if d.bus == bus_id]

    def resolve(self, path: str) -> Path:
        """A path from the config, relative to the config file's folder."""
        p = Path(path)
        return p if p.is_absolute() else (self.source.parent / p)
