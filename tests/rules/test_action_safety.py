"""Local actions left unattended: state interlocks (no valve closes during a fire in the same
building), read-back after every write (a real pymodbus server whose coil does not follow), dry run."""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
from typing import Any

import pytest
from pydantic import ValidationError
from pymodbus.datastore import ModbusDeviceContext, ModbusSequentialDataBlock, ModbusServerContext
from pymodbus.server import ModbusTcpServer

from citynerve.gateway.api import Event, EventState, Severity
from citynerve.gateway.bus import BusOwner
from citynerve.gateway.pipeline import Pipeline
from citynerve.gateway.rules import ACTION_KIND, RuleEngine, RulesConfig

from .conftest import T0, dev
from .test_actions import LEAK_RULES, CollectingSink, FakeValves, OwnerWrites, _Lazy, leak

LOC_7 = {"address_code": "320508001007", "building": "7"}
LOC_8 = {"address_code": "320508001008", "building": "8"}


def engine(valves: FakeValves, *, valve_building: dict[str, Any] = LOC_7, **over: Any) -> RuleEngine:
    cfg = RulesConfig.model_validate({**LEAK_RULES, **over})
    devices = [
        dev(points=("leak", "valve")).model_copy(update={"location": _loc(valve_building)}),
        dev("fp-main", points=("fire_alarm",)).model_copy(update={"location": _loc(LOC_7)}),
    ]
    return RuleEngine(cfg, devices, target=valves, clock=lambda: T0)


def _loc(data: dict[str, Any]) -> Any:
    from citynerve.gateway.api import Location

    return Location.model_validate(data)


def fire(state: EventState, ts: float, device: str = "fp-main") -> Event:
    """What the fire panel's driver sends through its bus owner (not a rule of the engine)."""
    return Event(device, "fire", state, Severity.CRITICAL, ts, "firepanel", True, "FIRE zone 3", {})


def reports(events: list[Event]) -> list[Event]:
    return [e for e in events if e.kind == ACTION_KIND]


async def test_the_shipped_interlock_keeps_water_on_during_a_fire_in_the_same_building(
    caplog: pytest.LogCaptureFixture,
) -> None:
    valves = FakeValves()
    e = engine(valves, actions=[{**LEAK_RULES["actions"][0], "min_interval_s": 0}])
    e.on_event(fire(EventState.RAISED, T0))
    (blocked,) = reports(leak(e, T0 + 1, True))
    await e.actions.wait_idle()
    assert valves.writes == []
    assert blocked.attrs["outcome"] == "interlocked" and blocked.severity is Severity.MAJOR
    assert blocked.attrs["error"] == "interlock water_on_during_fire: fire raised on fp-main (building 7)"
    assert any("interlocked" in r.getMessage() and r.levelname == "WARNING" for r in caplog.records)
    # The fire is cleared and the leak still stands: the held action closes the valve now.
    e.on_event(fire(EventState.CLEARED, T0 + 2))
    await e.actions.wait_idle()
    assert valves.writes == [("d1", "valve", False)]


async def test_a_fire_in_another_building_does_not_block_and_opening_is_never_blocked() -> None:
    valves = FakeValves()
    e = engine(valves, valve_building=LOC_8)
    e.on_event(fire(EventState.RAISED, T0))
    leak(e, T0 + 1, True)
    await e.actions.wait_idle()
    assert valves.writes == [("d1", "valve", False)]
    # Opening a valve (value True) during a fire in its own building is not what the interlock guards.
    opener = {**LEAK_RULES["actions"][0], "id": "open_valve", "value": True, "when": "cleared"}
    valves = FakeValves()
    e = engine(valves, actions=[opener])
    e.on_event(fire(EventState.RAISED, T0))
    leak(e, T0 + 1, True)
    leak(e, T0 + 2, False)
    await e.actions.wait_idle()
    assert valves.writes == [("d1", "valve", True)]


