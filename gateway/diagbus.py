"""Run a driver's diagnostic action on a bus: through the running gateway, or on the port directly.

While `citynerve run` runs, its bus owner is the only master on each RS-485 line, so a technician's
scan or raw read must go through it (control op `diag`); two masters on one line garble each other's
frames. When no gateway runs (no control socket, or one a stopped gateway left), the action opens
the bus itself with the configured driver, runs, and closes. A gateway that is there but does not
answer (its socket busy, the gateway slow) is not "no gateway": diag refuses and says to retry.

`DiagSession` keeps one route for several actions (a scan split into chunks for a progress bar opens
the port once); `bus_diag` is the one-shot form the CLI commands of other areas call.
"""

from __future__ import annotations

import contextlib
import enum
import logging
import os
from collections.abc import Awaitable, Callable, Mapping
from pathlib import Path
from types import TracebackType
from typing import Any

from citynerve.gateway.api import ChannelError, Driver, GatewayError, PermanentError, TransientError
from citynerve.gateway.bus import linetest, probe
from citynerve.gateway.config import GatewayConfig
from citynerve.gateway.control import ControlError, GatewayNotRunningError, ask, typed_error
from citynerve.gateway.logs import field

__all__ = [
    "ControlSocketDeniedError",
    "DiagRoute",
    "DiagSession",
    "GatewayNotAnsweringError",
    "RawWriteRefusedError",
    "UnknownBusError",
    "audited_raw_write",
    "bus_diag",
    "check_raw_write",
]

PING_TIMEOUT_S = 2.0
"""How long diag waits for the running gateway's answer before it refuses (GatewayNotAnsweringError)."""

RAW_WRITE = "write"
"""The diagnostic action that writes registers or coils by address, bypassing the point table."""

audit = logging.getLogger("gateway.audit")


class DiagRoute(enum.Enum):
    """How a diagnostic action reaches the bus."""

    GATEWAY = "gateway"  # through the running gateway's bus owner
    DIRECT = "direct"  # this process opened the port itself


class UnknownBusError(PermanentError):
    """The config has no bus with this id."""

    def __init__(self, bus_id: str, known: list[str]) -> None:
        self.bus_id = bus_id
        self.known = known
        super().__init__(f"no bus {bus_id!r} in the config (buses: {', '.join(known) or 'none defined'})")


class ControlSocketDeniedError(PermanentError):
    """A gateway's control socket exists but this user may not use it. Opening the port directly
    instead could make a second master on a line the gateway polls, so diag refuses."""

    def __init__(self, socket: Path) -> None:
        self.socket = socket
        super().__init__(
            f"a gateway may be running but its control socket {socket} is not accessible to this user: "
            "run as a member of the citynerve group (or root)"
        )


class GatewayNotAnsweringError(TransientError):
    """A gateway runs (its control socket takes connections) but did not answer diag's ping: the
    socket is busy (`Busy`: its connections are all taken) or the gateway is slow (`Timeout`).
    Opening the port directly instead would make a second master on a line the gateway polls (on
    a serial bus, a "port in use" that reads as if the service were stopped), so diag refuses;
    `reason` is the control socket's (`ControlError.type`: message)."""

    def __init__(self, socket: Path, reason: str) -> None:
        self.socket = socket
        self.reason = reason
        super().__init__(
            f"the gateway is running but did not answer on its control socket {socket} ({reason}): "
            "retry in a moment (diag does not open the bus itself while the gateway polls it)"
        )


class RawWriteRefusedError(PermanentError):
    """A raw write that lacks its explicit flag, or touches addresses no writable point covers."""

    def __init__(self, bus_id: str, reason: str) -> None:
        self.bus_id = bus_id
        self.reason = reason
        super().__init__(f"bus {bus_id}: raw write refused: {reason}")


