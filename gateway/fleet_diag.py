"""Remote diagnostics beyond `citynerve.gateway.fleet`: a device read with the raw frames, and the
redacted support bundle uploaded in chunks with its SHA-256 (docs/fleet.md).

`device_read` reads a configured device through its bus owner (between polls, never a second
master on the line), addressed by the device's own unit or meter address: the platform names a
device, never a bus address, so it cannot reach anything the config does not list. Modbus:
registers and their decodings; DL/T 645: one data item (DI) decoded; CJ/T 188: the 901F data; each
with the request and reply as they went over the wire. A BLE (BTHome) node is never asked: the
answer is its last advert, raw, and its link statistics.

`reset_counter` forgets a BLE node's replay counter (as `citynerve diag ble reset-counter`).

`support_bundle` builds the same archive as `citynerve diag bundle` (config with secrets redacted,
versions, store health, status, journal) in a private temporary folder and uploads it like a log
tail; at most MAX_BUNDLE_BYTES.
"""

from __future__ import annotations

import asyncio
import logging
import tempfile
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any, Protocol

from citynerve.gateway.api import DeviceConfig
from citynerve.gateway.fleet import chunked
from citynerve.gateway.uplink.commands import Caller, Chunked, RemoteAction
from citynerve.gateway.uplink.encoding import RejectReason
from citynerve.gateway.uplink.errors import CommandRejectedError
from citynerve.gateway.uplink.permissions import Permission

MAX_BUNDLE_BYTES = 2 * 1024 * 1024  # 256 chunks of 8 KiB
MAX_JOURNAL_LINES = 20_000
READ_TABLES = ("holding", "input", "coil", "discrete")

audit = logging.getLogger("gateway.audit")


class BusDiag(Protocol):
    """The bus owner's diagnostic entry (citynerve.gateway.bus.BusOwner.diag)."""

    async def diag(self, action: str, params: dict[str, Any]) -> dict[str, Any]: ...


def diag_actions(
    *,
    config_source: Path | None,
    devices: Callable[[], Mapping[str, DeviceConfig]],
    protocol_of: Callable[[str], str | None],
    owner_of: Callable[[str], BusDiag | None],
) -> dict[str, RemoteAction]:
    """`device_read`, `support_bundle` and `reset_counter`, each with its permission class."""

    async def device_read(args: dict[str, Any], caller: Caller) -> Mapping[str, Any]:
        dev_id = args.get("device_id")
        device = devices().get(dev_id) if isinstance(dev_id, str) else None
        if device is None:
            raise CommandRejectedError(RejectReason.UNKNOWN_DEVICE, f"no device {dev_id!r}")
        protocol = protocol_of(device.bus) or ""
        owner = owner_of(device.bus)
        if owner is None:
            raise CommandRejectedError(RejectReason.UNKNOWN_BUS, f"bus {device.bus} is not running")
        if protocol.startswith("modbus"):
            action, params = _modbus_read(device, args)
        elif protocol in OTHER_READS:
            action, params = OTHER_READS[protocol](device, args)
        else:
            raise CommandRejectedError(
                RejectReason.BAD_VALUE,
                f"device_read reads Modbus, DL/T 645, CJ/T 188 and BTHome devices; {dev_id} is on {protocol}",
            )
        result = await owner.diag(action, params)  # a GatewayError is answered device_error
        return {"device_id": device.id, "bus": device.bus, **result}

    async def support_bundle(args: dict[str, Any], caller: Caller) -> Chunked:
        lines = args.get("journal_lines", 2000)
        if not _int_in(lines, 0, MAX_JOURNAL_LINES):
            raise CommandRejectedError(
                RejectReason.BAD_VALUE, f"journal_lines must be in 0..{MAX_JOURNAL_LINES}"
            )
        if config_source is None:
            raise CommandRejectedError(RejectReason.INTERNAL, "the config file is not known")
        data, report = await asyncio.to_thread(_bundle_bytes, config_source, int(lines))
        if len(data) > MAX_BUNDLE_BYTES:
            raise CommandRejectedError(
                RejectReason.BAD_VALUE,
                f"the bundle is {len(data)} bytes, over {MAX_BUNDLE_BYTES}: ask with fewer journal_lines",
            )
        out = chunked(data, caller.command_id)
        summary = {**out.summary, "members": report.get("members", []), "missing": report.get("missing", {})}
        return Chunked(summary, out.parts)

    async def reset_counter(args: dict[str, Any], caller: Caller) -> Mapping[str, Any]:
        """A BLE node's replay counter forgotten (a node reflashed with its old key): `configure`,
        since it lowers that node's replay protection until its counter passes the old one."""
        dev_id = args.get("device_id")
        device = devices().get(dev_id) if isinstance(dev_id, str) else None
        if device is None:
            raise CommandRejectedError(RejectReason.UNKNOWN_DEVICE, f"no device {dev_id!r}")
        if protocol_of(device.bus) != "bthome":
            raise CommandRejectedError(RejectReason.BAD_VALUE, f"{device.id} is no BLE (BTHome) node")
        owner = owner_of(device.bus)
        if owner is None:
            raise CommandRejectedError(RejectReason.UNKNOWN_BUS, f"bus {device.bus} is not running")
        audit.warning(
            "replay counter reset by platform key %s (command %s): bus %s device %s",
            caller.key_id,
            caller.command_id,
            device.bus,
            device.id,
        )
        result = await owner.diag("reset-counter", {"device": device.id})
        return {"device_id": device.id, "bus": device.bus, **result}

    return {
        "device_read": RemoteAction(Permission.READ, device_read),
        "support_bundle": RemoteAction(Permission.READ, support_bundle),
        "reset_counter": RemoteAction(Permission.CONFIGURE, reset_counter),
    }


