"""Shared helpers for the rules tests: devices as the config loader gives them, readings, engines."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any

from citynerve.gateway.api import (
    DeviceConfig,
    Event,
    EventState,
    Location,
    PointConfig,
    Quality,
    Reading,
    Value,
)
from citynerve.gateway.rules import RuleEngine, RulesConfig

T0 = 1_790_000_000.0  # Monday 2026-09-21 22:13:20 +08:00


def dev(
    dev_id: str = "d1",
    points: Iterable[str] = ("value",),
    profile: str = "test-profile",
    tags: tuple[str, ...] = (),
    component_code: str | None = "3205080101000001",
) -> DeviceConfig:
    return DeviceConfig(
        id=dev_id,
        bus="b1",
        profile=profile,
        address=1,
        location=Location(address_code="320508001001", lat=31.3, lon=120.6, building="B1", floor="3F"),
        component_code=component_code,
        tags=tags,
        points={p: PointConfig() for p in points},
    )


def engine(
    rules: Sequence[dict[str, Any]], devices: Sequence[DeviceConfig] | None = None, **kw: Any
) -> RuleEngine:
    cfg = RulesConfig.model_validate({"rules": list(rules), **kw})
    return RuleEngine(cfg, devices if devices is not None else [dev()])


def feed(
    e: RuleEngine,
    values: Iterable[tuple[float, Value]],
    point: str = "value",
    device: str = "d1",
    tick: bool = True,
) -> list[Event]:
    """Feed (ts, value) readings, ticking at each reading's time like the runtime would."""
    out: list[Event] = []
    for ts, v in values:
        q = Quality.BAD if v is None else Quality.GOOD
        out += e.evaluate([Reading(device, point, v, "", ts, q)])
        if tick:
            out += e.tick(ts)
    return out


def states(events: Iterable[Event]) -> list[tuple[str, EventState]]:
    return [(ev.rule, ev.state) for ev in events]
