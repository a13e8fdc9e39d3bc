"""The health of a release under update: what the running gateway does before (the baseline) and
whether the new release does as much, from two snapshots of its control socket's status
(gateway/release/update.py's watchdog checks with these)."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path
from typing import Any

from citynerve.gateway.release.service import ServiceManager


def gateway_status(socket: Path, timeout_s: float = 5.0) -> dict[str, Any] | None:
    """The running gateway's status over its control socket, or None if it does not answer."""
    from citynerve.gateway.control import ControlError, GatewayNotRunningError, ask

    try:
        result = asyncio.run(ask(socket, "status", timeout_s=timeout_s))
    except (GatewayNotRunningError, ControlError, OSError, TimeoutError, ValueError):
        return None
    return result if isinstance(result, dict) else None


def baseline_of(status: dict[str, Any] | None) -> dict[str, Any]:
    """What the running gateway does before an update: what the new release must do too."""
    if status is None:
        return {"running": False}
    uplink = status.get("uplink") or {}
    return {
        "running": True,
        "buses_down": sorted(status.get("buses_down") or []),
        "polling": any(b.get("counters", {}).get("transactions", 0) > 0 for b in status.get("buses") or []),
        "writing": bool((status.get("writer") or {}).get("commits", 0)),
        "uplink_connected": bool(uplink.get("connected")),
    }


def health_problems(
    first: dict[str, Any] | None, second: dict[str, Any] | None, *, version: str, baseline: dict[str, Any]
) -> list[str]:
    """Why two status snapshots `settle_s` apart are not a healthy release (empty: healthy)."""
    if first is None or second is None:
        return ["the control socket does not answer"]
    problems = []
    if second.get("version") != version:
        problems.append(f"runs version {second.get('version')!r}, not {version!r}")
    if second.get("uptime_s", 0) <= first.get("uptime_s", 0):
        problems.append("restarted between two checks")
    down = set(second.get("buses_down") or []) - set(baseline.get("buses_down") or [])
    if down:
        problems.append(f"buses down: {sorted(down)}")

    def transactions(s: dict[str, Any]) -> int:
        return sum(b.get("counters", {}).get("transactions", 0) for b in s.get("buses") or [])

    if baseline.get("polling") and transactions(second) <= transactions(first):
        problems.append("buses are not polling")
    writer = second.get("writer") or {}
    if second.get("store") is None or writer.get("failed_commits", 0):
        problems.append("the outbox is not writable")
    elif baseline.get("writing") and not writer.get("commits"):
        problems.append("nothing committed to the outbox")
    if baseline.get("uplink_connected") and not (second.get("uplink") or {}).get("connected"):
        problems.append("the uplink is not connected (it was before the update)")
    return problems


def wait_healthy(
    service: ServiceManager, socket: Path, *, version: str, baseline: dict[str, Any],
    deadline: float, settle_s: float,
) -> list[str]:  # fmt: skip
    """Check until healthy or the monotonic `deadline`; returns the last problems (empty: healthy)."""
    problems = ["not checked yet"]
    while time.monotonic() < deadline:
        if not service.is_running():
            problems = ["the service is not running"]
            time.sleep(0.5)
            continue
        first = gateway_status(socket)
        if first is None:
            problems = ["the control socket does not answer"]
            time.sleep(0.5)
            continue
        time.sleep(settle_s)
        second = gateway_status(socket)
        problems = health_problems(first, second, version=version, baseline=baseline)
        if not service.is_running():
            problems.append("the service stopped")
        if not problems:
            return []
    return problems
