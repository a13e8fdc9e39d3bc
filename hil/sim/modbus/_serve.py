"""Endpoints that serve simulated devices: Modbus TCP, RTU over TCP, RTU on a serial URL; a pty link."""

from __future__ import annotations

import asyncio
import contextlib
import os
import tty
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from types import TracebackType
from typing import Any

from pymodbus import ModbusDeviceIdentification
from pymodbus.datastore import ModbusServerContext
from pymodbus.framer import FramerType
from pymodbus.server import ModbusSerialServer, ModbusTcpServer

from citynerve.hil.sim.modbus._devices import SimDevice, SimDeviceContext, SimProfile


@dataclass(slots=True)
class SimEndpoint:
    """One listening server and the devices (unit ids) behind it."""

    kind: str  # "tcp", "rtu_over_tcp" or "rtu"
    host: str
    port: int
    url: str  # serial URL for "rtu", else ""
    devices: dict[int, SimDevice]
    _server: Any = field(repr=False)
    _context: ModbusServerContext = field(repr=False)
    _silent: set[int] = field(default_factory=set, repr=False)

    def silence(self, unit: int) -> None:
        """The device stops answering (as if unplugged)."""
        if unit not in self._silent:
            del self._context[unit]
            self._silent.add(unit)

    def revive(self, unit: int) -> None:
        """The device answers again."""
        if unit in self._silent:
            self._context[unit] = SimDeviceContext(self.devices[unit])
            self._silent.discard(unit)

    async def close(self) -> None:
        await self._server.shutdown()


def _identity() -> ModbusDeviceIdentification:
    """What the simulator answers to FC 43/14 (read device identification)."""
    return ModbusDeviceIdentification(
        info_name={"VendorName": "CityNerve", "ProductCode": "SIM-MODBUS", "MajorMinorRevision": "1.0"}
    )


def _context(devices: Sequence[SimDevice]) -> tuple[dict[int, SimDevice], ModbusServerContext]:
    by_unit: dict[int, SimDevice] = {}
    for d in devices:
        if d.unit in by_unit:
            raise ValueError(f"unit id {d.unit} used twice on one endpoint")
        if not 1 <= d.unit <= 247:
            raise ValueError(f"unit id {d.unit} is not 1..247")
        by_unit[d.unit] = d
    ctx = ModbusServerContext(devices={u: SimDeviceContext(d) for u, d in by_unit.items()}, single=False)
    return by_unit, ctx


async def serve_tcp(
    devices: Sequence[SimDevice], *, host: str = "127.0.0.1", port: int = 0, rtu_framing: bool = False
) -> SimEndpoint:
    """Serve `devices` on one TCP port (0 = a free one). `rtu_framing` gives RTU over TCP."""
    by_unit, ctx = _context(devices)
    server = ModbusTcpServer(
        ctx,
        framer=FramerType.RTU if rtu_framing else FramerType.SOCKET,
        address=(host, port),
        ignore_missing_devices=True,  # an unknown or silenced unit stays silent, like on a real line
        identity=_identity(),
    )
    await server.serve_forever(background=True)
    bound = server.transport.sockets[0].getsockname()[1]  # type: ignore[attr-defined]
    kind = "rtu_over_tcp" if rtu_framing else "tcp"
    return SimEndpoint(kind, host, int(bound), "", by_unit, server, ctx)


async def serve_rtu(
    devices: Sequence[SimDevice], *, url: str, baudrate: int = 9600, parity: str = "N", stopbits: int = 1
) -> SimEndpoint:
    """Serve `devices` as RTU slaves on a serial port or pty path (`url`)."""
    by_unit, ctx = _context(devices)
    server = ModbusSerialServer(
        ctx,
        framer=FramerType.RTU,
        port=url,
        baudrate=baudrate,
        parity=parity,
        stopbits=stopbits,
        ignore_missing_devices=True,
        identity=_identity(),
    )
    await server.serve_forever(background=True)
    return SimEndpoint("rtu", "", 0, url, by_unit, server, ctx)


Fault = Callable[[bytes], bytes]
"""Rewrites bytes in flight (e.g. flips a bit to break the CRC); return b"" to drop them."""


