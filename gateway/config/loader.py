"""Load a gateway config (TOML) and its device profiles into a validated GatewayConfig.

Validation goes on after the first problem so that `citynerve config check` can list every error at
once, each with the file, the key path and what was expected.
"""

from __future__ import annotations

import contextlib
import json
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

from pydantic import BaseModel, Field, ValidationError

from citynerve.gateway import shipped
from citynerve.gateway.api import (
    BusConfig,
    ConfigError,
    ConfigIssue,
    DeviceConfig,
    DriverSpec,
    GatewayError,
    PointConfig,
    is_id,
)
from citynerve.gateway.config.compact import Shared
from citynerve.gateway.config.contents import content_problems
from citynerve.gateway.config.destinations import destination_issues
from citynerve.gateway.config.drivers import DriverNotFoundError, driver_spec
from citynerve.gateway.config.errors import did_you_mean, issues_from, with_subjects
from citynerve.gateway.config.limits import describe, min_poll_interval_s
from citynerve.gateway.config.model import (
    ClockConfig,
    ControlConfig,
    GatewayConfig,
    Identity,
    LogConfig,
    Profile,
    SecurityConfig,
)
from citynerve.gateway.config.paths import (
    managed_profile_dir,
    profile_search_dirs,
    register_secrets,
    resolve_paths,
)
from citynerve.gateway.config.runnable import baudrate_problem, serial_device, socket_path_problem
from citynerve.gateway.config.secrets import (
    config_file_warning,
    inline_secrets,
    secret_file_problems,
    weak_settings,
)
from citynerve.gateway.config.tomlfile import read_toml
from citynerve.gateway.logs import register_secret

TOP_KEYS = (
    "gateway",
    "control",
    "log",
    "clock",
    "store",
    "upstream",
    "rules",
    "web",
    "update",
    "security",
    "profile_dirs",
    "buses",
    "devices",
)
SHIPPED_PROFILES = shipped.profiles()


def _section_model(name: str) -> type[BaseModel]:
    """The model of an optional section, imported only when the file has that section: a gateway
    without rules or a status page does not carry their code in memory."""
    if name == "store":
        from citynerve.gateway.store import StoreConfig

        return StoreConfig
    if name == "upstream":
        from citynerve.gateway.uplink.config import UpstreamConfig

        return UpstreamConfig
    if name == "rules":
        from citynerve.gateway.rules.config import RulesConfig

        return RulesConfig
    if name == "update":
        from citynerve.gateway.release.config import UpdateConfig

        return UpdateConfig
    if name == "web":
        from citynerve.gateway.web.config import WebConfig

        return WebConfig
    raise KeyError(name)


def _where(name: str, i: int, items: list[Any]) -> str:
    return name if len(items) == 1 else f"{name}[{i}]"


