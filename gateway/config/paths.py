"""Paths in a config file are relative to the file's folder, wherever the gateway is started from.

Applied to every `Path` field of the validated models (key files, TLS files, password files), so
each section's model does not need to know where its file lives.

Devices of one profile share one validated point table: both walks keep what they saw by identity
(`memo` / `seen`, shared across the devices of one load), so 1,000 meters cost one walk of their
points, not 1,000.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, TypeVar

from pydantic import BaseModel, SecretStr

from citynerve.gateway import shipped
from citynerve.gateway.logs import register_secret

M = TypeVar("M", bound=BaseModel)


def resolve_paths(model: M, base: Path, memo: dict[int, tuple[Any, Any]] | None = None) -> M:
    """A copy of `model` with every relative `Path` field (nested models too) made absolute."""
    memo = {} if memo is None else memo
    updates: dict[str, Any] = {}
    for name in type(model).model_fields:
        value = getattr(model, name)
        new = _resolve(value, base, memo)
        if new is not value:
            updates[name] = new
    return model.model_copy(update=updates) if updates else model


def _resolve(value: Any, base: Path, memo: dict[int, tuple[Any, Any]]) -> Any:
    if isinstance(value, Path):
        return value if value.is_absolute() else base / value
    if not isinstance(value, BaseModel | tuple | dict):
        return value
    known = memo.get(id(value))
    if known is not None and known[0] is value:
        return known[1]
    new: Any = value
    if isinstance(value, BaseModel):
        new = resolve_paths(value, base, memo)
    elif isinstance(value, tuple):
        items = tuple(_resolve(v, base, memo) for v in value)
        new = items if any(a is not b for a, b in zip(items, value, strict=True)) else value
    else:
        resolved = {k: _resolve(v, base, memo) for k, v in value.items()}
        new = resolved if any(resolved[k] is not value[k] for k in value) else value
    memo[id(value)] = (value, new)  # the value is kept too, so its id cannot be reused meanwhile
    return new


def register_secrets(model: BaseModel, seen: dict[int, Any] | None = None) -> None:
    """Tell the log redactor about every secret in `model` (SecretStr fields, nested too)."""
    seen = {} if seen is None else seen
    for name in type(model).model_fields:
        _register(getattr(model, name), seen)


def _register(value: Any, seen: dict[int, Any]) -> None:
    if isinstance(value, SecretStr):
        register_secret(value.get_secret_value())
        return
    if not isinstance(value, BaseModel | tuple | list | dict) or seen.get(id(value)) is value:
        return
    seen[id(value)] = value
    if isinstance(value, BaseModel):
        register_secrets(value, seen)
    elif isinstance(value, dict):
        for v in value.values():
            _register(v, seen)
    else:
        for v in value:
            _register(v, seen)


PROFILES_ENV = "CITYNERVE_PROFILES"
MANAGED_PROFILES_SUFFIX = ".profiles"


def managed_profile_dir(config_path: Path) -> Path:
    """The profiles the platform sent with a remote config (docs/fleet.md): `<config>.profiles/`
    beside the config file, searched before every other profile folder."""
    return config_path.with_name(config_path.name + MANAGED_PROFILES_SUFFIX)


def profile_search_dirs(config_path: Path, extra: list[str]) -> list[Path]:
    """The profile folders of the config at `config_path` in search order (the first profile of an
    id wins); `extra`: its `profile_dirs`. Also what `citynerve report` and `devices` search."""
    base = config_path.absolute().parent  # a bare `gw.toml`: its parent's profiles are ../profiles
    dirs: list[Path] = []
    if (managed := managed_profile_dir(config_path)).is_dir():
        dirs.append(managed)  # the platform's word (remote config) first
    dirs += [p if (p := Path(x)).is_absolute() else base / p for x in extra]
    dirs += [Path(x) for x in os.environ.get(PROFILES_ENV, "").split(os.pathsep) if x]
    dirs += [base / "profiles", base.parent / "profiles"]
    shipped_dir = shipped.profiles()
    if shipped_dir.is_dir():
        dirs.append(shipped_dir)  # the profiles that ship with CityNerve, last
    out: list[Path] = []
    seen: set[str] = set()  # one folder once, however it was named (`profile_dirs = ["../profiles"]`)
    for d in dirs:
        if (key := os.path.realpath(d)) not in seen:
            seen.add(key)
            out.append(d)
    return out
