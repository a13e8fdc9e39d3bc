"""A device on the edge of its line (it answers for a while, then is silent for a while, for ever)
through the real bus owner, Modbus driver, pipeline and rule engine, against a simulated water meter
on a pymodbus server.

It raised and cleared device_offline (and the offline rule that follows it, `meter_offline`) at
every turn: 40 events and 50 log lines a minute with a 3 s / 3 s flap. With the hysteresis of
gateway/bus/states.py it raises as quickly as before, its alarm then stays raised while it flaps,
and clears once it has answered steadily for its hold; its readings are stored all along.

Time: the owner's clock is the monotonic clock plus a skew the test moves on, a minute per flap
turn; each step waits for a state of the owner (offline, answering), never for a duration. The
hold margins (30 s of skew) are far above the real time a step takes.
"""

from __future__ import annotations

import logging
import time

import pytest

from citynerve.drivers.modbus.config import ModbusDeviceConfig, ModbusTcpBusConfig
from citynerve.drivers.modbus.driver import ModbusDriver
from citynerve.gateway.api import Clock, Event, EventState, Quality, Reading
from citynerve.gateway.bus import OFFLINE_KIND, BusOwner
from citynerve.gateway.bus.states import FLAP_HOLD_MAX_S, FLAP_HOLD_S, flap_hold_s
from citynerve.gateway.pipeline import Pipeline
from citynerve.gateway.rules import RuleEngine, RulesConfig
from citynerve.gateway.wiring import RuledBusSink
from citynerve.hil.sim.modbus import SimDevice, SimProfile, serve_tcp
from tests.bus.owner_support import running, wait_for

R, C = EventState.RAISED, EventState.CLEARED
SILENT_S = ANSWERING_S = 30.0  # one flap turn: a minute of the owner's clock


class SkewedClock(Clock):
    """The system clocks plus `skew` seconds, moved on by the test: minutes pass in a step."""

    def __init__(self) -> None:
        self.skew = 0.0

    def monotonic(self) -> float:
        return time.monotonic() + self.skew

    def wall(self) -> float:
        return time.time() + self.skew


class Store:
    """What the pipeline stores: readings and events."""

    def __init__(self) -> None:
        self.readings: list[Reading] = []
        self.events: list[Event] = []

    def put_readings(self, readings: list[Reading]) -> None:
        self.readings.extend(readings)

    def put_event(self, event: Event) -> None:
        self.events.append(event)


def meter(dev_id: str, unit: int) -> ModbusDeviceConfig:
    return ModbusDeviceConfig.model_validate(
        {
            "id": dev_id,
            "bus": "b1",
            "profile": "modbus-water-meter",
            "address": unit,
            "location": {"address_code": "310106013007"},
            "poll_interval_s": 0.1,
            "points": {
                "flow_rate": {"table": "holding", "address": 0, "type": "float32", "word_order": "little"}
            },
        }
    )


def test_the_hold_starts_at_the_third_offline_in_ten_minutes_and_doubles_up_to_ten_minutes() -> None:
    assert [flap_hold_s(n) for n in range(1, 9)] == [0, 0, 60, 120, 240, 480, 600, 600]
    assert (FLAP_HOLD_S, FLAP_HOLD_MAX_S) == (60.0, 600.0)
    assert flap_hold_s(10**6) == FLAP_HOLD_MAX_S  # no overflow, whatever the count


