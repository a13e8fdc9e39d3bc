"""Fixtures for the RS-485 meter and fire panel tests: simulated buses on pty pairs."""

from __future__ import annotations

from typing import Any

from citynerve.drivers.cjt188 import Cjt188Device
from citynerve.drivers.dlt645 import Dlt645Device
from citynerve.drivers.serialio import SerialBusConfig
from citynerve.gateway.api import Event, SampleBatch

LOCATION = {"address_code": "320508001", "building": "B1", "floor": "1", "room": "meter room"}


def bus_config(
    port: str, *, protocol: str = "dlt645", timeout_s: float = 1.0, gap_s: float = 0.0
) -> SerialBusConfig:
    return SerialBusConfig(id="rs485-1", protocol=protocol, timeout_s=timeout_s, gap_s=gap_s, port=port)


def dlt_device(
    address: str = "000000000161", points: dict[str, Any] | None = None, **extra: Any
) -> Dlt645Device:
    points = (
        points
        if points is not None
        else {
            "energy": {"di": "00010000", "unit": "kWh"},
            "voltage_a": {"di": "02010100", "unit": "V"},
            "current_a": {"di": "02020100", "unit": "A"},
            "power": {"di": "02030000", "unit": "kW"},
        }
    )
    return Dlt645Device.model_validate(
        {
            "id": f"em-{address[-4:]}",
            "bus": "rs485-1",
            "profile": "dlt645-generic",
            "address": address,
            "location": LOCATION,
            "points": points,
            **extra,
        }
    )


def cjt_device(
    address: str = "00000000000012", points: dict[str, Any] | None = None, **extra: Any
) -> Cjt188Device:
    points = (
        points
        if points is not None
        else {
            "flow_total": {"field": "flow_total", "unit": "m3"},
            "flow_settlement": {"field": "flow_settlement", "unit": "m3"},
            "meter_time": {"field": "meter_time"},
            "valve": {"field": "valve", "writable": True},
            "battery_low": {"field": "battery_low"},
        }
    )
    return Cjt188Device.model_validate(
        {
            "id": f"wm-{address[-4:]}",
            "bus": "rs485-1",
            "profile": "cjt188-water",
            "address": address,
            "location": LOCATION,
            "points": points,
            **extra,
        }
    )


class Collector:
    """A bus owner's sink that keeps what it is given (batches, events)."""

    def __init__(self) -> None:
        self.batches: list[SampleBatch] = []
        self.events: list[Event] = []

    def submit(self, batch: SampleBatch) -> None:
        self.batches.append(batch)

    def event(self, event: Event) -> None:
        self.events.append(event)

    def mark_offline(self, device_id: str, ts: float) -> None:
        pass
