"""Find devices on configured buses with the drivers' diagnostic actions, and propose device entries.

Per family: Modbus scans unit ids (in chunks, so a progress bar moves), DL/T 645 and CJ/T 188 run a
meter search (every meter on a shared line, see meter_search.py), BTHome listens for adverts. Everything goes
through `DiagSession`, so discovery on a running gateway never adds a second master to a line.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from citynerve.gateway.api import GatewayError, SerialSettings
from citynerve.gateway.bus.facts import describe_settings
from citynerve.gateway.commissioning.meter_search import SearchProgress, Stop, search
from citynerve.gateway.config import GatewayConfig
from citynerve.gateway.diagbus import DiagSession

Progress = Callable[[str, int, int], None]
"""progress(bus_id, done, total): called as discovery of one bus advances."""
SearchNote = Callable[[str, SearchProgress], None]
"""search_note(bus_id, progress): a meter search's figures (questions, meters found, time left)."""

MODBUS_CHUNK = 8  # unit ids per diag call: small enough for a live progress bar, few round trips


@dataclass(frozen=True, slots=True)
class Found:
    """One device that answered on a bus."""

    bus: str
    protocol: str
    family: str
    address: int | str
    detail: dict[str, Any] = field(default_factory=dict)  # what it said: reply kind, meter type, rssi
    configured: bool = False  # a device with this address is already in the config

    def to_dict(self) -> dict[str, Any]:
        return {
            "bus": self.bus,
            "protocol": self.protocol,
            "family": self.family,
            "address": self.address,
            "detail": self.detail,
            "configured": self.configured,
        }


@dataclass(frozen=True, slots=True)
class BusProblem:
    bus: str
    message: str


@dataclass(frozen=True, slots=True)
class Discovery:
    found: tuple[Found, ...]
    problems: tuple[BusProblem, ...]
    route: dict[str, str]  # bus id -> "gateway" | "direct"


async def discover(
    config: GatewayConfig,
    bus_ids: Sequence[str] | None = None,
    *,
    modbus_first: int = 1,
    modbus_last: int = 247,
    ble_duration_s: float = 10.0,
    progress: Progress | None = None,
    search_note: SearchNote | None = None,
    search_timeout_s: float | None = None,
) -> Discovery:
    """Look for devices on each bus (all enabled buses by default). A failing bus is reported in
    `problems` and the others go on."""
    found: list[Found] = []
    problems: list[BusProblem] = []
    routes: dict[str, str] = {}
    for bus in config.buses:
        if bus_ids is not None and bus.id not in bus_ids:
            continue
        if bus_ids is None and not bus.enabled:
            continue
        spec = config.drivers.get(bus.protocol)
        family = spec.family if spec else bus.protocol
        configured = {str(d.address).lower() for d in config.devices_on(bus.id)}
        try:
            async with DiagSession(config, bus.id) as session:
                routes[bus.id] = session.route.value if session.route else "?"
                hits = await _discover_bus(
                    session,
                    family,
                    (modbus_first, modbus_last),
                    ble_duration_s,
                    progress,
                    search_note,
                    search_timeout_s,
                )
        except _PartialSearch as err:
            problems.append(BusProblem(bus.id, _unprefixed(bus.id, str(err))))
            hits = err.hits
        except GatewayError as err:
            problems.append(BusProblem(bus.id, _unprefixed(bus.id, str(err))))
            continue
        said = any(p.bus == bus.id for p in problems)  # a noisy line says so already
        if not hits and not said and (silent := _nothing_answered(bus, family, (modbus_first, modbus_last))):
            problems.append(BusProblem(bus.id, silent))
        for address, detail in hits:
            found.append(
                Found(bus.id, bus.protocol, family, address, detail, str(address).lower() in configured)
            )
    return Discovery(tuple(found), tuple(problems), routes)


async def _discover_bus(
    session: DiagSession,
    family: str,
    units: tuple[int, int],
    ble_duration_s: float,
    progress: Progress | None,
    search_note: SearchNote | None = None,
    search_timeout_s: float | None = None,
) -> list[tuple[int | str, dict[str, Any]]]:
    bus_id = session.bus.id
    if family == "modbus":
        first, last = units
        total = last - first + 1
        hits: list[tuple[int | str, dict[str, Any]]] = []
        for start in range(first, last + 1, MODBUS_CHUNK):
            end = min(start + MODBUS_CHUNK - 1, last)
            result = await session.run("scan", {"first": start, "last": end})
            for a in result["answered"]:
                hits.append((int(a["unit"]), {k: v for k, v in a.items() if k != "unit"}))
            if progress:
                progress(bus_id, end - first + 1, total)
        return hits
    if family in ("dlt645", "cjt188"):
        return await _search_meters(session, family, progress, search_note, search_timeout_s)
    if family == "bthome":
        result = await session.run("scan", {"duration": ble_duration_s})
        if progress:
            progress(bus_id, 1, 1)
        return [
            (str(d["address"]), {k: v for k, v in d.items() if k != "address"})
            for d in result.get("devices", [])
        ]
    raise _NoDiscovery(bus_id, family)


