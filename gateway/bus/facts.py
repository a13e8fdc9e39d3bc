"""Gathers what a bus owner knows into the verdict's facts (the verdict itself is pure: verdict.py)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Protocol

from citynerve.gateway.api import BusConfig, DeviceConfig, SerialSettings
from citynerve.gateway.bus.health import DeviceHealth
from citynerve.gateway.bus.verdict import BusVerdict, DeviceFacts, LineQuality, RadioFacts, judge_bus


class _LinkStats(Protocol):
    """What a radio driver's per-node statistics offer (BTHome's DeviceLinkStats)."""

    accepted: int
    last_seen: float | None
    last_rssi: int | None
    last_error: str
    counter_restarted: bool

    @property
    def rejected(self) -> Mapping[Any, int]: ...


def describe_settings(bus: BusConfig) -> str:
    """The line as configured, in the technician's notation: "/dev/ttyUSB0 9600 8N1"."""
    serial = getattr(bus, "serial", bus)  # meter buses keep their line settings apart
    if isinstance(serial, SerialSettings):
        return f"{serial.port} {serial.baudrate} {serial.bytesize}{serial.parity}{serial.stopbits}"
    host, port = getattr(bus, "host", None), getattr(bus, "port", None)
    if host:
        return f"{host}:{port}" if port else str(host)
    transport = getattr(bus, "transport", None)
    return f"{bus.protocol} {transport}" if transport else bus.protocol


PROBE_GROUPS = {"modbus_rtu": "modbus", "dlt645": "dlt645", "cjt188": "cjt188"}
"""The serial protocols whose `citynerve diag GROUP probe` tries other line settings."""


def probe_command(bus: BusConfig) -> str | None:
    """The command line that tries other line settings on this bus, or None where there is none."""
    group = PROBE_GROUPS.get(bus.protocol)
    return f"citynerve diag {group} probe --bus {bus.id}" if group else None


def describe_address(device: DeviceConfig) -> str:
    if isinstance(device.address, int):
        base = getattr(device, "register_base", 0)  # one of several instances behind one unit id
        return f"address {device.address}" + (f", registers from {base}" if base else "")
    return str(device.address)


def bus_verdict(
    bus: BusConfig,
    devices: Mapping[str, DeviceConfig],
    health: Mapping[str, DeviceHealth],
    quality: LineQuality,
    *,
    channel_error: str | None,
    link_stats: Mapping[str, _LinkStats] | None = None,
) -> BusVerdict:
    facts = {}
    for device_id, device in devices.items():
        h = health[device_id]
        radio = None
        if link_stats is not None:
            s = link_stats.get(device_id)
            radio = (
                RadioFacts()
                if s is None
                else RadioFacts(
                    s.accepted,
                    {str(k): v for k, v in s.rejected.items()},
                    s.last_seen,
                    s.last_rssi,
                    s.last_error,
                    s.counter_restarted,
                )
            )
        facts[device_id] = DeviceFacts(
            device_id,
            describe_address(device),
            h.online,
            quality.counts(device_id),
            tuple(quality.implausible_points(device_id)),
            radio,
            h.last_error,
            h.faulted,
        )
    serial = isinstance(getattr(bus, "serial", bus), SerialSettings)
    return judge_bus(
        facts,
        settings=describe_settings(bus),
        channel_error=channel_error,
        serial=serial,
        probe=probe_command(bus),
    )
