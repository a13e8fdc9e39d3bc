"""Shared helpers of the BLE tests (a module with its own name: several test folders have a
conftest.py, and `from conftest import` would pick whichever was imported first)."""

from __future__ import annotations

import asyncio
import sys
import tomllib
from collections.abc import Callable
from pathlib import Path
from typing import Any

from citynerve.drivers.ble import BleBusConfig
from citynerve.drivers.bthome import BTHomeDevice
from citynerve.gateway.api import Event, SampleBatch, SampleSink, StateStore
from citynerve.hil.sim.ble import VirtualRadio
from citynerve.hil.sim.ble.street import PROFILES_DIR, ProfileNode

KEY = bytes.fromhex("231d39c1d7cc1ab1aee224cd096db932")
MAC = "A4:C1:38:00:00:01"
CITYNERVE = str(Path(sys.executable).parent / "citynerve")


def run_config(
    tmp_path: Path, transport: str, gateway_id: str, key_line: str = f'key = "{KEY.hex()}"'
) -> Path:
    """gw.toml for a real `citynerve run` hearing one manhole node (`mh-1`, MAC) on the bumble
    virtual dongle at `transport`; `key_line` gives its key (inline by default, or a `key_file`)."""
    cfg = tmp_path / "gw.toml"
    cfg.write_text(
        f"""
[gateway]
id = "{gateway_id}"
org = {{ city = "320500", district = "320508", street = "320508001" }}
[store]
path = "{tmp_path / "gw.db"}"
[control]
socket = "{tmp_path / "gw.sock"}"
[log]
format = "json"
[[buses]]
id = "ble0"
protocol = "bthome"
backend = "bumble"
transport = "{transport}"
[[devices]]
id = "mh-1"
bus = "ble0"
profile = "bthome-manhole-cover"
address = "{MAC}"
{key_line}
component_code = "3205080101000001"
location = {{ address_code = "320508001001" }}
"""
    )
    cfg.chmod(0o600)
    return cfg


class RecordingSink(SampleSink):
    """Collects what the driver delivers; `wait_for` blocks until a predicate holds."""

    def __init__(self) -> None:
        self.batches: list[SampleBatch] = []
        self.events: list[Event] = []
        self._changed = asyncio.Event()

    def submit(self, batch: SampleBatch) -> None:
        self.batches.append(batch)
        self._changed.set()

    def event(self, event: Event) -> None:
        self.events.append(event)
        self._changed.set()

    async def wait_for(self, predicate: Callable[[], bool], within: float = 5.0) -> None:
        async with asyncio.timeout(within):
            while not predicate():
                self._changed.clear()
                await self._changed.wait()


class MemoryState(StateStore):
    """A StateStore in a dict (the real one is the SQLite outbox, used in test_e2e_outbox)."""

    def __init__(self) -> None:
        self.data: dict[str, str] = {}
        self.puts = 0

    async def get(self, key: str) -> str | None:
        return self.data.get(key)

    async def put(self, key: str, value: str) -> None:
        self.puts += 1
        self.data[key] = value


def bus_config(radio: VirtualRadio, **kw: Any) -> BleBusConfig:
    return BleBusConfig(id="ble0", protocol="bthome", backend="bumble", transport=radio.transport, **kw)


def manhole_device(mac: str = MAC, key: bytes | None = KEY, dev_id: str = "mh-1", **kw: Any) -> BTHomeDevice:
    points = {
        "tilt": {"object": "rotation", "unit": "°"},
        "water_level": {"object": "distance_mm", "unit": "mm"},
        "battery": {"object": "battery", "unit": "%"},
        "voltage": {"object": "voltage", "unit": "V"},
        "tilt_alarm": {"object": "opening", "event_kind": "manhole_tilt", "event_severity": "critical"},
        "water_high": {"object": "moisture_detected", "event_kind": "manhole_water_high"},
        "tamper": {"object": "tamper", "event_kind": "manhole_tamper"},
    }
    data: dict[str, Any] = {
        "id": dev_id,
        "bus": "ble0",
        "profile": "bthome-manhole-cover",
        "address": mac,
        "location": {"address_code": "320508001"},
        "component_code": "3205080101000001",
        "poll_interval_s": 60,
        "points": {name: {**p, "name": name} for name, p in points.items()},
        **kw,
    }
    if key is not None:
        data["key"] = key.hex()
    return BTHomeDevice.model_validate(data)


def device_of(node: ProfileNode, dev_id: str, key: bytes | None = None) -> BTHomeDevice:
    """The gateway's device for a simulated street node: its shipped profile's points."""
    prof = tomllib.loads((PROFILES_DIR / f"{node.profile_id}.toml").read_text())
    points = {name: {**p, "name": name} for name, p in prof["points"].items()}
    data: dict[str, Any] = {
        "id": dev_id,
        "bus": "ble0",
        "profile": node.profile_id,
        "address": node.mac,
        "location": {"address_code": "320508001"},
        "points": points,
    }
    if key is not None:
        data["key"] = key.hex()
    return BTHomeDevice.model_validate(data)


def normalized(node: ProfileNode, point: str, raw: Any) -> Any:
    """The engineering value the pipeline makes of a raw sample (the point's scale)."""
    _, scale = node.points[point]
    return raw if isinstance(raw, bool) else raw * scale
