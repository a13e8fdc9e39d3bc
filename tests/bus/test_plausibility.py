"""Plausibility: readings outside physical bounds are SUSPECT and the verdict names the word order.

Unit checks of the bounds, then the real thing: a simulated power meter (pymodbus server) read with
the word order swapped in the config, through the real Modbus driver and bus owner.
"""

from __future__ import annotations

import asyncio
import contextlib
import tomllib
from collections.abc import Callable
from typing import Any

from citynerve.drivers.modbus.config import ModbusDeviceConfig, ModbusTcpBusConfig
from citynerve.drivers.modbus.driver import ModbusDriver
from citynerve.gateway.api import Event, PointConfig, Quality, Sample, SampleBatch
from citynerve.gateway.bus import BusOwner
from citynerve.gateway.bus.plausibility import bounds_of, check
from citynerve.hil.sim.modbus import PROFILES_DIR, SimDevice, SimProfile, serve_tcp


def test_bounds_from_the_point_else_shared_per_unit() -> None:
    assert bounds_of(PointConfig(unit="V")) == (-1.0e3, 1.0e6)
    assert bounds_of(PointConfig(unit="V", bounds=(180.0, 260.0))) == (180.0, 260.0)
    assert bounds_of(PointConfig(unit="widgets")) is None


def test_check_marks_only_out_of_bounds_numbers_after_scale() -> None:
    points = {
        "v": PointConfig(unit="V"),
        "e": PointConfig(unit="kWh", scale=0.01),
        "on": PointConfig(),
        "hz": PointConfig(unit="Hz"),
    }
    samples = (
        Sample("v", 8.08e37),
        Sample("e", 123456),
        Sample("on", True),
        Sample("hz", 50.01),
        Sample("v", None, Quality.BAD),
    )
    out, suspect = check(points, samples)
    assert suspect == ["v"]
    assert [s.quality for s in out] == [
        Quality.SUSPECT,
        Quality.GOOD,
        Quality.GOOD,
        Quality.GOOD,
        Quality.BAD,
    ]
    assert out[0].value == 8.08e37  # kept as read: the platform sees what the device said
    same, none = check(points, samples[1:4])
    assert same is samples[1:4] or same == samples[1:4]
    assert none == []


def test_the_owners_screening_marks_what_check_marks() -> None:
    """`Screening` (bounds worked out once per point table) against `check`, on random batches:
    every unit of the shared table, point bounds, scales and offsets, odd types and qualities."""
    import math
    import random

    from citynerve.gateway.bus.plausibility import UNIT_BOUNDS
    from citynerve.gateway.bus.screening import Screening

    rng = random.Random(5)
    screening = Screening()
    units = [*UNIT_BOUNDS, "widgets", ""]
    tables = []
    for _ in range(20):
        points: dict[str, PointConfig] = {}
        for i in range(rng.randint(1, 12)):
            spec: dict[str, Any] = {"unit": rng.choice(units)}
            if rng.random() < 0.2:
                low = rng.uniform(-100, 100)
                spec["bounds"] = (low, low + rng.uniform(0, 500))
            if rng.random() < 0.3:
                spec["scale"], spec["offset"] = rng.choice([0.1, 0.01, -1.0, 1000.0]), rng.uniform(-50, 50)
            points[f"p{i}"] = PointConfig(**spec)
        tables.append(points)
    # 10**400: an int beyond floats is the pipeline's BAD, neither suspect nor an OverflowError
    values = [
        0,
        -0.0,
        1,
        50.01,
        8.08e37,
        -3e9,
        2**63,
        10**400,
        -(10**400),
        math.inf,
        math.nan,
        True,
        "x",
        None,
    ]
    values.append(1e-300)
    for _ in range(2000):
        points = rng.choice(tables)
        names = [*points, "not_in_table"]
        samples = tuple(
            Sample(
                rng.choice(names), rng.choice([*values, rng.uniform(-1e7, 1e7)]), rng.choice(list(Quality))
            )
            for _ in range(rng.randint(0, 10))
        )
        expected, expected_suspect = check(points, samples)
        got, suspect, skew = screening.screen("d", points, samples)
        assert suspect == expected_suspect and skew is None
        assert [(s.point, s.quality) for s in got] == [(s.point, s.quality) for s in expected]
        assert all(a.value is b.value for a, b in zip(got, expected, strict=True))