async def _search_meters(
    session: DiagSession,
    family: str,
    progress: Progress | None,
    search_note: SearchNote | None,
    search_timeout_s: float | None = None,
) -> list[tuple[int | str, dict[str, Any]]]:
    """Every meter on the line by meter search (see meter_search), then what each one is."""
    bus: Any = session.bus
    baudrate = int(getattr(bus, "baudrate", 2400))
    timeout_s = search_timeout_s or float(getattr(bus, "timeout_s", 1.0))

    async def probe(pattern: str) -> dict[str, Any]:
        return await session.run("probe", {"pattern": pattern, "timeout_s": timeout_s})

    def step(p: SearchProgress) -> None:
        if progress:
            progress(session.bus.id, p.asked, p.asked + p.pending)
        if search_note:
            search_note(session.bus.id, p)

    result = await search(family, probe, baudrate=baudrate, timeout_s=timeout_s, progress=step)
    hits: list[tuple[int | str, dict[str, Any]]] = []
    for address, detail in sorted(result.found.items()):
        info: dict[str, Any] = {k: v for k, v in detail.items() if k != "frame"}
        info["search"] = {"asked": result.asked, "collisions": result.collisions}
        if family == "dlt645":
            answer = await session.run("identify", {"address": address})
            info["version"] = answer.get("version")
            info["evidence"] = answer.get("evidence", {})
        hits.append((address, info))
    if result.stop is Stop.NOISY:  # the colliding "addresses" are noise: the reason is the news
        raise _PartialSearch(session.bus.id, hits, result.stopped)
    if result.unresolved or result.stopped:
        hits_note = "; ".join([*(f"{a} still collides" for a in result.unresolved), result.stopped])
        raise _PartialSearch(session.bus.id, hits, hits_note.strip("; "))
    return hits


def _unprefixed(bus_id: str, message: str) -> str:
    """A bus error's text without its leading `bus ID: `: the problem is shown under its bus."""
    prefix = f"bus {bus_id}: "
    return message[len(prefix) :] if message.startswith(prefix) else message


def _nothing_answered(bus: Any, family: str, units: tuple[int, int]) -> str | None:
    """Why a bus where nothing answered deserves a look, in field words, or None (BLE: an empty
    street is possible). A typo'd baud rate or parity, swapped A/B or unpowered meters all look like
    this; said nowhere, `init` ended with "no new devices found" and exit 0."""
    settings, bus_id = describe_settings(bus), str(bus.id)
    if family == "modbus":
        first, last = units
        if isinstance(bus, SerialSettings):
            return (
                f"no unit id in {first}..{last} answered at {settings}: check A/B polarity, the devices' "
                "power and that they use this baud rate, parity and stop bits (their label or manual); "
                f"`citynerve diag modbus scan --bus {bus_id} --baud B --parity P` tries others"
            )
        return (
            f"no unit id in {first}..{last} answered behind {settings}: check the serial gateway there "
            "(its serial settings and wiring) and the unit ids"
        )
    if family in ("dlt645", "cjt188"):
        name = {"dlt645": "DL/T 645", "cjt188": "CJ/T 188"}[family]
        return (
            f"no meter answered at {settings}: check A/B polarity, the meters' power and that they use "
            f"this baud rate and parity (their label or display; {name} meters mostly use 2400 8E1); "
            f"with one meter connected, `citynerve diag {family} read-address --port PORT --baud B "
            "--parity P` tries others"
        )
    return None


class _PartialSearch(GatewayError):
    def __init__(self, bus_id: str, hits: list[tuple[int | str, dict[str, Any]]], why: str) -> None:
        self.bus_id = bus_id
        self.hits = hits
        super().__init__(f"bus {bus_id}: meter search incomplete: {why}")


class _NoDiscovery(GatewayError):
    def __init__(self, bus_id: str, family: str) -> None:
        self.bus_id = bus_id
        self.family = family
        super().__init__(f"bus {bus_id}: {family} devices cannot be discovered; add them with `devices add`")