class PtyLink:
    """Two pty pairs joined by a relay: a null-modem cable whose bytes can be corrupted.

    `gateway_port` is the path the gateway opens, `device_port` the one the simulator serves.
    `to_gateway` / `to_device` are optional `Fault`s applied to bytes flowing that way; set
    them at any time (None = pass through). With `baudrate`, bytes are delivered one at a time
    at the pace of a real line (11 bits per character), so frames take their real time and
    arrive in pieces. With `echo`, the gateway hears its own requests (a 2-wire adapter without
    echo suppression: set `handle_local_echo` on the bus). Use as `async with PtyLink() as link:`.
    """

    def __init__(self, *, baudrate: int | None = None, echo: bool = False) -> None:
        self.char_time_s = 11 / baudrate if baudrate else 0.0
        self.echo = echo  # a 2-wire RS-485 adapter that hears its own transmission
        self._line_free_at: dict[int, float] = {}
        self._fds: list[int] = []
        self.gateway_port = ""
        self.device_port = ""
        self.to_gateway: Fault | None = None
        self.to_device: Fault | None = None
        self._gw_master = self._dev_master = -1

    def _open_pair(self) -> tuple[int, str]:
        master, slave = os.openpty()
        tty.setraw(slave)  # no echo, no newline translation before pyserial opens it
        os.set_blocking(master, False)
        self._fds += [master, slave]
        return master, os.ttyname(slave)

    async def __aenter__(self) -> PtyLink:
        self._gw_master, self.gateway_port = self._open_pair()
        self._dev_master, self.device_port = self._open_pair()
        loop = asyncio.get_running_loop()
        loop.add_reader(self._gw_master, self._relay, self._gw_master, self._dev_master, "to_device")
        loop.add_reader(self._dev_master, self._relay, self._dev_master, self._gw_master, "to_gateway")
        return self

    def _relay(self, src: int, dst: int, direction: str) -> None:
        try:
            data = os.read(src, 4096)
        except (BlockingIOError, InterruptedError):
            return
        except OSError:  # the other end closed (EIO on a pty master)
            return
        if self.echo and direction == "to_device" and data:
            with contextlib.suppress(BlockingIOError, OSError):
                os.write(src, data)
        fault: Fault | None = getattr(self, direction)
        if fault is not None:
            data = fault(data)
        if not data:
            return
        if not self.char_time_s:
            with contextlib.suppress(BlockingIOError, OSError):
                os.write(dst, data)
            return
        # A real line: one character every 11 bits, each direction its own wire pair.
        loop = asyncio.get_running_loop()
        at = max(loop.time(), self._line_free_at.get(dst, 0.0))
        for i in range(len(data)):
            at += self.char_time_s
            loop.call_at(at, self._deliver, dst, data[i : i + 1])
        self._line_free_at[dst] = at

    def _deliver(self, dst: int, byte: bytes) -> None:
        if dst in self._fds:
            with contextlib.suppress(BlockingIOError, OSError):
                os.write(dst, byte)

    def unplug(self) -> None:
        """The gateway's adapter vanishes (USB pulled): its port errors and its path disappears."""
        if self._gw_master < 0:
            return
        asyncio.get_running_loop().remove_reader(self._gw_master)
        os.close(self._gw_master)
        self._fds.remove(self._gw_master)
        self._gw_master = -1

    async def __aexit__(
        self, et: type[BaseException] | None, e: BaseException | None, tb: TracebackType | None
    ) -> None:
        loop = asyncio.get_running_loop()
        for fd in (self._gw_master, self._dev_master):
            if fd >= 0:
                loop.remove_reader(fd)
        for fd in self._fds:
            with contextlib.suppress(OSError):
                os.close(fd)
        self._fds.clear()


