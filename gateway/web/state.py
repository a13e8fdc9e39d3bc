"""What the status page shows, built from the running gateway: one JSON-able dict per refresh.

Devices are grouped by building and floor from their configured location, because a technician
walks the building floor by floor. Everything comes from `Gateway.status()` (which carries the one
registry of active alarms: rules, drivers, bus owners) plus the config (device locations).
"""

from __future__ import annotations

import os
import time
from collections.abc import Mapping
from typing import Any, Protocol

from citynerve.gateway.config import GatewayConfig
from citynerve.gateway.web.metrics import plain


class StatusSource(Protocol):
    """What the status server needs from the gateway."""

    config: GatewayConfig

    async def status(self) -> dict[str, Any]: ...

    def brief_status(self) -> dict[str, Any]: ...


def status_alarms(status: Mapping[str, Any]) -> list[dict[str, Any]]:
    """The active alarms of a status snapshot (the gateway's registry), most severe first."""
    return [dict(a) for a in status.get("alarms") or [] if isinstance(a, Mapping)]


def _device_meta(config: GatewayConfig) -> dict[str, dict[str, Any]]:
    meta: dict[str, dict[str, Any]] = {}
    for d in config.devices:
        loc = d.location
        meta[d.id] = {
            "name": d.name,
            "profile": d.profile,
            "address": str(d.address),
            "building": loc.building,
            "floor": loc.floor,
            "room": loc.room,
            "place": loc.text,
        }
    return meta


def _readings(dev: Mapping[str, Any]) -> list[dict[str, Any]]:
    out = []
    for point, r in (dev.get("readings") or {}).items():
        r = plain(r)
        out.append(
            {
                "point": point,
                "value": r.get("value"),
                "unit": r.get("unit") or "",
                "ts": r.get("ts"),
                "quality": str(r.get("quality", "")).lower(),
            }
        )
    return out


def _floor_key(floor: str) -> tuple[int, float, str]:
    # "B1" below "1F" below "2F": basements first, then numbers in order, then anything else.
    text = floor.strip().upper()
    if text.startswith("B") and text[1:].isdigit():
        return (0, -float(text[1:]), text)
    digits = "".join(ch for ch in text if ch.isdigit() or ch == "-")
    try:
        return (1, float(digits), text)
    except ValueError:
        return (2, 0.0, text)


def page_state(status: Mapping[str, Any], config: GatewayConfig, *, refresh_s: float) -> dict[str, Any]:
    """The page's data for one refresh."""
    meta = _device_meta(config)
    alarms = status_alarms(status)
    alarm_devices = {a.get("device_id") for a in alarms}
    groups: dict[tuple[str, str], list[dict[str, Any]]] = {}
    buses = []
    for bus in status.get("buses") or []:
        counters = plain(bus.get("counters")) or {}
        buses.append(
            {
                "id": bus.get("id"),
                "protocol": bus.get("protocol"),
                "channel": bus.get("channel"),
                "channel_error": bus.get("channel_error"),
                "adapter_missing": bus.get("adapter_missing"),
                "transactions": counters.get("transactions", 0),
                "errors": counters.get("errors", 0),
                "latency_ms": counters.get("latency_mean_ms"),
                "verdict": bus.get("verdict"),
            }
        )
        for dev in bus.get("devices") or []:
            m = meta.get(str(dev.get("id")), {})
            entry = {
                "id": dev.get("id"),
                "name": m.get("name") or "",
                "bus": bus.get("id"),
                "profile": m.get("profile", ""),
                "address": m.get("address", ""),
                "room": m.get("room", ""),
                "place": m.get("place", ""),
                "online": dev.get("online"),
                "state": dev.get("state"),
                "cause": dev.get("cause"),
                "reason": dev.get("reason"),
                "window": dev.get("window"),
                "last_success": dev.get("last_success"),
                "last_error": dev.get("last_error"),
                "errors": dev.get("errors", 0),
                "faulted": dev.get("faulted"),
                "alarm": dev.get("id") in alarm_devices,
                "readings": _readings(dev),
            }
            key = (m.get("building") or "", m.get("floor") or "")
            groups.setdefault(key, []).append(entry)
    store = plain(status.get("store")) or {}
    lanes = store.get("lanes", [])
    now = time.time()
    oldest = [lane["oldest_ts"] for lane in lanes if lane.get("oldest_ts")]
    uplink = plain(status.get("uplink"))  # UplinkState.to_dict(): its state is already the text
    return {
        "generated": now,
        "refresh_s": refresh_s,
        "gateway": {
            k: status.get(k)
            for k in ("gateway_id", "name", "version", "uptime_s", "devices_online", "devices_total")
        },
        "outbox": {
            "depth": sum(int(lane.get("rows", 0)) for lane in lanes),
            "oldest_age_s": round(now - min(oldest), 1) if oldest else None,
            "lanes": lanes,
            "state": store.get("state", "ok"),  # ok, disk_full, degraded
            "epoch": store.get("epoch"),
            "dropped_by": store.get("dropped_by") or {},
            # Where to free space when the disk is full (the outbox's folder; `df` it for the disk).
            "folder": os.path.dirname(str(store["path"])) if store.get("path") else None,
            "quarantined": store.get("quarantined"),
        },
        "uplink": uplink,
        "alarms": alarms,
        "time": plain(status.get("time")),
        "operator": status.get("operator") or {"away": [], "maintenance": [], "overrides": []},
        "buses": buses,
        "groups": [
            {"building": b, "floor": f, "devices": sorted(devs, key=lambda d: (d["room"], str(d["id"])))}
            for (b, f), devs in sorted(groups.items(), key=lambda kv: (kv[0][0], _floor_key(kv[0][1])))
        ],
    }
