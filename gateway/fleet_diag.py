"""Remote diagnostics beyond `citynerve.gateway.fleet`: a device read with the raw frames, and the
redacted support bundle uploaded in chunks with its SHA-256 (docs/fleet.md).

`device_read` reads registers of a configured Modbus device through its bus owner (between polls,
never a second master on the line), addressed by the device's own unit: the platform names a
device, never a bus address, so it cannot reach anything the config does not list. The answer has
the registers, their decodings and the request and reply as they went over the wire.

`support_bundle` builds the same archive as `citynerve diag bundle` (config with secrets redacted,
versions, store health, status, journal) in a private temporary folder and uploads it like a log
tail; at most MAX_BUNDLE_BYTES.
"""

from __future__ import annotations

import asyncio
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
    """`device_read` and `support_bundle`, each with its permission class."""

    async def device_read(args: dict[str, Any], caller: Caller) -> Mapping[str, Any]:
        dev_id = args.get("device_id")
        device = devices().get(dev_id) if isinstance(dev_id, str) else None
        if device is None:
            raise CommandRejectedError(RejectReason.UNKNOWN_DEVICE, f"no device {dev_id!r}")
        protocol = protocol_of(device.bus) or ""
        if not protocol.startswith("modbus"):
            raise CommandRejectedError(
                RejectReason.BAD_VALUE, f"device_read reads Modbus devices; {dev_id} is on {protocol}"
            )
        table = args.get("table", "holding")
        address, count = args.get("address"), args.get("count", 1)
        if table not in READ_TABLES:
            raise CommandRejectedError(
                RejectReason.BAD_VALUE, f"table must be one of {', '.join(READ_TABLES)}"
            )
        limit = 2000 if table in ("coil", "discrete") else 125
        if not _int_in(address, 0, 65535) or not _int_in(count, 1, limit):
            raise CommandRejectedError(
                RejectReason.BAD_VALUE, f"address (0..65535) and count (1..{limit}) must be integers"
            )
        owner = owner_of(device.bus)
        if owner is None:
            raise CommandRejectedError(RejectReason.UNKNOWN_BUS, f"bus {device.bus} is not running")
        params: dict[str, Any] = {"unit": device.address, "table": table, "address": address, "count": count}
        for key in ("type", "order"):
            if isinstance(args.get(key), str):
                params[key] = args[key]
        result = await owner.diag("read", params)  # a GatewayError is answered device_error
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

    return {
        "device_read": RemoteAction(Permission.READ, device_read),
        "support_bundle": RemoteAction(Permission.READ, support_bundle),
    }


def _bundle_bytes(config_source: Path, journal_lines: int) -> tuple[bytes, dict[str, Any]]:
    from citynerve.gateway.commissioning.bundle import build_bundle

    with tempfile.TemporaryDirectory(prefix="citynerve-bundle-") as tmp:  # 0700
        out = Path(tmp) / "bundle.tar.gz"
        report = build_bundle(config_source, out, journal_lines=journal_lines)
        return out.read_bytes(), report.to_dict()


def _int_in(v: object, lo: int, hi: int) -> bool:
    return isinstance(v, int) and not isinstance(v, bool) and lo <= v <= hi
