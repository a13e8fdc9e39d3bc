"""The running gateway's status: the brief figures (/healthz, the platform's retained status, the
service manager's STATUS line) and everything `citynerve status` shows (moved from runtime.py)."""

from __future__ import annotations

import contextlib
from typing import TYPE_CHECKING, Any

from citynerve.gateway import __version__
from citynerve.gateway.alarms import MAX_STATUS_ALARMS
from citynerve.gateway.api import GatewayError
from citynerve.gateway.timecheck import time_status
from citynerve.gateway.timesync import kernel_state

if TYPE_CHECKING:
    from citynerve.gateway.runtime import Gateway

__all__ = ["brief_status", "config_status", "full_status", "service_status"]


def brief_status(gw: Gateway) -> dict[str, Any]:
    """Small figures for /healthz and the platform's retained status message (with the active
    alarms, most severe first, at most MAX_STATUS_ALARMS of them; the count is exact)."""
    owners = gw.owners
    online = sum(1 for o in owners.values() for h in o.health.values() if h.online)
    total = sum(len(o.health) for o in owners.values())
    return {
        "version": __version__,
        "uptime_s": round(gw.clock.monotonic() - gw._started_mono, 1),
        "devices_online": online,
        "devices_total": total,
        "buses_down": [b for b, o in owners.items() if not o.channel_open],
        "alarms_active": len(gw.alarms),
        "alarms": gw.alarms.to_status(MAX_STATUS_ALARMS),
        "clock": gw.clock_sync.wire(),
        "operator": gw.operator.snapshot() if gw.operator is not None else None,
        "certificates": gw.credentials.status() if gw.credentials is not None else None,
        "config": config_status(gw),
    }


def config_status(gw: Gateway) -> dict[str, Any] | None:
    """The config's version and hash (of the file: its buses and devices are in effect), and
    `restart_pending`: the sections the last reload left for a restart, which still run as in the
    config the gateway started with (`started`, given while any is pending)."""
    if gw.remote_config is None:
        return None
    out = gw.remote_config.snapshot()
    out["restart_pending"] = list(gw.restart_pending)
    if gw.restart_pending:
        out["started"] = dict(gw.config_at_start)
    return out


async def full_status(gw: Gateway) -> dict[str, Any]:
    """Everything `citynerve status` shows: buses, devices with last readings, store, uplink,
    and every active alarm (the registry: rules, drivers, bus owners, supervisors)."""
    buses = []
    for sup in gw.buses.values():
        snap = sup.snapshot()
        for dev in snap["devices"]:
            if gw.pipeline is not None and not dev.get("faulted"):
                dev["faulted"] = gw.pipeline.rule_fault(dev["id"])
            latest = gw.pipeline.latest(dev["id"]) if gw.pipeline else {}
            dev["readings"] = {
                p: {"value": r.value, "unit": r.unit, "ts": r.ts, "quality": str(r.quality)}
                for p, r in latest.items()
            }
        buses.append(snap)
    store = (await gw.outbox.stats()).to_dict() if gw.outbox else None
    uplink = gw.uplink_state()
    if uplink is not None and gw.outbox is not None:
        # Each destination's own backlog, positions and losses (outbox.destination_stats).
        with contextlib.suppress(GatewayError):
            for dest, figures in (await gw.outbox.destination_stats()).items():
                if dest in uplink["destinations"]:
                    uplink["destinations"][dest].update(figures)
    return {
        "gateway_id": gw.config.gateway.id,
        "name": gw.config.gateway.name,
        **gw.brief_status(),
        "alarms": gw.alarms.to_status(),
        "alarm_counts": gw.alarms.counts(),
        "buses": buses,
        "store": store,
        "writer": gw.writer.counters().to_dict() if gw.writer else None,
        "pipeline": gw.pipeline.counters().to_dict() if gw.pipeline else None,
        "uplink": uplink,
        "software_update": gw.remote_update.status() if gw.remote_update is not None else None,
        "clock": {
            **gw.clock_sync.wire(),
            **gw.clock_sync.to_dict(),
            "wall_steps": gw.steady.steps,
            "marked_events": gw.marks.marked_events if gw.marks else 0,
            "unsynced_readings": gw.marks.unsynced_readings if gw.marks else 0,
        },
        "time": time_status(
            {d: s for o in gw.owners.values() for d, s in o.quality.meter_skew.items()},
            synchronized=gw.clock_sync.synced,
            max_error_s=kernel_state()[1],
            platform_skew_s=gw.uplink.platform_skew_s if gw.uplink is not None else None,
        ),
    }


def service_status(gw: Gateway) -> str:
    b = gw.brief_status()
    clock = "" if gw.clock_sync.synced else f", clock {gw.clock_sync.to_dict()['state']}"
    down = f", buses down: {' '.join(b['buses_down'])}" if b["buses_down"] else ""
    return f"devices online {b['devices_online']}/{b['devices_total']}{down}{clock}"