async def test_a_flapping_meter_raises_once_while_it_flaps_and_clears_after_answering_steadily(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO, logger="citynerve")
    endpoint = await serve_tcp(
        [
            SimDevice(SimProfile.load("modbus-water-meter"), 2),
            SimDevice(SimProfile.load("modbus-water-meter"), 3),
        ]
    )
    try:
        bus = ModbusTcpBusConfig(
            id="b1", host=endpoint.host, port=endpoint.port, timeout_s=0.2, retries=0, offline_after=3,
            backoff_initial_s=0.2, backoff_max_s=0.4,
        )  # fmt: skip
        flapper, quiet = meter("wm-2", 2), meter("wm-3", 3)
        devices = {d.id: d for d in (flapper, quiet)}
        rules = RulesConfig.model_validate(
            {"rules": [{"id": "meter_offline", "kind": "offline", "severity": "major"}]}
        )
        engine = RuleEngine(rules, devices)
        store = Store()
        pipeline = Pipeline(devices, store, engine)
        clock = SkewedClock()
        owner = BusOwner(
            bus,
            [flapper, quiet],
            ModbusDriver(bus, [flapper, quiet]),
            RuledBusSink(pipeline, engine),
            clock=clock,
        )
        health = owner.health["wm-2"]

        async def answered(more: int) -> None:
            """The flapper has answered `more` further polls (each also judges its alarm's hold)."""
            n = health.transactions
            await wait_for(
                lambda: health.online is True and health.transactions >= n + more, 20, "wm-2 answers"
            )

        async def turn() -> None:
            """One flap turn: silent until the owner takes it offline, then answering."""
            endpoint.silence(2)
            await wait_for(lambda: health.online is False, 20, "wm-2 offline")
            clock.skew += SILENT_S
            endpoint.revive(2)
            await answered(2)
            clock.skew += ANSWERING_S
            await answered(2)

        def events(kind: str, since: int, until: int | None = None) -> list[EventState]:
            return [e.state for e in store.events[since:until] if e.kind == kind and e.device_id == "wm-2"]

        def logged(since: int, until: int | None = None) -> list[str]:
            return [r.getMessage() for r in caplog.records[since:until] if "wm-2" in r.getMessage()]

        async with running(owner):
            await answered(2)
            marks = [(len(store.events), len(caplog.records))]  # at each ten minutes of flapping
            for _ in range(2):
                for _ in range(10):  # ten turns: ten minutes
                    await turn()
                marks.append((len(store.events), len(caplog.records)))
            (e0, l0), (e1, l1), (e2, l2) = marks
            # The first ten minutes: offline raised at once, cleared at its first answer twice,
            # raised the third time and held from then on (it was R, C at every turn, and the
            # rule's R, C with them).
            assert events(OFFLINE_KIND, e0, e1) == [R, C, R, C, R], events(OFFLINE_KIND, e0, e1)
            assert events("meter_offline", e0, e1) == [R, C, R, C, R]
            # The next ten minutes of the same flapping: nothing (it was 20 + 20 events).
            assert store.events[e1:e2] == []
            # Log lines naming it: "not answering", offline and the rule's raise at each of the
            # three raises, back online and the rule's clear at the two clears; none afterwards.
            assert len(logged(l0, l1)) <= 15, logged(l0, l1)
            assert logged(l1, l2) == []

            # Steady again (it answers since the last turn): its alarm stays raised for the hold
            # its last offline set (flapping all along: the most), then clears once.
            (status,) = (d for d in owner.snapshot()["devices"] if d["id"] == "wm-2")
            assert status["online"] is True and status["offline_alarm"] is True
            assert status["offline_hold_s"] == FLAP_HOLD_MAX_S
            clock.skew += FLAP_HOLD_MAX_S - ANSWERING_S - 60
            await answered(2)
            assert store.events[e2:] == []
            clock.skew += 90
            await answered(2)
            assert events(OFFLINE_KIND, e2) == [C] and events("meter_offline", e2) == [C]
            quiet_polls = owner.health["wm-3"].transactions

        assert pipeline.alarms.devices_with(OFFLINE_KIND) == set()
        # Its readings were stored while its alarm was held: the first good one after each offline.
        raised, cleared = [e.ts for e in store.events if e.kind == OFFLINE_KIND][-2:]
        held = [r for r in store.readings if r.device_id == "wm-2" and raised < r.ts < cleared]
        assert sum(r.quality is Quality.GOOD for r in held) >= 17
        # The quiet meter on the same bus: polled on, never an event.
        assert quiet_polls > 100
        assert [e for e in store.events if e.device_id == "wm-3"] == []
    finally:
        await endpoint.close()
