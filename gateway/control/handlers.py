"""What the control socket answers (`citynerve status`, diag, read, write, reload, operator...):
the request handlers over the running Gateway `gw` (moved from runtime.py)."""

from __future__ import annotations

import logging
import os
from typing import TYPE_CHECKING, Any

from citynerve.gateway.api import PermanentError
from citynerve.gateway.control.server import PEER
from citynerve.gateway.diagbus import RAW_WRITE, audited_raw_write
from citynerve.gateway.logs import field

if TYPE_CHECKING:
    from citynerve.gateway.runtime import Gateway

__all__ = ["control_handlers"]

RESET_COUNTER = "reset-counter"
"""The BLE driver's action that forgets a node's replay counter (`citynerve diag ble reset-counter`)."""

audit = logging.getLogger("gateway.audit")


def control_handlers(gw: Gateway) -> dict[str, Any]:
    async def ping(_: dict[str, Any]) -> dict[str, Any]:
        return {"gateway_id": gw.config.gateway.id, "pid": os.getpid()}

    async def status(_: dict[str, Any]) -> dict[str, Any]:
        return await gw.status()

    async def diag(req: dict[str, Any]) -> dict[str, Any]:
        owner = gw.owners.get(str(req["bus"]))
        if owner is None:
            raise PermanentError(f"no running bus {field(req['bus'])}")
        action, params = str(req["action"]), dict(req.get("params") or {})
        who = str(req.get(PEER, "unknown peer"))
        if action == RESET_COUNTER:  # lowers a node's replay protection: who did it is kept
            audit.warning(
                "replay counter reset by local %s: bus %s device %s",
                who,
                field(owner.bus.id),
                field(params.get("device")),
            )
        if action != RAW_WRITE:
            return await owner.diag(action, params)
        return await audited_raw_write(
            gw.config, owner.bus.id, who, params, lambda: owner.diag(action, params)
        )

    async def read(req: dict[str, Any]) -> dict[str, Any]:
        r = await gw.read_point(str(req["device"]), str(req["point"]))
        return {"device": r.device_id, "point": r.point, "value": r.value, "unit": r.unit, "ts": r.ts}

    async def write(req: dict[str, Any]) -> dict[str, Any]:
        await gw.write_point(str(req["device"]), str(req["point"]), req["value"])
        return {"written": True}

    async def restart_bus(req: dict[str, Any]) -> dict[str, Any]:
        await gw.restart_bus(str(req["bus"]))
        return {"restarting": req["bus"]}

    async def reload(_: dict[str, Any]) -> dict[str, Any]:
        return await gw.reload()

    async def operator(req: dict[str, Any]) -> dict[str, Any]:
        assert gw.operator is not None
        who = f"local {req.get(PEER, 'unknown peer')}"
        if req.get("user"):
            who = f"{str(req['user'])[:64]} ({who})"
        return await gw.operator.request(str(req["request"]), dict(req.get("args") or {}), who)

    return {
        "ping": ping,
        "status": status,
        "diag": diag,
        "read": read,
        "write": write,
        "restart_bus": restart_bus,
        "reload": reload,
        "operator": operator,
    }