def check_raw_write(config: GatewayConfig, bus_id: str, params: Mapping[str, Any]) -> None:
    """Raise RawWriteRefusedError unless a raw write may go ahead.

    It needs `raw: true` (a generic `diag` request never writes by accident), and every address it
    touches must lie in a point of that unit marked `writable` in the config, unless `force: true`
    (a technician commissioning a device the config does not describe yet)."""
    if params.get("raw") is not True:
        raise RawWriteRefusedError(bus_id, "a raw write needs the explicit flag raw=true")
    if params.get("force") is True:
        return
    unit, table, address = params.get("unit"), params.get("table", "holding"), params.get("address")
    values = params.get("values", [params.get("value")])
    count = len(values) if isinstance(values, list) else 1
    if isinstance(address, str):  # the driver reads "10" and "0x0a" as numbers: so does the guard
        try:
            address = int(address, 0)
        except ValueError:
            return  # the driver refuses it with its own typed error; nothing is written
    if not isinstance(address, int) or isinstance(address, bool) or not isinstance(table, str):
        raise RawWriteRefusedError(bus_id, f"address {address!r} is not an integer: refused")
    covered: set[int] = set()
    for device in config.devices_on(bus_id):
        if device.address != unit:
            continue
        for point in device.points.values():
            span_fn = getattr(point, "span", None)
            span = span_fn() if point.writable and span_fn is not None else None
            if span is not None and span[0] == table:
                covered.update(range(span[1], span[2] + 1))
    wanted = range(address, address + count)
    if not covered.issuperset(wanted):
        last = address + count - 1
        where = f"{address}" if count == 1 else f"{address}..{last}"
        raise RawWriteRefusedError(
            bus_id,
            f"unit {unit} {table} {where} is not within points marked writable in the config "
            "(--force writes anyway)",
        )


async def audited_raw_write(
    config: GatewayConfig,
    bus_id: str,
    who: str,
    params: Mapping[str, Any],
    write: Callable[[], Awaitable[dict[str, Any]]],
) -> dict[str, Any]:
    """Run `write` if `check_raw_write` lets it go ahead; either way one audit log line per
    attempt: who, where, what value, and what came of it (refused, failed or written)."""
    try:
        check_raw_write(config, bus_id, params)
    except RawWriteRefusedError as err:
        _audit(who, bus_id, params, f"refused ({err.reason})")
        raise
    try:
        result = await write()
    except GatewayError as err:
        _audit(who, bus_id, params, f"failed ({err})")
        raise
    _audit(who, bus_id, params, "written")
    return result


def _audit(who: str, bus_id: str, params: Mapping[str, Any], outcome: str) -> None:
    values = params.get("values", params.get("value"))
    audit.warning(
        "raw write by %s: bus %s unit %s %s %s = %s%s: %s",
        who,
        field(bus_id),
        field(params.get("unit")),
        field(params.get("table", "holding")),
        field(params.get("address")),
        field(values),
        " (forced)" if params.get("force") is True else "",
        outcome,
    )


