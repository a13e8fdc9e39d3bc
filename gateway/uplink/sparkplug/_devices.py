"""Sparkplug device descriptions from the gateway's device config."""

from __future__ import annotations

from collections.abc import Iterable

from citynerve.gateway.api import DeviceConfig
from citynerve.gateway.uplink.sparkplug._metrics import DeviceSpec, PointSpec, datatype_for_point


def device_spec(device: DeviceConfig, alarm_kinds: Iterable[str] = ()) -> DeviceSpec:
    """The DBIRTH content of `device`: its enabled points whose driver states a value type (Modbus
    `type`), with the datatype that type maps to (Double when scaled or offset), and the alarm
    kinds its rules may raise. Points of drivers that state no type (DL/T 645, CJ/T 188, fire
    panel, BTHome) are declared by their first value instead (one DBIRTH for the batch)."""
    points = []
    for key, point in device.points.items():
        point_type = getattr(point, "type", None)
        if not point.enabled or not isinstance(point_type, str):
            continue
        scaled = point.scale != 1 or point.offset != 0
        points.append(PointSpec(point.name or key, datatype_for_point(point_type, scaled=scaled), point.unit))
    return DeviceSpec(device.id, tuple(points), tuple(dict.fromkeys(alarm_kinds)))
