"""What a scenario is: devices, the batches they send, and the ground truth."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from zoneinfo import ZoneInfo

from citynerve.gateway.api import DeviceConfig, Location, PointConfig, SampleBatch

TZ = ZoneInfo("Asia/Shanghai")
START = datetime(2026, 9, 14, tzinfo=TZ).timestamp()
"""Scenarios start on Monday 14 September 2026, local midnight: the month includes the Mid-Autumn
festival (25 Sep) and the National Day week (1-7 Oct), the holidays of the generator."""

HOLIDAYS = (datetime(2026, 9, 25, tzinfo=TZ), *(datetime(2026, 10, d, tzinfo=TZ) for d in range(1, 8)))


@dataclass(frozen=True, slots=True)
class Episode:
    """Ground truth: from `start` the condition a pack must report holds, until `end`.

    `start` is when the published rule's condition becomes true (e.g. 12 h after the last use),
    so the delay measures the gateway, not the rule's own definition. Any event of one of `kinds`
    on the device raised in [start - before, end + after] detects it.
    """

    device_id: str
    kinds: tuple[str, ...]
    start: float
    end: float
    what: str
    slack_s: float = 0.0  # extra tolerance before `start` for slowly drifting, noisy quantities


@dataclass(slots=True)
class Scenario:
    """One pack's labelled data set."""

    pack: str
    devices: list[DeviceConfig]
    batches: list[SampleBatch]
    episodes: list[Episode]
    before_s: float  # matching tolerance before an episode's start (reading granularity)
    after_s: float  # allowed time after the end (detection latency budget)
    vibration: list[tuple[str, float, float]] = field(default_factory=list)  # passing vehicles
    away: list[tuple[str, float, float]] = field(default_factory=list)  # operator marks a household away
    params: dict[str, object] = field(default_factory=dict)
    rules: object | None = None  # a RulesConfig when the installer sets the pack per device group
    rule_prefix: str = ""  # the scored rules' id prefix when it is not "<pack>." (households)


def device(
    dev_id: str, profile: str, points: dict[str, str], i: int, component_class: str = ""
) -> DeviceConfig:
    """A device as the config loader would give it: location, component code, points with units."""
    code = f"320508{component_class}{i:06d}" if component_class else None
    return DeviceConfig(
        id=dev_id,
        bus="sim",
        profile=profile,
        address=i + 1,
        location=Location(
            address_code="320508001001",
            lat=31.30 + i * 1e-4,
            lon=120.62 + i * 1e-4,
            building=f"B{i // 10 + 1}",
            room=f"{100 + i}",
        ),
        component_code=code,
        points={name: PointConfig(unit=unit) for name, unit in points.items()},
    )


def is_holiday(ts: float) -> bool:
    d = datetime.fromtimestamp(ts, TZ).date()
    return any(h.date() == d for h in HOLIDAYS)


def is_weekend(ts: float) -> bool:
    return datetime.fromtimestamp(ts, TZ).weekday() >= 5