class DiagSession:
    """An async context manager: `async with DiagSession(cfg, "rs485-1") as s: await s.run(...)`.

    On enter it asks the control socket whether a gateway runs; if so every `run` goes through it,
    else it opens the bus's driver once (ChannelError: missing port, port in use) and closes it on
    exit. `route` tells which was taken. A gateway that runs but does not answer (control socket
    busy, gateway slow) is refused with GatewayNotAnsweringError, never bypassed.
    """

    def __init__(self, config: GatewayConfig, bus_id: str, *, timeout_s: float = 120.0) -> None:
        self.config = config
        try:
            self.bus = config.bus(bus_id)
        except KeyError:
            raise UnknownBusError(bus_id, [b.id for b in config.buses]) from None
        self.socket = Path(config.control.socket)
        self.timeout_s = timeout_s
        self.route: DiagRoute | None = None
        self._driver: Driver[Any, Any] | None = None

    async def __aenter__(self) -> DiagSession:
        if await _gateway_answers(self.socket):
            self.route = DiagRoute.GATEWAY
            return self
        spec = self.config.drivers.get(self.bus.protocol)
        if spec is None:
            raise PermanentError(f"bus {self.bus.id}: no driver loaded for protocol {self.bus.protocol!r}")
        driver = spec.factory(self.bus, self.config.devices_on(self.bus.id))
        try:
            await driver.open()
        except ChannelError:
            await _close_quietly(driver)
            raise
        except OSError as err:  # a driver that lets a raw OSError through: still one clear line
            await _close_quietly(driver)
            raise ChannelError(self.bus.id, f"cannot open: {err.strerror or err}") from err
        self._driver = driver
        self.route = DiagRoute.DIRECT
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        if self._driver is not None:
            await _close_quietly(self._driver)
            self._driver = None

    async def _elsewhere(self, action: str, params: dict[str, Any]) -> dict[str, Any]:
        return await _elsewhere_direct(self, action, params)

    async def run(self, action: str, params: Mapping[str, Any]) -> dict[str, Any]:
        """Run one action. Raises the driver's typed errors (direct), or through the gateway the
        device's DeviceExceptionError and ControlError for anything else."""
        if self.route is DiagRoute.GATEWAY:
            try:
                result = await ask(
                    self.socket,
                    "diag",
                    timeout_s=self.timeout_s,
                    bus=self.bus.id,
                    action=action,
                    params=dict(params),
                )
            except ControlError as err:
                # A device's error reply comes back typed, as on the direct route: identification
                # (discovery and the report alike) counts it as evidence.
                typed = typed_error(err)
                if typed is err:
                    raise
                raise typed from err
            return dict(result or {})
        if self._driver is None:
            raise PermanentError("DiagSession.run called outside `async with`")
        if action == RAW_WRITE:
            return await self._raw_write(self._driver, params)
        if probe.needs_other_driver(action, dict(params)):
            return await self._elsewhere(action, dict(params))
        if action == linetest.LINE_TEST:
            driver = self._driver
            devices = [d for d in self.config.devices_on(self.bus.id) if d.enabled]
            read = getattr(driver, "read", None)

            async def transact(device: Any, request: Any) -> object:
                assert read is not None
                return await read(device, request)

            return await linetest.line_test_with(driver, devices, self.bus, dict(params), transact)
        return await self._driver.diag(action, params)

    async def _raw_write(self, driver: Driver[Any, Any], params: Mapping[str, Any]) -> dict[str, Any]:
        who = f"local user uid {os.getuid()} pid {os.getpid()} (port opened directly)"
        return await audited_raw_write(
            self.config, self.bus.id, who, params, lambda: driver.diag(RAW_WRITE, params)
        )


async def _elsewhere_direct(session: DiagSession, action: str, params: dict[str, Any]) -> dict[str, Any]:
    """Probe, or run an action at other line settings: the session's driver steps aside meanwhile."""
    spec = session.config.drivers.get(session.bus.protocol)
    if spec is None or session._driver is None:
        raise PermanentError(f"bus {session.bus.id}: no driver loaded for protocol {session.bus.protocol!r}")
    devices = [d for d in session.config.devices_on(session.bus.id) if d.enabled]
    await _close_quietly(session._driver)
    try:
        return await probe.run_elsewhere(
            lambda b: spec.factory(b, devices), session.bus, devices, action, params
        )
    finally:
        await session._driver.open()


async def bus_diag(config: GatewayConfig, bus_id: str, action: str, params: dict[str, Any]) -> dict[str, Any]:
    """Run one diagnostic action on `bus_id`, through the running gateway when there is one.

    Raises UnknownBusError, ChannelError (port missing or in use), ControlError (the gateway
    refused), or the driver's own typed errors; all are GatewayError with a one-line message.
    """
    async with DiagSession(config, bus_id) as session:
        return await session.run(action, params)


def _denied(socket: Path) -> bool:
    # A cheap stat of a local socket file: fine on the event loop.
    return socket.exists() and not os.access(socket, os.R_OK | os.W_OK)


async def _gateway_answers(socket: Path) -> bool:
    """True when a gateway answers; False only when none runs (no socket, or one left by a stopped
    gateway). A gateway that is there but busy or slow raises GatewayNotAnsweringError: going
    direct then made two masters on one line."""
    if _denied(socket):
        raise ControlSocketDeniedError(socket)
    try:
        await ask(socket, "ping", timeout_s=PING_TIMEOUT_S)
    except GatewayNotRunningError:
        return False
    except ControlError as err:
        raise GatewayNotAnsweringError(socket, f"{err.type}: {err.message}") from err
    except OSError as err:  # this process could not even ask (out of descriptors): do not guess
        raise GatewayNotAnsweringError(socket, err.strerror or str(err)) from err
    return True


async def _close_quietly(driver: Driver[Any, Any]) -> None:
    # Closing is best effort; the open/diag error is the one to report.
    with contextlib.suppress(GatewayError, OSError):
        await driver.close()
