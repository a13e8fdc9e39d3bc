"""The device profiles an installer can choose from, by family, for a given config file."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from citynerve.gateway.api import ConfigError
from citynerve.gateway.config import Profile, read_toml
from citynerve.gateway.config.identify import IdentifySpec
from citynerve.gateway.config.loader import profile_search_dirs


@dataclass(frozen=True, slots=True)
class ProfileInfo:
    """One usable profile: what the installer sees when choosing a device type."""

    id: str
    family: str
    description: str
    vendor: str
    model: str
    path: Path
    points: tuple[str, ...]
    device_defaults: dict[str, Any] = field(default_factory=dict)  # the profile's [device] table
    objects: tuple[str, ...] = ()  # BTHome object names of its points (to match what a node sends)
    identify: IdentifySpec = field(default_factory=IdentifySpec)  # the profile's [identify] table
    raw_points: dict[str, dict[str, Any]] = field(default_factory=dict)  # [points.*] as written
    device_class: str = ""


def profile_dirs(config_path: Path, raw_profile_dirs: Any = ()) -> list[Path]:
    """The folders the config loader searches, in its order (the managed folder first): the
    loader's own function, so the two cannot disagree."""
    extra = [str(x) for x in raw_profile_dirs] if isinstance(raw_profile_dirs, list) else []
    return profile_search_dirs(config_path, extra)


def available_profiles(config_path: Path, raw_profile_dirs: Any = None) -> list[ProfileInfo]:
    """Every valid profile the config at `config_path` could use; the first of one id wins, as in
    the loader. Broken profile files are skipped here (`config check` reports them).

    `raw_profile_dirs`: the config's `profile_dirs`; None reads them from the file itself."""
    if raw_profile_dirs is None:
        try:
            raw_profile_dirs = read_toml(config_path).get("profile_dirs", [])
        except ConfigError:
            raw_profile_dirs = []
    seen: dict[str, ProfileInfo] = {}
    for d in profile_dirs(config_path, raw_profile_dirs):
        if not d.is_dir():
            continue
        for f in sorted(d.glob("*.toml")):
            if f.stem in seen:
                continue
            try:
                profile = Profile.model_validate(read_toml(f))
            except (ConfigError, ValueError):
                continue
            if profile.id != f.stem:
                continue
            seen[f.stem] = ProfileInfo(
                id=profile.id,
                family=profile.family,
                description=profile.description,
                vendor=profile.vendor,
                model=profile.model,
                path=f,
                points=tuple(profile.points),
                device_defaults=dict(profile.device),
                objects=tuple(str(p.get("object")) for p in profile.points.values() if "object" in p),
                identify=profile.identify,
                raw_points={k: dict(v) for k, v in profile.points.items()},
                device_class=profile.device_class,
            )
    return sorted(seen.values(), key=lambda p: (p.family, p.id))
