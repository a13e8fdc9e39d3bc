"""A profile judged on its own, before any device uses it: its points with its driver's point model
and its `[device]` table with its driver's device model. `config check` judges only the profiles a
device uses (merged with the device entry); commissioning offers every profile in the folders, so
it judges each one here and leaves out those that fail (gateway/commissioning/profiles.py)."""

from __future__ import annotations

from functools import cache
from typing import Any

from pydantic import BaseModel, Field, ValidationError, create_model

from citynerve.gateway.api import ConfigIssue, DeviceConfig, DriverSpec
from citynerve.gateway.config.drivers import DriverNotFoundError, driver_spec, known_protocols
from citynerve.gateway.config.errors import issues_from
from citynerve.gateway.config.model import Profile


@cache
def family_spec(family: str) -> DriverSpec | None:
    """A driver of profile family `family` (its point and device models), or None: no installed
    driver reads it. Protocols named after the family are tried first, so looking up `modbus` does
    not import the BLE driver."""
    names = known_protocols()
    ordered = [p for p in names if p == family or p.startswith(family + "_")]
    for protocol in ordered + [p for p in names if p not in ordered]:
        try:
            spec = driver_spec(protocol)
        except DriverNotFoundError:
            continue
        if spec.family == family:
            return spec
    return None


@cache
def _defaults_model(model: type[DeviceConfig]) -> type[BaseModel]:
    """`model` with the fields a device entry gives (id, bus, address, location...) optional: what a
    profile's `[device]` table (defaults of the driver's own fields) is checked with."""
    return create_model(
        f"{model.__name__}Defaults",
        __base__=model,
        id=(Any, None),
        bus=(Any, None),
        profile=(Any, None),
        address=(Any, None),
        location=(Any, None),
        points=(Any, Field(default_factory=dict)),
    )


def check_profile(profile: Profile, file: str) -> tuple[dict[str, Any], list[ConfigIssue]]:
    """The profile's `[device]` table as its driver reads it (JSON values: `meter_type = "0x10"` is
    16), and every problem found, each naming `file` and the key. Problems: the profile is unusable."""
    spec = family_spec(profile.family)
    if spec is None:
        return {}, [ConfigIssue(file, "family", f"no installed driver reads family {profile.family!r}")]
    issues: list[ConfigIssue] = []
    for name, raw in profile.points.items():
        issues += _issues(spec.point_model, {**raw, "name": name}, file, f"points.{name}")
    model = _defaults_model(spec.device_model)
    device: dict[str, Any] = {}
    try:
        checked = model.model_validate(dict(profile.device))
    except ValidationError as err:
        issues += issues_from(err, file, "device", model)
    except Exception as err:  # a driver's validator that breaks on odd input
        issues.append(ConfigIssue(file, "device", f"cannot be checked ({type(err).__name__}: {err})"))
    else:
        dumped = checked.model_dump(mode="json", include=set(profile.device))
        device = {k: dumped.get(k, v) for k, v in profile.device.items()}
    return device, issues


def _issues(model: type[BaseModel], data: dict[str, Any], file: str, prefix: str) -> list[ConfigIssue]:
    try:
        model.model_validate(data)
    except ValidationError as err:
        return issues_from(err, file, prefix, model)
    except Exception as err:  # a driver's validator that breaks on odd input
        return [ConfigIssue(file, prefix, f"cannot be checked ({type(err).__name__}: {err})")]
    return []


__all__ = ["check_profile", "family_spec"]