async def until(check: Callable[[], bool], within: float = 20.0) -> None:
    async with asyncio.timeout(within):
        while True:
            if check():
                return
            await asyncio.sleep(0.05)


class Sink:
    def __init__(self) -> None:
        self.batches: list[SampleBatch] = []

    def submit(self, batch: SampleBatch) -> None:
        self.batches.append(batch)

    def event(self, event: Event) -> None:
        pass

    def mark_offline(self, device_id: str, ts: float) -> None:
        pass


def power_meter(word_order: str) -> ModbusDeviceConfig:
    data = tomllib.loads((PROFILES_DIR / "modbus-power-meter-3ph.toml").read_text())
    points: dict[str, Any] = data["points"]
    phases = ("voltage_a", "voltage_b", "voltage_c")
    voltages = {n: {**p, "word_order": word_order} for n, p in points.items() if n in phases}
    return ModbusDeviceConfig.model_validate(
        {
            "id": "pm-1",
            "bus": "b1",
            "profile": "modbus-power-meter-3ph",
            "address": 1,
            "location": {"address_code": "320508001"},
            "poll_interval_s": 0.1,
            "points": voltages,
        }
    )


async def test_swapped_word_order_gives_suspect_readings_and_names_the_word_order() -> None:
    endpoint = await serve_tcp([SimDevice(SimProfile.load("modbus-power-meter-3ph"), 1)])
    try:
        bus = ModbusTcpBusConfig(id="b1", host=endpoint.host, port=endpoint.port, timeout_s=0.5)
        device = power_meter("little")
        sink = Sink()
        owner = BusOwner(bus, [device], ModbusDriver(bus, [device]), sink)
        task = asyncio.create_task(owner.run(), name="test.owner")
        try:
            await until(lambda: owner.snapshot()["devices"][0]["cause"] == "implausible_values")
        finally:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
    finally:
        await endpoint.close()
    dev = owner.snapshot()["devices"][0]
    assert dev["state"] == "degraded" and "word order" in dev["reason"]
    # a swapped float can land inside the bounds (a tiny number): some readings stay good
    assert Quality.SUSPECT in {s.quality for b in sink.batches for s in b.samples}


async def test_right_word_order_is_good_and_online() -> None:
    endpoint = await serve_tcp([SimDevice(SimProfile.load("modbus-power-meter-3ph"), 1)])
    try:
        bus = ModbusTcpBusConfig(id="b1", host=endpoint.host, port=endpoint.port, timeout_s=0.5)
        device = power_meter("big")
        sink = Sink()
        owner = BusOwner(bus, [device], ModbusDriver(bus, [device]), sink)
        task = asyncio.create_task(owner.run(), name="test.owner")
        try:
            await until(lambda: owner.snapshot()["devices"][0]["window"]["attempts"] >= 5)
        finally:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
    finally:
        await endpoint.close()
    dev = owner.snapshot()["devices"][0]
    assert dev["state"] == "online" and dev["cause"] == "ok"
    assert {s.quality for b in sink.batches for s in b.samples} == {Quality.GOOD}


def test_plausible_orders_against_bounds_and_generic_sizes() -> None:
    from citynerve.gateway.bus.plausibility import plausible_orders

    orders = {
        "ABCD": {"float32": 230.1, "int32": 1130000000},
        "CDAB": {"float32": 1.2e-8, "int32": 5},
        "BADC": {"float32": 8.08e37, "int32": -5},
        "DCBA": {"float32": float("nan"), "int32": 0},
    }
    assert plausible_orders(orders, (0.0, 1000.0)) == {"float32": ["ABCD"], "int32": ["CDAB", "DCBA"]}
    assert plausible_orders(orders) == {"float32": ["ABCD"], "int32": ["CDAB", "BADC", "DCBA"]}
    assert plausible_orders({"ABCD": {"int": 10**400}}) == {}  # beyond floats: no believable value
