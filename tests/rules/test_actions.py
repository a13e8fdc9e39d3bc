"""Local actions: writes through the bus owner, rate limit, manual override, failures reported.

The first tests use a fake ActionTarget (it subclasses the Protocol); the last one closes a real
valve coil on a real pymodbus server through the Modbus driver and a running BusOwner, with the
readings flowing through the real Pipeline into the engine: no uplink anywhere.
"""

from __future__ import annotations

import asyncio
import contextlib
from typing import Any

from pymodbus.datastore import ModbusDeviceContext, ModbusSequentialDataBlock, ModbusServerContext
from pymodbus.server import ModbusTcpServer

from citynerve.gateway.api import DeviceTimeoutError, Event, Reading, Value, WriteRejectedError
from citynerve.gateway.bus import BusOwner
from citynerve.gateway.pipeline import Pipeline
from citynerve.gateway.rules import ACTION_KIND, ActionTarget, RuleEngine, RulesConfig

from .conftest import T0, dev, states

LEAK_RULES: dict[str, Any] = {
    "rules": [{"id": "leak", "kind": "boolean", "point": "leak", "severity": "major"}],
    "actions": [
        {
            "id": "close_valve",
            "on": ["leak"],
            "point": "valve",
            "value": False,
            "min_interval_s": 600,
            "max_per_day": 2,
            "verify_after_s": 0,
        }
    ],
}


class FakeValves(ActionTarget):
    """Records writes; can be told to fail or hang like a real device. Reads back what was written,
    or `stuck_at` when set (a device that does not follow)."""

    def __init__(self) -> None:
        self.writes: list[tuple[str, str, Value]] = []
        self.fail: BaseException | None = None
        self.hang = False
        self.stuck_at: Value = None
        self.reads = 0

    async def write_point(self, device_id: str, point: str, value: Value) -> None:
        if self.hang:
            await asyncio.sleep(3600)
        if self.fail is not None:
            raise self.fail
        self.writes.append((device_id, point, value))

    async def read_point(self, device_id: str, point: str) -> Reading:
        self.reads += 1
        last = [v for d, p, v in self.writes if (d, p) == (device_id, point)]
        value = self.stuck_at if self.stuck_at is not None else (last[-1] if last else None)
        return Reading(device_id, point, value, "", T0)


def make(target: ActionTarget | None, clock_t: list[float] | None = None, **over: Any) -> RuleEngine:
    cfg = RulesConfig.model_validate({**LEAK_RULES, **over})
    clock = (lambda: clock_t[0]) if clock_t else (lambda: T0)
    return RuleEngine(cfg, [dev(points=("leak", "valve"))], target=target, clock=clock)


def leak(e: RuleEngine, ts: float, on: bool) -> list[Event]:
    return e.evaluate([Reading("d1", "leak", on, "", ts)])


async def test_action_writes_and_reports_upstream_as_an_event() -> None:
    valves = FakeValves()
    e = make(valves)
    ev = leak(e, T0, True)
    assert states(ev) == [("leak", "raised")]  # the write runs as a task: evaluate never waits
    await e.actions.wait_idle()
    assert valves.writes == [("d1", "valve", False)]
    (report,) = e.tick(T0 + 1)
    assert report.kind == ACTION_KIND and report.rule == "close_valve" and report.value is False
    assert report.attrs["outcome"] == "done" and report.attrs["trigger_rule"] == "leak"
    assert report.attrs["trigger_event"] == ev[0].id
    assert report.attrs["component_code"] == "3205080101000001"


async def test_rate_limit_min_interval_and_max_per_day() -> None:
    valves = FakeValves()
    # The valve opens again on every clear, so each close moves it (a close of a closed valve is free).
    opener = {**LEAK_RULES["actions"][0], "id": "open_valve", "when": "cleared", "value": True}
    e = make(valves, actions=[LEAK_RULES["actions"][0], {**opener, "min_interval_s": 0, "max_per_day": 10}])
    closes = []
    for k, ts in enumerate([T0, T0 + 100, T0 + 700, T0 + 1400]):
        ev = leak(e, ts, True)
        await e.actions.wait_idle()
        ev += leak(e, ts + 1, False)
        await e.actions.wait_idle()
        ev += e.tick(ts + 2)
        closes += [x for x in ev if x.kind == ACTION_KIND and x.rule == "close_valve"]
        assert len([x for x in ev if x.kind == "leak"]) == 2, k
    # 2nd: within 600 s of the first; 4th: third write of the day > max_per_day 2. Each is held,
    # then dropped when the leak clears before the limit lets it run.
    outcomes = [x.attrs["outcome"] for x in closes]
    assert outcomes == ["done", "rate_limited", "dropped", "done", "rate_limited", "dropped"]
    assert closes[1].attrs["error"] == "min_interval_s: held, runs in 500 s if leak is still raised on d1"
    assert closes[4].attrs["error"] == "max_per_day: held, runs in 85000 s if leak is still raised on d1"
    assert closes[5].attrs["error"] == "leak cleared on d1 before the rate limit let it run"
    assert [v for _, _, v in valves.writes].count(False) == 2
    # A day later the limit has rolled over.
    leak(e, T0 + 90_000, True)
    await e.actions.wait_idle()
    assert [v for _, _, v in valves.writes].count(False) == 3


