"""The device inventory the uplink publishes (retained): each device with its enabled points."""

from __future__ import annotations

from typing import Any

from citynerve.gateway.api import DeviceConfig, PointConfig
from citynerve.gateway.config import GatewayConfig

__all__ = ["device_inventory"]


def device_inventory(config: GatewayConfig) -> list[dict[str, Any]]:
    """Every configured device with its bus's protocol and its enabled points (Gateway.inventory)."""
    # Devices of one profile share their point list (the same frozen point configs): build it
    # once per distinct table, so a thousand meters do not make a thousand copies.
    shared: dict[tuple[int, ...], list[dict[str, Any]]] = {}
    protocols = {b.id: b.protocol for b in config.buses}
    return [_inventory_entry(d, protocols[d.bus], shared) for d in config.devices]


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
