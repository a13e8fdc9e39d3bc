"""The device profiles an installer can choose from, by family, for a given config file."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from citynerve.gateway.api import ConfigError, ConfigIssue
from citynerve.gateway.config import Profile, read_toml
from citynerve.gateway.config.errors import issues_from
from citynerve.gateway.config.identify import IdentifySpec
from citynerve.gateway.config.paths import profile_search_dirs
from citynerve.gateway.config.profilecheck import check_profile


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
    device_defaults: dict[str, Any] = field(default_factory=dict)  # [device], as its driver reads it
    objects: tuple[str, ...] = ()  # BTHome object names of its points (to match what a node sends)
    identify: IdentifySpec = field(default_factory=IdentifySpec)  # the profile's [identify] table
    raw_points: dict[str, dict[str, Any]] = field(default_factory=dict)  # [points.*] as written
    device_class: str = ""


def profile_dirs(config_path: Path, raw_profile_dirs: Any = ()) -> list[Path]:
    """The folders the config loader searches, in its order (the managed folder first): the
    loader's own function, so the two cannot disagree."""
    extra = [str(x) for x in raw_profile_dirs] if isinstance(raw_profile_dirs, list) else []
    return profile_search_dirs(config_path, extra)


def available_profiles(
    config_path: Path, raw_profile_dirs: Any = None, problems: list[ConfigIssue] | None = None
) -> list[ProfileInfo]:
    """Every valid profile the config at `config_path` could use. The first file of an id wins, as
    in the loader: a broken first file is not replaced by a later one of the same id (the loader
    would use the broken one); it is left out and its problems go to `problems`, each naming the
    file and the key. A profile is judged whole: points and `[device]` with its driver's models
    (profilecheck.py), so identification never meets a value its driver would refuse.

    `raw_profile_dirs`: the config's `profile_dirs`; None reads them from the file itself."""
    if raw_profile_dirs is None:
        try:
            raw_profile_dirs = read_toml(config_path).get("profile_dirs", [])
        except ConfigError:
            raw_profile_dirs = []
    seen: dict[str, ProfileInfo | None] = {}  # None: the first file of this id is broken
    found: list[ConfigIssue] = []
    for d in profile_dirs(config_path, raw_profile_dirs):
        if not d.is_dir():
            continue
        for f in sorted(d.glob("*.toml")):
            # Not a regular file (a FIFO, a socket): the loader does not see it either.
            if f.stem in seen or not f.is_file():
                continue
            info, issues = _profile_info(f)
            seen[f.stem] = info
            found += issues
    if problems is not None:
        problems.extend(found)
    return sorted((p for p in seen.values() if p is not None), key=lambda p: (p.family, p.id))


def _profile_info(f: Path) -> tuple[ProfileInfo | None, list[ConfigIssue]]:
    try:
        profile = Profile.model_validate(read_toml(f))
    except ConfigError as err:
        return None, list(err.issues)
    except ValidationError as err:
        return None, issues_from(err, str(f), "", Profile)
    if profile.id != f.stem:
        return None, [ConfigIssue(str(f), "id", f"expected {f.stem!r} (the file name), found {profile.id!r}")]
    device, issues = check_profile(profile, str(f))
    if issues:
        return None, issues
    info = ProfileInfo(
        id=profile.id,
        family=profile.family,
        description=profile.description,
        vendor=profile.vendor,
        model=profile.model,
        path=f,
        points=tuple(profile.points),
        device_defaults=device,
        objects=tuple(str(p.get("object")) for p in profile.points.values() if "object" in p),
        identify=profile.identify,
        raw_points={k: dict(v) for k, v in profile.points.items()},
        device_class=profile.device_class,
    )
    return info, []
