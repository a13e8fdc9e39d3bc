"""Fleet operations the platform can ask for, beyond reading and writing points: operator controls
(citynerve.gateway.operator) and allowlisted diagnostics, each with its permission class (docs/fleet.md).

Nothing here is a shell: every action is a named function with checked arguments. Answers go on the
result topic; a log tail too big for one message is sent in chunks with the SHA-256 of the whole.
"""

from __future__ import annotations

import asyncio
import base64
import collections
import hashlib
import logging
import math
import subprocess
import time
from collections.abc import Awaitable, Callable, Mapping
from typing import Any, Protocol

from citynerve.gateway.operator import OperatorControls, OperatorRequestError
from citynerve.gateway.uplink.commands import Caller, Chunked, RemoteAction
from citynerve.gateway.uplink.encoding import RejectReason
from citynerve.gateway.uplink.errors import CommandRejectedError
from citynerve.gateway.uplink.permissions import Permission

log = logging.getLogger("citynerve.fleet")

OPERATOR_ACTIONS = {
    "set_away": "away",
    "set_back": "back",
    "set_maintenance": "maintenance",
    "end_maintenance": "maintenance_end",
    "ack_alarm": "ack",
    "set_override": "override",
}
LOG_RING_BYTES = 256 * 1024  # the log tail kept in memory for `log_tail`
CHUNK_BYTES = 8 * 1024  # raw bytes per chunk (base64 in the message: ~11 KB, under the 16 KB inbound cap)
MAX_LOG_LEVEL_S = 3600.0
RESTART_EXIT_CODE = 75  # EX_TEMPFAIL: the unit's Restart=on-failure starts the service again


class Diagnosable(Protocol):
    """What the runtime offers diagnostics (citynerve.gateway.runtime.Gateway)."""

    async def store_stats(self) -> dict[str, Any]: ...

    def bus_stats(self) -> list[dict[str, Any]]: ...

    def uplink_state(self) -> dict[str, Any] | None: ...

    async def uplink_probe(self, destination: str | None = None) -> list[dict[str, Any]]: ...

    def request_restart(self, delay_s: float) -> None: ...


class HostControl:
    """The machine under the gateway. `reboot` runs `command` (default `systemctl reboot`, which the
    service user may run through polkit or a sudoers line the installer sets up; docs/fleet.md).
    Tests subclass it: a test must never reboot the machine."""

    def __init__(self, command: tuple[str, ...] = ("systemctl", "reboot")) -> None:
        self.command = command

    def reboot(self) -> None:
        log.warning("rebooting the machine: %s", " ".join(self.command))
        subprocess.Popen(self.command, stdin=subprocess.DEVNULL, start_new_session=True)


class LogRing(logging.Handler):
    """The last `max_bytes` of formatted log lines, for `log_tail` (bounded, in memory only)."""

    def __init__(self, max_bytes: int = LOG_RING_BYTES) -> None:
        super().__init__(logging.DEBUG)
        self.max_bytes = max_bytes
        self._lines: collections.deque[bytes] = collections.deque()
        self._size = 0
        from citynerve.gateway.logs import JsonFormatter

        self.setFormatter(JsonFormatter())  # redacted like every log line

    def emit(self, record: logging.LogRecord) -> None:
        try:
            line = (self.format(record) + "\n").encode("utf-8", "replace")[: self.max_bytes]
        except Exception:  # a bad record must not break logging
            return
        self._lines.append(line)
        self._size += len(line)
        while self._size > self.max_bytes:
            self._size -= len(self._lines.popleft())

    def tail(self, max_bytes: int) -> bytes:
        data = b"".join(self._lines)
        return data[-max_bytes:]


class LogLevel:
    """Raise the root log level for a bounded time; it reverts by itself (a monotonic timer)."""

    def __init__(self) -> None:
        self._handle: asyncio.TimerHandle | None = None
        self._saved: int | None = None
        self.until_mono: float | None = None

    def raise_for(self, level: str, for_s: float) -> dict[str, Any]:
        root = logging.getLogger()
        if self._saved is None:
            self._saved = root.level
        root.setLevel(level.upper())
        if self._handle is not None:
            self._handle.cancel()
        loop = asyncio.get_running_loop()
        self._handle = loop.call_later(for_s, self.revert)  # the loop's clock is monotonic
        self.until_mono = time.monotonic() + for_s
        return {"level": level, "for_s": for_s, "reverts_to": logging.getLevelName(self._saved).lower()}

    def revert(self) -> None:
        if self._saved is not None:
            logging.getLogger().setLevel(self._saved)
            log.warning("log level back to %s", logging.getLevelName(self._saved).lower())
        self._saved = None
        self._handle = None
        self.until_mono = None


