"""The device inventory the uplink publishes (retained): each device with its enabled points."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from citynerve.gateway.api import DeviceConfig, PointConfig
from citynerve.gateway.config import GatewayConfig
from citynerve.gateway.pipeline.derived import derived_points

__all__ = ["device_inventory", "iter_device_inventory"]


def device_inventory(config: GatewayConfig) -> list[dict[str, Any]]:
    """Every configured device with its bus's protocol and its enabled points (Gateway.inventory)."""
    return list(iter_device_inventory(config))


def iter_device_inventory(config: GatewayConfig) -> Iterator[dict[str, Any]]:
    """The same entries one at a time, in config order: the uplink renders each device as it comes,
    so the thousand devices' dicts never exist at once (~0.7 MB at the first connect's peak)."""
    # Devices of one profile share their point list (the same frozen point configs): build it
    # once per distinct table, so a thousand meters do not make a thousand copies.
    shared: dict[tuple[int, ...], list[dict[str, Any]]] = {}
    protocols = {b.id: b.protocol for b in config.buses}
    for d in config.devices:
        yield _inventory_entry(d, protocols[d.bus], shared)


def _inventory_point(p: PointConfig) -> dict[str, Any]:
    entry: dict[str, Any] = {
        "name": p.name,
        "unit": p.unit,
        "writable": p.writable,
        "description": p.description,
    }
    domain = p.value_domain() if p.writable else None
    if domain is not None:
        entry["domain"] = domain  # what a write_point command may send (docs/upstream-contract.md)
    return entry


def _inventory_entry(
    device: DeviceConfig, protocol: str, shared: dict[tuple[int, ...], list[dict[str, Any]]]
) -> dict[str, Any]:
    key = tuple(id(p) for p in device.points.values())
    points = shared.get(key)
    if points is None:
        points = shared[key] = [_inventory_point(p) for p in device.points.values() if p.enabled]
    if derived := derived_points(device):  # water_over_crown of a cover with crown_mm: its own list
        points = [*points, *(_inventory_point(p) for n, p in derived.items() if n not in device.points)]
    return {
        "device_id": device.id,
        "name": device.name,
        "profile": device.profile,
        "bus": device.bus,
        "protocol": protocol,
        "address": device.address,
        "component_code": device.component_code,
        "location": device.location.model_dump(exclude_defaults=True),
        "tags": list(device.tags),
        "points": points,
    }