async def test_manual_override_blocks_the_write_and_is_reported() -> None:
    valves = FakeValves()
    e = make(valves)
    e.set_override("d1", "close_valve", True)
    ev = leak(e, T0, True)
    assert [x.attrs["outcome"] for x in ev if x.kind == ACTION_KIND] == ["overridden"]
    await e.actions.wait_idle()
    assert valves.writes == []
    e.set_override("d1", "close_valve", False)
    leak(e, T0 + 10, False)
    leak(e, T0 + 20, True)
    await e.actions.wait_idle()
    assert valves.writes == [("d1", "valve", False)]


async def test_failures_and_timeouts_are_reported_never_raised() -> None:
    valves = FakeValves()
    action = {**LEAK_RULES["actions"][0], "min_interval_s": 0, "max_per_day": 10, "timeout_s": 0.05}
    e = make(valves, actions=[action])
    out: list[Event] = []
    faults: list[tuple[BaseException | None, bool]] = [
        (WriteRejectedError("d1", "valve", "point is not writable"), False),
        (DeviceTimeoutError("d1", ("valve",), 1.0), False),
        (None, True),
        (RuntimeError("bug in the target"), False),
    ]
    for k, (fail, hang) in enumerate(faults):
        valves.fail, valves.hang = fail, hang
        out += leak(e, T0 + 2 * k, True)  # reports of earlier writes come back with later calls
        await e.actions.wait_idle()
        out += leak(e, T0 + 2 * k + 1, False)
    out += e.tick(T0 + 10)
    reports = [x for x in out if x.kind == ACTION_KIND]
    assert [r.attrs["outcome"] for r in reports] == ["failed", "failed", "timeout", "failed"]
    assert reports[0].attrs["error"].startswith("WriteRejectedError")
    assert reports[1].attrs["error"].startswith("DeviceTimeoutError")
    assert reports[3].attrs["error"] == "RuntimeError: bug in the target"


def test_outside_an_event_loop_the_action_fails_cleanly() -> None:
    valves = FakeValves()
    ev = leak(make(valves), T0, True)
    (report,) = [x for x in ev if x.kind == ACTION_KIND]
    assert report.attrs["outcome"] == "failed" and report.attrs["error"] == "no running event loop"
    assert [x.kind for x in ev] == ["leak", ACTION_KIND]


async def test_no_target_and_cleared_trigger_and_callback_delivery() -> None:
    e = make(None)
    ev = leak(e, T0, True)
    assert [x.attrs["outcome"] for x in ev if x.kind == ACTION_KIND] == ["no_target"]
    delivered: list[Event] = []
    valves = FakeValves()
    cfg = RulesConfig.model_validate(
        {**LEAK_RULES, "actions": [{**LEAK_RULES["actions"][0], "when": "cleared", "value": True}]}
    )
    e = RuleEngine(cfg, [dev(points=("leak", "valve"))], target=valves, events=delivered.append)
    leak(e, T0, True)
    await e.actions.wait_idle()
    assert valves.writes == []
    leak(e, T0 + 1, False)
    await e.actions.wait_idle()
    assert valves.writes == [("d1", "valve", True)]
    assert [x.attrs["outcome"] for x in delivered] == ["done"]
    assert e.tick(T0 + 2) == []  # delivered through the callback, not again at tick


class CollectingSink:
    def __init__(self) -> None:
        self.events: list[Event] = []

    def put_readings(self, readings: Any) -> None:
        return None

    def put_event(self, event: Event) -> None:
        self.events.append(event)


class OwnerWrites(ActionTarget):
    """What the runtime does: a write goes to the bus owner of the device's bus."""

    def __init__(self, owner: BusOwner) -> None:
        self.owner = owner

    async def write_point(self, device_id: str, point: str, value: Value) -> None:
        await self.owner.write(device_id, point, value)

    async def read_point(self, device_id: str, point: str) -> Reading:
        (sample,) = await self.owner.read_now(device_id, point)
        return Reading(device_id, point, sample.value, "", T0, sample.quality)