def _modbus_read(device: DeviceConfig, args: dict[str, Any]) -> tuple[str, dict[str, Any]]:
    """Registers or bits at the device's own unit (the bus owner's `read`, which adds the frames)."""
    table = args.get("table", "holding")
    address, count = args.get("address"), args.get("count", 1)
    if table not in READ_TABLES:
        raise CommandRejectedError(RejectReason.BAD_VALUE, f"table must be one of {', '.join(READ_TABLES)}")
    limit = 2000 if table in ("coil", "discrete") else 125
    if not _int_in(address, 0, 65535) or not _int_in(count, 1, limit):
        raise CommandRejectedError(
            RejectReason.BAD_VALUE, f"address (0..65535) and count (1..{limit}) must be integers"
        )
    params: dict[str, Any] = {"unit": device.address, "table": table, "address": address, "count": count}
    for key in ("type", "order"):
        if isinstance(args.get(key), str):
            params[key] = args[key]
    return "read", params


def _dlt645_read(device: DeviceConfig, args: dict[str, Any]) -> tuple[str, dict[str, Any]]:
    """One data item of a DL/T 645 meter: a configured `point` (its DI and format) or a `di`
    (8 hex digits, 4 for a 1997 meter) with optional `format`, `length`, `decimals`, `signed`."""
    params: dict[str, Any] = {"address": device.address, "frames": True}
    point, di = args.get("point"), args.get("di")
    if isinstance(point, str):
        spec = device.points.get(point)
        if spec is None:
            raise CommandRejectedError(RejectReason.BAD_VALUE, f"{device.id} has no point {point!r}")
        for key in ("di", "format", "length", "decimals", "signed"):
            if getattr(spec, key, None) is not None:
                params[key] = getattr(spec, key)
    elif isinstance(di, str) and len(di) in (4, 8):
        params["di"] = di
        for key, kind in (("format", str), ("length", int), ("decimals", int), ("signed", bool)):
            if isinstance(args.get(key), kind):
                params[key] = args[key]
    else:
        raise CommandRejectedError(
            RejectReason.BAD_VALUE, "give a configured point, or di (8 hex digits; 4 for DL/T 645-1997)"
        )
    return "read-di", params


def _cjt188_read(device: DeviceConfig, args: dict[str, Any]) -> tuple[str, dict[str, Any]]:
    """The meter's current data (DI 901F: flows, time, status), the data item a poll reads."""
    if str(args.get("di", "901F")).upper() != "901F":
        raise CommandRejectedError(RejectReason.BAD_VALUE, "CJ/T 188 meters are read with di 901F")
    return "read", {"address": device.address, "frames": True}


def _bthome_read(device: DeviceConfig, args: dict[str, Any]) -> tuple[str, dict[str, Any]]:
    """A BLE node is never asked, it advertises: its last advert, raw, and link statistics."""
    return "last-advert", {"device": device.id}


OTHER_READS: dict[str, Callable[[DeviceConfig, dict[str, Any]], tuple[str, dict[str, Any]]]] = {
    "dlt645": _dlt645_read,
    "cjt188": _cjt188_read,
    "bthome": _bthome_read,
}


def _bundle_bytes(config_source: Path, journal_lines: int) -> tuple[bytes, dict[str, Any]]:
    from citynerve.gateway.commissioning.bundle import build_bundle

    with tempfile.TemporaryDirectory(prefix="citynerve-bundle-") as tmp:  # 0700
        out = Path(tmp) / "bundle.tar.gz"
        report = build_bundle(config_source, out, journal_lines=journal_lines)
        return out.read_bytes(), report.to_dict()


def _int_in(v: object, lo: int, hi: int) -> bool:
    return isinstance(v, int) and not isinstance(v, bool) and lo <= v <= hi