def remote_actions(
    *,
    operator: OperatorControls,
    gateway: Diagnosable,
    ring: LogRing,
    level: LogLevel,
    host: HostControl,
) -> dict[str, RemoteAction]:
    """Every fleet action with its permission class, for the CommandProcessor."""
    actions: dict[str, RemoteAction] = {}

    def operator_action(op: str) -> Callable[[dict[str, Any], Caller], Awaitable[Mapping[str, Any]]]:
        async def run(args: dict[str, Any], caller: Caller) -> Mapping[str, Any]:
            try:
                return await operator.request(op, args, f"platform key {caller.key_id}")
            except OperatorRequestError as err:
                raise CommandRejectedError(RejectReason(err.reason), err.detail) from err

        return run

    for action, op in OPERATOR_ACTIONS.items():
        actions[action] = RemoteAction(Permission.OPERATE, operator_action(op))

    async def diag_store(args: dict[str, Any], caller: Caller) -> Mapping[str, Any]:
        return await gateway.store_stats()

    async def diag_buses(args: dict[str, Any], caller: Caller) -> Mapping[str, Any]:
        buses = gateway.bus_stats()
        return {"buses": [{k: v for k, v in b.items() if k != "devices"} for b in buses]}

    async def diag_errors(args: dict[str, Any], caller: Caller) -> Mapping[str, Any]:
        devices = [
            {
                k: d.get(k)
                for k in ("id", "online", "errors", "consecutive_failures", "last_error", "last_error_ts")
            }
            for b in gateway.bus_stats()
            for d in b.get("devices", [])
            if d.get("errors") or d.get("last_error")
        ]
        return {"devices": devices[:500], "more": max(0, len(devices) - 500)}

    async def diag_uplink(args: dict[str, Any], caller: Caller) -> Mapping[str, Any]:
        out: dict[str, Any] = {"state": gateway.uplink_state()}
        if args.get("probe") is True:
            out["probe"] = await gateway.uplink_probe(caller.destination)  # the asker's brokers
        return out

    async def set_log_level(args: dict[str, Any], caller: Caller) -> Mapping[str, Any]:
        lvl, for_s = args.get("level"), args.get("for_s", 600)
        if lvl not in ("debug", "info", "warning"):
            raise CommandRejectedError(RejectReason.BAD_VALUE, "level must be debug, info or warning")
        if isinstance(for_s, bool) or not isinstance(for_s, int | float) or not math.isfinite(for_s):
            raise CommandRejectedError(RejectReason.BAD_VALUE, "for_s must be a number")
        if not 0 < for_s <= MAX_LOG_LEVEL_S:
            raise CommandRejectedError(RejectReason.BAD_VALUE, f"for_s must be in 0..{MAX_LOG_LEVEL_S:g}")
        log.warning("log level %s for %g s (platform key %s)", lvl, for_s, caller.key_id)
        return level.raise_for(str(lvl), float(for_s))

    async def log_tail(args: dict[str, Any], caller: Caller) -> Chunked:
        want = args.get("max_bytes", 64 * 1024)
        if isinstance(want, bool) or not isinstance(want, int) or not 0 < want <= LOG_RING_BYTES:
            raise CommandRejectedError(RejectReason.BAD_VALUE, f"max_bytes must be in 1..{LOG_RING_BYTES}")
        data = ring.tail(want)
        return chunked(data, caller.command_id)

    async def restart_service(args: dict[str, Any], caller: Caller) -> Mapping[str, Any]:
        log.warning("service restart requested by platform key %s", caller.key_id)
        gateway.request_restart(1.0)  # after the answer is out
        return {"restarting": True, "exit_code": RESTART_EXIT_CODE}

    async def reboot(args: dict[str, Any], caller: Caller) -> Mapping[str, Any]:
        log.warning("reboot requested by platform key %s", caller.key_id)
        asyncio.get_running_loop().call_later(2.0, host.reboot)  # after the answer is out
        return {"rebooting": True, "in_s": 2.0}

    actions["diag_store"] = RemoteAction(Permission.READ, diag_store)
    actions["diag_buses"] = RemoteAction(Permission.READ, diag_buses)
    actions["diag_errors"] = RemoteAction(Permission.READ, diag_errors)
    actions["diag_uplink"] = RemoteAction(Permission.READ, diag_uplink)
    actions["log_tail"] = RemoteAction(Permission.READ, log_tail)
    actions["set_log_level"] = RemoteAction(Permission.CONFIGURE, set_log_level)
    actions["restart_service"] = RemoteAction(Permission.OPERATE, restart_service)
    actions["reboot"] = RemoteAction(Permission.REBOOT, reboot)
    return actions


def chunked(data: bytes, upload_id: str, chunk_bytes: int = CHUNK_BYTES) -> Chunked:
    """`data` as base64 chunks (index, count, data) and a summary with the SHA-256 of the whole."""
    digest = hashlib.sha256(data).hexdigest()
    pieces = [data[i : i + chunk_bytes] for i in range(0, len(data), chunk_bytes)] or [b""]
    parts = tuple(
        {"upload": upload_id, "index": i, "count": len(pieces), "data": base64.b64encode(p).decode("ascii")}
        for i, p in enumerate(pieces)
    )
    return Chunked({"upload": upload_id, "count": len(pieces), "bytes": len(data), "sha256": digest}, parts)