async def test_leak_closes_a_real_modbus_valve_through_the_bus_owner() -> None:
    from citynerve.drivers.modbus.config import ModbusDeviceConfig, ModbusTcpBusConfig
    from citynerve.drivers.modbus.driver import ModbusDriver

    coils = ModbusSequentialDataBlock(0, [0] * 16)
    inputs = ModbusSequentialDataBlock(0, [0] * 16)
    ctx = ModbusServerContext(devices={1: ModbusDeviceContext(co=coils, di=inputs)}, single=False)
    server = ModbusTcpServer(ctx, address=("127.0.0.1", 0))
    await server.serve_forever(background=True)
    port = server.transport.sockets[0].getsockname()[1]  # type: ignore[attr-defined]
    coils.setValues(4, [1])  # valve open (coil 3; the block is 1-based)
    device = ModbusDeviceConfig.model_validate(
        {
            "id": "riser-1",
            "bus": "b1",
            "profile": "valve-controller",
            "address": 1,
            "poll_interval_s": 0.1,
            "location": {"address_code": "320508001001", "building": "B1"},
            "component_code": "3205080101000007",
            "points": {
                "leak": {"table": "discrete", "address": 0},
                "valve": {"table": "coil", "address": 3, "writable": True},
            },
        }
    )
    bus = ModbusTcpBusConfig(id="b1", host="127.0.0.1", port=port, timeout_s=0.5)
    cfg = RulesConfig.model_validate(
        {
            "rules": [{"id": "leak", "kind": "boolean", "point": "leak", "severity": "major"}],
            "actions": [
                {"id": "close_valve", "on": ["leak"], "point": "valve", "value": False, "verify_after_s": 0.2}
            ],
        }
    )
    sink = CollectingSink()
    pipeline_events: list[Event] = []
    engine_holder: list[RuleEngine] = []
    pipe = Pipeline({device.id: device}, sink, rules=_Lazy(engine_holder))
    owner = BusOwner(bus, [device], ModbusDriver(bus, [device]), pipe)
    engine = RuleEngine(cfg, [device], target=OwnerWrites(owner), events=pipeline_events.append)
    engine_holder.append(engine)
    task = asyncio.create_task(owner.run(), name="bus[b1].owner")
    try:
        await asyncio.sleep(0.3)
        assert coils.getValues(4, 1) == [True]
        inputs.setValues(1, [1])  # the leak sensor trips
        for _ in range(50):
            await asyncio.sleep(0.1)
            if pipeline_events:
                break
        assert coils.getValues(4, 1) == [False]  # the valve was closed on the real server
        (report,) = pipeline_events
        assert report.attrs["outcome"] == "done" and report.device_id == "riser-1"
        assert [e.kind for e in sink.events] == ["leak"]
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError, Exception):
            await task
        await server.shutdown()


class _Lazy:
    """The pipeline needs its rules hook before the engine (which needs the owner) exists."""

    def __init__(self, holder: list[RuleEngine]) -> None:
        self.holder = holder

    def evaluate(self, readings: Any) -> Any:
        return self.holder[0].evaluate(readings) if self.holder else ()

    def tick(self, now: float) -> Any:
        return self.holder[0].tick(now) if self.holder else ()


async def test_suspected_leak_closes_a_real_cjt188_valve_on_a_serial_line() -> None:
    """A simulated CJ/T 188 water meter on a pty pair (real frames, real serial I/O): water runs
    fast, the over-use rule raises, the engine closes the meter's valve through the bus owner."""
    from citynerve.drivers.cjt188 import Cjt188Device, Cjt188Driver
    from citynerve.drivers.serialio import SerialBusConfig
    from citynerve.hil.sim.serial import SerialMeterBus, SimCjt188Meter

    meter = SimCjt188Meter("00000000000012", flow_m3=100.0)
    device = Cjt188Device.model_validate(
        {
            "id": "wm-0012",
            "bus": "rs485-1",
            "profile": "cjt188-water-cold",
            "address": "00000000000012",
            "poll_interval_s": 0.2,
            "location": {"address_code": "320508001", "building": "B1", "room": "101"},
            "points": {
                "flow_total": {"field": "flow_total", "unit": "m3"},
                "valve": {"field": "valve", "writable": True},
            },
        }
    )
    cfg = RulesConfig.model_validate(
        {
            "rules": [
                {
                    "id": "burst",
                    "kind": "consumption",
                    "point": "flow_total",
                    "window": "sliding",
                    "window_s": 5,
                    "bin_s": 1,
                    "above": 0.2,
                    "severity": "major",
                }
            ],
            "actions": [
                {
                    "id": "close_valve",
                    "on": ["burst"],
                    "point": "valve",
                    "value": "close",
                    "verify_after_s": 0.2,
                }
            ],
        }
    )
    sink = CollectingSink()
    reports: list[Event] = []
    holder: list[RuleEngine] = []
    async with SerialMeterBus(meters=[meter]) as line:
        bus = SerialBusConfig(id="rs485-1", protocol="cjt188", timeout_s=1.0, port=line.port)
        pipe = Pipeline({device.id: device}, sink, rules=_Lazy(holder))
        owner = BusOwner(bus, [device], Cjt188Driver(bus, [device]), pipe)
        holder.append(RuleEngine(cfg, [device], target=OwnerWrites(owner), events=reports.append))
        task = asyncio.create_task(owner.run(), name="bus[rs485-1].owner")
        try:
            for _ in range(100):  # a burst pipe: 0.05 m3 every 0.1 s while the valve is open
                await asyncio.sleep(0.1)
                if meter.valve == "open":
                    meter.flow_m3 += 0.05
                if reports:
                    break
            assert meter.valve == "closed"
            (report,) = reports
            assert report.attrs["outcome"] == "done" and report.value == "close"
            assert [(e.kind, e.state.value) for e in sink.events] == [("burst", "raised")]
        finally:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