class _Loader:
    def __init__(
        self,
        path: Path,
        allow_insecure_secrets: bool = False,
        text_at: Path | None = None,
        *,
        secrets_must_exist: bool = False,
    ) -> None:
        self.path = path
        self.secrets_must_exist = secrets_must_exist
        self.text_at = text_at or path  # where the text is read (a candidate beside the config)
        self.allow_insecure_secrets = allow_insecure_secrets
        self.warnings: list[ConfigIssue] = []
        self.file = str(path)
        self.issues: list[ConfigIssue] = []
        self.profiles: dict[str, Profile] = {}
        self.profile_files: dict[str, Path] = {}
        self._bad_profiles: set[str] = set()
        self._checked_profile_points: dict[tuple[str, str], bool] = {}
        self.profile_dirs: list[Path] = []
        self._point_tables: dict[tuple[str, type[PointConfig], str], dict[str, PointConfig]] = {}
        self._bad_buses: dict[str, int] = {}  # id -> index of a bus entry that has errors
        self._shared = Shared()  # what validated devices hold once (compact.py)

    def _destinations(self, raw: Any, gateway_id: str | None) -> list[Any]:
        """`[upstream]` (one destination, named "default" unless it says) or `[[upstream]]` (several,
        each with its own `id`, and its own client id on a broker it shares with another)."""
        if raw is None:
            return []
        model = _section_model("upstream")
        if isinstance(raw, dict):
            return [d for d in [self.validate(model, raw, "upstream")] if d is not None]
        if not isinstance(raw, list) or not raw or len(raw) > 16:
            self.issue("upstream", "must be a table or a list of 1 to 16 tables ([[upstream]])")
            return []
        out = [(i, self.validate(model, item, f"upstream[{i}]")) for i, item in enumerate(raw)]
        valid = [(i, d) for i, d in out if d is not None]
        for path, message in destination_issues(valid, gateway_id):
            self.issue(path, message)
        return [d for _, d in valid]

    def issue(self, path: str, message: str, file: str | None = None) -> None:
        item = ConfigIssue(file or self.file, path, message)
        if item not in self.issues:
            self.issues.append(item)

    def validate(self, model: type[BaseModel], data: Any, prefix: str, file: str | None = None) -> Any:
        try:
            return model.model_validate(data)
        except ValidationError as err:
            for i in issues_from(err, file or self.file, prefix, model):
                if i not in self.issues:
                    self.issues.append(i)
            return None
        except Exception as err:  # a driver's validator that breaks on odd input: still a config issue
            self.issue(
                prefix, f"cannot be checked ({type(err).__name__}: {err}); check this entry's keys", file
            )
            return None

    # -- top level -------------------------------------------------------------------------------

    def load(self) -> GatewayConfig:
        raw = read_toml(self.text_at)
        for key in raw:
            if key not in TOP_KEYS:
                self.issue(key, f"unknown key (allowed: {', '.join(TOP_KEYS)})")
        identity = None
        if "gateway" not in raw:
            self.issue("gateway", "required table [gateway] is missing (id, org)")
        else:
            identity = self.validate(Identity, raw["gateway"], "gateway")
        control = self.validate(ControlConfig, raw.get("control", {}), "control")
        log = self.validate(LogConfig, raw.get("log", {}), "log")
        clock = self.validate(ClockConfig, raw.get("clock", {}), "clock")
        store = self.validate(_section_model("store"), raw.get("store", {}), "store")
        gateway_id = identity.id if identity is not None else None
        destinations = self._destinations(raw.get("upstream"), gateway_id)
        rules = None
        if "rules" in raw:
            from citynerve.gateway.rules.site_zone import with_site_zone

            raw_rules = raw["rules"] if identity is None else with_site_zone(raw["rules"], identity.tz)
            rules = self.validate(_section_model("rules"), raw_rules, "rules")
        web = None
        if "web" in raw:
            web = self.validate(_section_model("web"), raw["web"], "web")
        update = None
        if "update" in raw:
            update = self.validate(_section_model("update"), raw["update"], "update")
        security = self.validate(SecurityConfig, raw.get("security", {}), "security")
        self.profile_dirs = self._profile_dirs(raw.get("profile_dirs", []))
        buses, specs = self._buses(raw.get("buses", []))
        devices = self._devices(raw.get("devices", []), buses, specs)
        managed = managed_profile_dir(self.path)
        if managed.is_dir():  # profiles the platform sent are checked even when no device uses them
            for f in sorted(managed.glob("*.toml")):
                self._profile(f.stem, f"profiles.{f.stem}")
        classes = {pid: prof.device_class for pid, prof in self.profiles.items()}
        if rules is not None:
            from citynerve.gateway.rules import check_rules

            found = check_rules(rules, devices, self.file, classes)
            self.issues.extend(i for i in found if i not in self.issues)
        if devices and ("rules" not in raw or rules is not None):
            # Allowed, but nobody is warned of a fire: a gateway with devices and no alarms says so.
            from citynerve.gateway.rules.coverage import coverage_warnings

            self.warnings.extend(coverage_warnings(rules, devices, classes, self.file))
        if self.issues:
            raise ConfigError(with_subjects(self.issues, raw, self.file))
        assert identity is not None and control is not None and log is not None
        assert security is not None and clock is not None
        # Paths in the file are relative to the file's folder, wherever the gateway is started from.
        store = store.model_copy(update={"path": str(self._resolve(store.path))})
        control = control.model_copy(update={"socket": str(self._resolve(control.socket))})
        if (problem := socket_path_problem(control.socket)) is not None:
            # A warning: every other command reads this config (an example checked where it is
            # installed, a register imported); `citynerve run` refuses it before binding.
            note = f"warning: {problem}; run refuses it"
            self.warnings.append(ConfigIssue(self.file, "control.socket", note))
        if clock.sync_file:
            clock = clock.model_copy(update={"sync_file": str(self._resolve(clock.sync_file))})
        base = self.path.resolve().parent
        memo: dict[int, Any] = {}  # devices of one profile share their point table: walked once
        destinations = [resolve_paths(d, base, memo) for d in destinations]
        upstream = destinations[0] if destinations else None
        web = resolve_paths(web, base, memo) if web is not None else None
        update = resolve_paths(update, base, memo) if update is not None else None
        devices = [resolve_paths(d, base, memo) for d in devices]
        self._check_secret_files(
            [
                *((_where("upstream", i, destinations), d) for i, d in enumerate(destinations)),
                ("web", web),
                *((f"devices[{i}]", d) for i, d in enumerate(devices)),
            ],
            security.allow_insecure_secret_files or self.allow_insecure_secrets,
        )
        for i, d in enumerate(destinations):
            self.warnings.extend(weak_settings(d, self.file, _where("upstream", i, destinations)))
        holders = [w for i, d in enumerate(devices) for w in inline_secrets(d, f"devices[{i}]")]
        if (warning := config_file_warning(self.path, holders)) is not None:
            self.warnings.append(warning)
        if self.issues:
            raise ConfigError(with_subjects(self.issues, raw, self.file))
        seen: dict[int, Any] = {}
        for model in (*destinations, web, *devices):
            if model is not None:
                register_secrets(model, seen)
        for d in destinations:
            # The broker password is read at connect time; learn it now so no log line can show it.
            with contextlib.suppress(GatewayError):
                password = d.password()
                if password is not None:
                    register_secret(password.get_secret_value())
        return GatewayConfig(
            source=self.path.resolve(),
            gateway=identity,
            control=control,
            log=log,
            store=store,
            upstream=upstream,
            destinations=tuple(destinations),
            rules=rules,
            web=web,
            buses=tuple(buses.values()),
            devices=tuple(devices),
            profiles=dict(self.profiles),
            drivers={b.protocol: specs[b.id] for b in buses.values()},
            # The effective setting, flag included, so that a reload judges files the same way.
            security=security.model_copy(
                update={
                    "allow_insecure_secret_files": security.allow_insecure_secret_files
                    or self.allow_insecure_secrets
                }
            ),
            warnings=tuple(with_subjects(self.warnings, raw, self.file)),
            clock=clock,
            update=update,
        )

    def _check_secret_files(self, sections: list[tuple[str, BaseModel | None]], allow: bool) -> None:
        """Existence and mode, then the contents as `run` reads them (of files with neither
        problem); an error for `config check`, else a warning like a missing file."""
        problems = list(
            secret_file_problems(sections, allow_insecure=allow, must_exist=self.secrets_must_exist)
        )
        seen = {where for where, _, _ in problems}
        contents = [(w, p, self.secrets_must_exist) for w, p in content_problems(sections) if w not in seen]
        for where, problem, is_error in problems + contents:
            if is_error:
                self.issue(where, problem)
            else:
                self.warnings.append(ConfigIssue(self.file, where, f"warning: {problem}"))

    def _resolve(self, path: str) -> Path:
        p = Path(path)
        return p if p.is_absolute() else self.path.resolve().parent / p

    def _profile_dirs(self, extra: Any) -> list[Path]:
        if not isinstance(extra, list) or not all(isinstance(x, str) for x in extra):
            self.issue("profile_dirs", "expected a list of folder paths")
            extra = []
        return profile_search_dirs(self.path, extra)

    # -- buses -----------------------------------------------------------------------------------

    def _buses(self, raw: Any) -> tuple[dict[str, BusConfig], dict[str, DriverSpec]]:
        buses: dict[str, BusConfig] = {}
        specs: dict[str, DriverSpec] = {}
        ports: dict[str, str] = {}  # serial device -> the bus that opens it (it locks it)
        if not isinstance(raw, list):
            self.issue("buses", "expected an array of tables ([[buses]])")
            return buses, specs
        for i, item in enumerate(raw):
            where = f"buses[{i}]"
            if not isinstance(item, dict):
                self.issue(where, "expected a table")
                continue
            spec = self._spec(item.get("protocol"), f"{where}.protocol")
            bus = self.validate(spec.bus_model if spec else BusConfig, item, where)
            if bus is None or spec is None:
                if isinstance(item.get("id"), str):
                    self._bad_buses.setdefault(item["id"], i)
                continue
            if bus.id in buses:
                self.issue(f"{where}.id", f"duplicate bus id {bus.id!r}")
                continue
            buses[bus.id] = bus
            specs[bus.id] = spec
            if (odd := baudrate_problem(bus)) is not None:
                self.warnings.append(ConfigIssue(self.file, f"{where}.baudrate", f"warning: {odd}"))
            if (device := serial_device(bus)) is not None and ports.setdefault(device, bus.id) != bus.id:
                self.issue(
                    f"{where}.port", f"already used by bus {ports[device]!r} (a serial port opens once)"
                )
        return buses, specs

    def _spec(self, protocol: Any, where: str) -> DriverSpec | None:
        if not isinstance(protocol, str):
            self.issue(where, "required key is missing" if protocol is None else "expected a protocol name")
            return None
        try:
            return driver_spec(protocol)
        except DriverNotFoundError as err:
            self.issue(where, err.reason)
            return None

    # -- profiles --------------------------------------------------------------------------------

    def _profile(self, profile_id: Any, where: str) -> Profile | None:
        if not isinstance(profile_id, str) or not profile_id:
            self.issue(where, "required key is missing" if profile_id is None else "expected a profile id")
            return None
        if not is_id(profile_id):
            # The id becomes a file name (<id>.toml): never let it climb out of the profile folders.
            self.issue(
                where,
                f"expected a profile id (letters, digits, `_ . : -`, at most 64, no `/` or `..`); "
                f"found {profile_id[:64]!r}",
            )
            return None
        if profile_id in self.profiles:
            return self.profiles[profile_id]
        if profile_id in self._bad_profiles:
            return None
        for d in self.profile_dirs:
            f = d / f"{profile_id}.toml"
            if f.is_file():
                return self._read_profile(profile_id, f)
        self._bad_profiles.add(profile_id)
        searched = ", ".join(str(d) for d in self.profile_dirs)
        known = {f.stem for d in self.profile_dirs if d.is_dir() for f in d.glob("*.toml")}
        hint = did_you_mean(profile_id, sorted(known))
        self.issue(where, f"no profile {profile_id!r}{hint}; looked for {profile_id}.toml in {searched}")
        return None

    def _read_profile(self, profile_id: str, f: Path) -> Profile | None:
        try:
            raw = read_toml(f)
        except ConfigError as err:
            self.issues.extend(err.issues)
            self._bad_profiles.add(profile_id)
            return None
        profile = self.validate(Profile, raw, "", file=str(f))
        if profile is not None and profile.id != profile_id:
            self.issue("id", f"expected {profile_id!r} (the file name), found {profile.id!r}", str(f))
            profile = None
        if profile is None:
            self._bad_profiles.add(profile_id)
            return None
        self.profiles[profile_id] = profile
        self.profile_files[profile_id] = f
        return profile

    def _profile_point_ok(self, profile: Profile, name: str, spec: DriverSpec) -> bool:
        key = (profile.id, name)
        if key not in self._checked_profile_points:
            data = {**profile.points[name], "name": name}
            ok = self.validate(spec.point_model, data, f"points.{name}", str(self.profile_files[profile.id]))
            self._checked_profile_points[key] = ok is not None
        return self._checked_profile_points[key]

    # -- devices ---------------------------------------------------------------------------------

    def _devices(
        self, raw: Any, buses: dict[str, BusConfig], specs: dict[str, DriverSpec]
    ) -> list[DeviceConfig]:
        devices: list[DeviceConfig] = []
        if not isinstance(raw, list):
            self.issue("devices", "expected an array of tables ([[devices]])")
            return devices
        seen: dict[str, int] = {}
        addresses: dict[tuple[str, str, str], int] = {}
        for i, item in enumerate(raw):
            where = f"devices[{i}]"
            if not isinstance(item, dict):
                self.issue(where, "expected a table")
                continue
            # Duplicates are judged on the raw entries, so an invalid first entry still counts.
            dev_id = item.get("id")
            if isinstance(dev_id, str) and dev_id in seen:
                self.issue(f"{where}.id", f"duplicate device id {dev_id!r} (also devices[{seen[dev_id]}])")
                continue
            if isinstance(dev_id, str):
                seen[dev_id] = i
            addr = item.get("address")
            if isinstance(item.get("bus"), str) and isinstance(addr, int | str):
                # Instances behind one unit id (a DALI gateway's ballasts) differ by register_base;
                # an address counts as its driver reads it ('a4c138000001' is A4:C1:38:00:00:01).
                base, spec = item.get("register_base", 0), specs.get(item["bus"])
                read_as = spec.address_key(addr) if spec else str(addr).lower()
                addr_key = (item["bus"], read_as, str(base).lower())
                if addr_key in addresses:
                    first = addresses[addr_key]
                    msg = f"address {addr!r} is already used on bus {item['bus']!r} by devices[{first}]"
                    if base:
                        msg += f" with register_base {base}"
                    self.issue(f"{where}.address", msg)
                addresses.setdefault(addr_key, i)
            device = self._device(item, where, buses, specs)
            if device is None:
                continue
            self._check_writable_overlap(device, where)
            self._check_poll_intervals(device, buses[device.bus], where)
            devices.append(device)
        return devices

    def _device(
        self, item: dict[str, Any], where: str, buses: dict[str, BusConfig], specs: dict[str, DriverSpec]
    ) -> DeviceConfig | None:
        bus_id = item.get("bus")
        spec = specs.get(bus_id) if isinstance(bus_id, str) else None
        if bus_id is None:
            self.issue(f"{where}.bus", "required key is missing")
        elif isinstance(bus_id, str) and bus_id in self._bad_buses:
            self.issue(f"{where}.bus", f"bus {bus_id!r} has errors (see buses[{self._bad_buses[bus_id]}])")
        elif not isinstance(bus_id, str) or bus_id not in buses:
            known = ", ".join(buses) or "none defined"
            self.issue(f"{where}.bus", f"no bus {bus_id!r} (buses: {known})")
        profile = self._profile(item.get("profile"), f"{where}.profile")
        if profile is not None and spec is not None and profile.family != spec.family:
            self.issue(
                f"{where}.profile",
                f"profile {profile.id!r} is for {profile.family} devices, "
                f"but bus {bus_id!r} speaks {spec.protocol} ({spec.family})",
            )
            spec = None
        points = self._points(item.get("points", {}), where, profile, spec)
        data = {k: v for k, v in item.items() if k != "points"}
        if profile is not None:
            # The profile's [device] defaults are driver fields: only a known driver can judge them.
            data = {**profile.device, **data} if spec is not None else data
            data.setdefault("poll_interval_s", profile.poll_interval_s)
        model: type[DeviceConfig] = spec.device_model if spec else DeviceConfig
        if spec is None or points is None:
            # Still report the device's own problems, then give up on it.
            self.validate(_without_points(model), data, where)
            return None
        device: DeviceConfig | None = self.validate(model, {**data, "points": points}, where)
        return self._shared.device(device, points) if device is not None else None

    def _points(
        self, overrides: Any, where: str, profile: Profile | None, spec: DriverSpec | None
    ) -> dict[str, PointConfig] | None:
        if not isinstance(overrides, dict) or not all(isinstance(v, dict) for v in overrides.values()):
            self.issue(f"{where}.points", "expected tables of point overrides ([devices.points.<name>])")
            return None
        if profile is None or spec is None:
            return None
        for name in overrides:
            if name not in profile.points:
                known = ", ".join(profile.points)
                self.issue(
                    f"{where}.points.{name}", f"profile {profile.id!r} has no such point (points: {known})"
                )
        # Devices of one profile with the same overrides share one (frozen) point table: a gateway
        # with a thousand meters of a kind holds their point configs once.
        cache_key = (profile.id, spec.point_model, json.dumps(overrides, sort_keys=True, default=str))
        if cache_key in self._point_tables:
            return self._point_tables[cache_key]
        points: dict[str, PointConfig] = {}
        ok = True
        for name, base in profile.points.items():
            if not self._profile_point_ok(profile, name, spec):
                ok = False
                continue
            point = self.validate(
                spec.point_model, {**base, **overrides.get(name, {}), "name": name}, f"{where}.points.{name}"
            )
            if point is None:
                ok = False
            else:
                points[name] = point
        result = points if ok and not set(overrides) - set(profile.points) else None
        if result is not None:
            self._point_tables[cache_key] = result
        return result

    def _check_poll_intervals(self, device: DeviceConfig, bus: BusConfig, where: str) -> None:
        """No device or point polled faster than its bus type can keep up with (limits.py)."""
        floor = bus.min_poll_interval_s or min_poll_interval_s(bus)
        why = (
            f"bus {bus.id!r} sets min_poll_interval_s = {floor:g}"
            if bus.min_poll_interval_s
            else f"the minimum for {describe(bus)}; a bus's min_poll_interval_s can lower it"
        )
        checks = [("poll_interval_s", device.poll_interval_s)]
        checks += [
            (f"points.{n}.poll_interval_s", p.poll_interval_s) for n, p in device.points.items() if p.enabled
        ]
        for key, interval in checks:
            if interval is not None and interval < floor:
                self.issue(f"{where}.{key}", f"expected at least {floor:g} s ({why}); found {interval:g}")

    def _check_writable_overlap(self, device: DeviceConfig, where: str) -> None:
        """Two writable points that share a register (or coil) would fight: an error. Sorted and
        swept (n log n): each span is compared with the one reaching furthest before it."""
        spans: list[tuple[str, int, int, str]] = []
        for name, point in device.points.items():
            span_fn: Callable[[], tuple[str, int, int] | None] | None = getattr(point, "span", None)
            if point.writable and span_fn is not None and (span := span_fn()) is not None:
                spans.append((*span, name))
        spans.sort()
        reach: tuple[str, int, int, str] | None = None  # of this space, the span ending last so far
        for space, first, last, name in spans:
            if reach is not None and reach[0] == space and first <= reach[2]:
                self.issue(
                    f"{where}.points.{name}",
                    f"writable point overlaps writable point {reach[3]!r} ({space} {first}..{last} "
                    f"vs {reach[1]}..{reach[2]})",
                )
            if reach is None or reach[0] != space or last > reach[2]:
                reach = (space, first, last, name)