async def test_a_smoke_rule_of_the_engine_blocks_too_and_interlocks_are_configurable() -> None:
    rules = [
        *LEAK_RULES["rules"],
        {
            "id": "smoke",
            "kind": "boolean",
            "point": "smoke",
            "severity": "critical",
            "select": {"devices": ["sd"]},
        },
    ]
    valves = FakeValves()
    cfg = RulesConfig.model_validate({**LEAK_RULES, "rules": rules})
    devices = [
        dev(points=("leak", "valve")).model_copy(update={"location": _loc(LOC_7)}),
        dev("sd", points=("smoke",)).model_copy(update={"location": _loc(LOC_7)}),
    ]
    e = RuleEngine(cfg, devices, target=valves, clock=lambda: T0)
    from citynerve.gateway.api import Reading

    e.evaluate([Reading("sd", "smoke", True, "", T0)])
    assert [r.attrs["outcome"] for r in reports(leak(e, T0 + 1, True))] == ["interlocked"]
    # An operator may replace the shipped interlock by id (here: switch it off) ...
    off = [{"id": "water_on_during_fire", "points": ["valve"], "while_raised": ["fire"], "enabled": False}]
    assert RulesConfig.model_validate({**LEAK_RULES, "interlocks": off}).effective_interlocks() == ()
    # ... and add their own; the shipped one stays.
    mine = [{"id": "no_pump_stop", "actions": ["close_valve"], "while_raised": ["flood"], "scope": "gateway"}]
    ids = [
        i.id for i in RulesConfig.model_validate({**LEAK_RULES, "interlocks": mine}).effective_interlocks()
    ]
    assert ids == ["water_on_during_fire", "no_pump_stop"]
    with pytest.raises(ValidationError, match="names unknown action ghost"):
        RulesConfig.model_validate({**LEAK_RULES, "interlocks": [{**mine[0], "actions": ["ghost"]}]})
    with pytest.raises(ValidationError, match="needs `actions` or `points`"):
        RulesConfig.model_validate({**LEAK_RULES, "interlocks": [{"id": "x", "while_raised": ["fire"]}]})


async def test_dry_run_writes_nothing_and_says_what_it_would_have_done(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO, logger="citynerve.gateway.rules.actions")
    valves = FakeValves()
    e = engine(valves, dry_run_actions=True)
    (report,) = reports(leak(e, T0, True))
    await e.actions.wait_idle()
    assert valves.writes == [] and valves.reads == 0
    assert report.attrs["outcome"] == "dry_run" and report.severity is Severity.INFO
    assert report.message == "close_valve: write valve=False on d1: dry_run (dry run: nothing written)"
    assert any("action close_valve on d1.valve = False: dry_run" in r.getMessage() for r in caplog.records)


async def test_a_fake_device_that_does_not_follow_is_reported_after_bounded_read_backs() -> None:
    valves = FakeValves()
    valves.stuck_at = True
    action = {**LEAK_RULES["actions"][0], "verify_retries": 2, "verify_after_s": 0}
    e = engine(valves, actions=[action])
    leak(e, T0, True)
    await e.actions.wait_idle()
    (report,) = e.tick(T0 + 1)
    assert valves.reads == 3
    assert report.attrs["outcome"] == "not_followed" and report.severity is Severity.MAJOR
    assert report.attrs["error"] == "reads True (good), expected False after 3 read-backs"


class StuckCoils(ModbusSequentialDataBlock):
    """A coil block that ignores writes from the network once `stuck` (a relay welded shut)."""

    stuck = False

    def setValues(self, address: int, values: Any) -> None:
        if not self.stuck:
            super().setValues(address, values)

    async def async_setValues(self, address: int, values: Any) -> None:
        self.setValues(address, values)


async def test_a_real_modbus_coil_that_refuses_to_change_raises_an_event() -> None:
    from citynerve.drivers.modbus.config import ModbusDeviceConfig, ModbusTcpBusConfig
    from citynerve.drivers.modbus.driver import ModbusDriver

    coils = StuckCoils(0, [0] * 16)
    inputs = ModbusSequentialDataBlock(0, [0] * 16)
    ctx = ModbusServerContext(devices={1: ModbusDeviceContext(co=coils, di=inputs)}, single=False)
    server = ModbusTcpServer(ctx, address=("127.0.0.1", 0))
    await server.serve_forever(background=True)
    port = server.transport.sockets[0].getsockname()[1]  # type: ignore[attr-defined]
    coils.setValues(4, [1])  # valve open (coil 3; the block is 1-based) ...
    coils.stuck = True  # ... and it will stay open whatever the gateway writes
    device = ModbusDeviceConfig.model_validate(
        {
            "id": "riser-1",
            "bus": "b1",
            "profile": "valve-controller",
            "address": 1,
            "poll_interval_s": 0.1,
            "location": {"address_code": "320508001001", "building": "B1"},
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
                {
                    "id": "close_valve",
                    "on": ["leak"],
                    "point": "valve",
                    "value": False,
                    "verify_after_s": 0.1,
                    "verify_retries": 2,
                }
            ],
        }
    )
    sink = CollectingSink()
    delivered: list[Event] = []
    holder: list[RuleEngine] = []
    pipe = Pipeline({device.id: device}, sink, rules=_Lazy(holder))
    owner = BusOwner(bus, [device], ModbusDriver(bus, [device]), pipe)
    got = asyncio.Event()

    def deliver(event: Event) -> None:
        delivered.append(event)
        got.set()

    holder.append(RuleEngine(cfg, [device], target=OwnerWrites(owner), events=deliver))
    task = asyncio.create_task(owner.run(), name="bus[b1].owner")
    try:
        inputs.setValues(1, [1])  # the leak sensor trips
        await asyncio.wait_for(got.wait(), 20)
        (report,) = delivered
        assert coils.getValues(4, 1) == [True]  # the valve really did not move
        assert report.attrs["outcome"] == "not_followed" and report.severity is Severity.MAJOR
        assert report.attrs["error"] == "reads True (good), expected False after 3 read-backs"
        assert report.device_id == "riser-1" and report.attrs["trigger_rule"] == "leak"
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError, Exception):
            await task
        await server.shutdown()