class SimFleet:
    """Many simulated devices over several TCP endpoints; `addresses` lists (host, port, unit)."""

    def __init__(self, endpoints: list[SimEndpoint]) -> None:
        self.endpoints = endpoints

    @property
    def addresses(self) -> list[tuple[str, int, int]]:
        return [(e.host, e.port, u) for e in self.endpoints for u in sorted(e.devices)]

    def devices(self) -> Iterator[tuple[tuple[str, int, int], SimDevice]]:
        for e in self.endpoints:
            for u, d in sorted(e.devices.items()):
                yield (e.host, e.port, u), d

    async def aclose(self) -> None:
        for e in self.endpoints:
            await e.close()

    async def __aenter__(self) -> SimFleet:
        return self

    async def __aexit__(
        self, et: type[BaseException] | None, e: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.aclose()


async def start_tcp_devices(
    profiles: Sequence[str],
    count: int,
    host: str = "127.0.0.1",
    *,
    units_per_endpoint: int = 100,
    speed: float = 1.0,
    seed: int = 0,
) -> SimFleet:
    """Start `count` devices cycling through `profiles`, `units_per_endpoint` unit ids per port.

    1,000 devices = 10 endpoints x 100 units by default (units_per_endpoint=1 gives one port each).
    """
    if not 1 <= units_per_endpoint <= 247:
        raise ValueError("units_per_endpoint must be 1..247")
    loaded = [SimProfile.load(p) for p in profiles]
    endpoints: list[SimEndpoint] = []
    batch: list[SimDevice] = []
    try:
        for i in range(count):
            unit = i % units_per_endpoint + 1
            batch.append(
                SimDevice(loaded[i % len(loaded)], unit, seed=seed + i // units_per_endpoint, speed=speed)
            )
            if len(batch) == units_per_endpoint or i == count - 1:
                endpoints.append(await serve_tcp(batch, host=host))
                batch = []
    except BaseException:
        for e in endpoints:
            await e.close()
        raise
    return SimFleet(endpoints)


DEFAULT_BUILDING: tuple[tuple[str, int], ...] = (
    ("modbus-power-meter-3ph", 1),
    ("modbus-water-meter", 2),
    ("modbus-water-meter", 3),
    ("modbus-smoke-detector", 11),
    ("modbus-smoke-detector", 12),
    ("modbus-smoke-detector", 13),
)
"""A small building: one three-phase meter, two water meters, three smoke detectors."""


class ModbusBuilding:
    """A simulated building's Modbus devices on one TCP endpoint (and optionally an RTU line).

    The same device objects answer on both, so a smoke alarm triggered here shows on either.
    """

    def __init__(
        self,
        devices: Sequence[tuple[str, int]] = DEFAULT_BUILDING,
        *,
        host: str = "127.0.0.1",
        port: int = 0,
        rtu_url: str | None = None,
        baudrate: int = 9600,
        speed: float = 1.0,
        seed: int = 0,
    ) -> None:
        profiles: dict[str, SimProfile] = {}
        self.devices: dict[int, SimDevice] = {}
        for profile_id, unit in devices:
            profile = profiles.setdefault(profile_id, SimProfile.load(profile_id))
            if unit in self.devices:
                raise ValueError(f"unit id {unit} used twice in the building")
            self.devices[unit] = SimDevice(profile, unit, seed=seed, speed=speed)
        self._host, self._port, self._rtu_url, self._baudrate = host, port, rtu_url, baudrate
        self.tcp: SimEndpoint | None = None
        self.rtu: SimEndpoint | None = None

    async def __aenter__(self) -> ModbusBuilding:
        self.tcp = await serve_tcp(list(self.devices.values()), host=self._host, port=self._port)
        if self._rtu_url is not None:
            try:
                self.rtu = await serve_rtu(
                    list(self.devices.values()), url=self._rtu_url, baudrate=self._baudrate
                )
            except BaseException:
                await self.tcp.close()
                raise
        return self

    async def __aexit__(
        self, et: type[BaseException] | None, e: BaseException | None, tb: TracebackType | None
    ) -> None:
        for ep in (self.rtu, self.tcp):
            if ep is not None:
                await ep.close()

    @property
    def endpoint(self) -> tuple[str, int]:
        """(host, port) of the TCP endpoint."""
        assert self.tcp is not None, "use `async with ModbusBuilding(...)`"
        return self.tcp.host, self.tcp.port

    def _device(self, unit: int, profile: str | None = None) -> SimDevice:
        device = self.devices.get(unit)
        if device is None:
            raise KeyError(f"no simulated device with unit id {unit}")
        if profile is not None and device.profile.id != profile:
            raise ValueError(f"unit {unit} is a {device.profile.id}, not a {profile}")
        return device

    def trigger_smoke(self, unit: int) -> None:
        """Smoke in the detector with this unit id: its alarm register goes to 1."""
        self._device(unit, "modbus-smoke-detector").state.smoke = True

    def clear_smoke(self, unit: int) -> None:
        """Smoke gone: the alarm register goes back to 0."""
        self._device(unit, "modbus-smoke-detector").state.smoke = False

    def set_fault(self, unit: int, fault: bool = True) -> None:
        """A device-reported fault (e.g. the water meter loses its ultrasonic signal)."""
        self._device(unit).state.fault = fault

    def silence(self, unit: int) -> None:
        """The device stops answering on every endpoint."""
        self._device(unit)
        for ep in (self.tcp, self.rtu):
            if ep is not None:
                ep.silence(unit)

    def revive(self, unit: int) -> None:
        """The device answers again."""
        for ep in (self.tcp, self.rtu):
            if ep is not None:
                ep.revive(unit)