def _without_points(model: type[DeviceConfig]) -> type[BaseModel]:
    """The device model with `points` made optional-and-ignored, to report a device's other errors."""
    from pydantic import create_model

    # An empty table, not None: the driver's own validators may walk the points.
    return create_model(
        f"{model.__name__}NoPoints", __base__=model, points=(Any, Field(default_factory=dict))
    )


def load_config(
    path: str | os.PathLike[str],
    *,
    allow_insecure_secrets: bool = False,
    as_path: str | os.PathLike[str] | None = None,
    secrets_must_exist: bool = False,
) -> GatewayConfig:
    """Load and validate a gateway config. Raises ConfigError listing every problem found.

    `allow_insecure_secrets` (the CLI's --allow-insecure-secrets) turns secret files that group or
    others may read from errors into warnings, like `[security] allow_insecure_secret_files`.
    `as_path`: read the text at `path` as if it were the config at `as_path` (its managed profiles,
    relative paths and issues are those of `as_path`): a candidate edit checked before it replaces
    the config. `secrets_must_exist` (`config check`): a secret file that does not exist or cannot
    be read is an error; otherwise a warning (`run` starts without it and logs it)."""
    if as_path is None:
        return _Loader(Path(path), allow_insecure_secrets, secrets_must_exist=secrets_must_exist).load()
    return _Loader(
        Path(as_path), allow_insecure_secrets, text_at=Path(path), secrets_must_exist=secrets_must_exist
    ).load()