async def test_two_zones_in_fire_clearing_one_keeps_the_block_and_a_restart_remembers() -> None:
    valves = FakeValves()
    action = {**LEAK_RULES["actions"][0], "min_interval_s": 0}
    e = engine(valves, actions=[action])
    zone_a = fire(EventState.RAISED, T0)
    zone_b = Event(
        "fp-main", "fire", EventState.RAISED, Severity.CRITICAL, T0, "firepanel", "Z4", "FIRE zone 4", {}
    )
    e.on_event(zone_a)
    e.on_event(zone_b)
    e.on_event(fire(EventState.CLEARED, T0 + 1))  # zone A (value True) clears; zone 4 still burns
    assert [r.attrs["outcome"] for r in reports(leak(e, T0 + 2, True))] == ["interlocked"]
    # The rules snapshot keeps the raised fire: a gateway restarted mid-fire still holds the valve.
    restarted = engine(FakeValves(), actions=[action])
    restarted.restore(e.snapshot())
    leak(restarted, T0 + 3, False)
    assert [r.attrs["outcome"] for r in reports(leak(restarted, T0 + 3.5, True))] == ["interlocked"]
    restarted.on_event(
        Event("fp-main", "fire", EventState.CLEARED, Severity.INFO, T0 + 4, "firepanel", "Z4", "", {})
    )
    await restarted.actions.wait_idle()
    assert [(r.attrs["outcome"], r.attrs["held_by_interlock"]) for r in reports(restarted.tick(T0 + 7))] == [
        ("done", "water_on_during_fire")
    ]


async def test_a_held_action_runs_when_the_fire_clears_if_its_leak_still_stands() -> None:
    valves = FakeValves()
    delivered: list[Event] = []
    cfg = RulesConfig.model_validate(LEAK_RULES)
    devices = [
        dev(points=("leak", "valve")).model_copy(update={"location": _loc(LOC_7)}),
        dev("fp-main", points=("fire_alarm",)).model_copy(update={"location": _loc(LOC_7)}),
    ]
    e = RuleEngine(cfg, devices, target=valves, clock=lambda: T0, events=delivered.append)
    e.on_event(fire(EventState.RAISED, T0))
    assert [r.attrs["outcome"] for r in reports(leak(e, T0 + 1, True))] == ["interlocked"]
    e.on_event(fire(EventState.CLEARED, T0 + 60))  # the fire is out, the pipe still leaks
    await e.actions.wait_idle()
    assert valves.writes == [("d1", "valve", False)]
    (report,) = delivered
    assert report.attrs["outcome"] == "done" and report.attrs["held_by_interlock"] == "water_on_during_fire"
    # A leak that stopped during the fire leaves nothing to do when the fire clears.
    valves = FakeValves()
    e = RuleEngine(cfg, devices, target=valves, clock=lambda: T0)
    e.on_event(fire(EventState.RAISED, T0))
    leak(e, T0 + 1, True)
    leak(e, T0 + 2, False)
    e.on_event(fire(EventState.CLEARED, T0 + 60))
    await e.actions.wait_idle()
    assert valves.writes == [] and reports(e.tick(T0 + 61)) == []


async def test_a_held_action_survives_a_restart() -> None:
    e = engine(FakeValves())
    e.on_event(fire(EventState.RAISED, T0))
    assert [r.attrs["outcome"] for r in reports(leak(e, T0 + 1, True))] == ["interlocked"]
    valves = FakeValves()
    restarted = engine(valves)
    restarted.restore(json.loads(json.dumps(e.snapshot())))  # as the snapshot is stored
    restarted.on_event(fire(EventState.CLEARED, T0 + 60))
    await restarted.actions.wait_idle()
    assert valves.writes == [("d1", "valve", False)]
    (report,) = reports(restarted.tick(T0 + 61))
    assert (
        report.attrs["held_by_interlock"] == "water_on_during_fire" and report.attrs["trigger_rule"] == "leak"
    )
