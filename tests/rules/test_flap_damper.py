"""The flap damper (gateway/rules/flapping.py): one rule instance whose input raises and clears its
alarm again and again (a smoke detector with a loose wire) is bounded in events and log lines, its
alarm held raised until the input stays clear, with one maintenance event for a technician.

Readings go through the real engine with the shipped smoke-fire pack; end to end through the
pipeline into the real outbox with the uplink down (what the platform would get after the outage).
"""

from __future__ import annotations

import logging
from pathlib import Path

import pytest

from citynerve.gateway.api import DeviceConfig, Event, EventState, Sample, SampleBatch
from citynerve.gateway.pipeline import Pipeline
from citynerve.gateway.rules import PackRef, RuleEngine, RulesConfig
from citynerve.gateway.rules.flapping import FLAP_KIND
from citynerve.gateway.store import AsyncOutbox, Lane, OutboxWriter
from tests.rules.conftest import T0, dev, engine, feed
from tests.rules.test_panel_confirmed import _device

SMOKE = {"id": "smoke", "kind": "boolean", "point": "smoke", "severity": "critical"}


def _detectors() -> list[DeviceConfig]:
    # Flat 301's two detectors (sd-11 has the loose wire) and one in flat 302.
    return [
        _device("sd-11", 1, "modbus-smoke-detector", "smoke_alarm", ["zone:301", "building:B1"]),
        _device("sd-12", 2, "modbus-smoke-detector", "smoke_alarm", ["zone:301", "building:B1"]),
        _device("sd-21", 3, "modbus-smoke-detector", "smoke_alarm", ["zone:302", "building:B1"]),
    ]


def _pack_engine() -> RuleEngine:
    return RuleEngine(RulesConfig(packs=(PackRef(name="smoke-fire"),)), _detectors())


def _toggle(e: RuleEngine, start: float, seconds: int, device: str = "sd-11") -> list[Event]:
    """The register toggles at every 1 s poll (alarm at even seconds), with the runtime's tick."""
    out: list[Event] = []
    for s in range(seconds):
        t = start + s
        out += feed(e, [(t, s % 2 == 0)], "smoke_alarm", device, tick=False)
        out += e.tick(t + 0.5)
    return out


def _clear_for(e: RuleEngine, start: float, seconds: int, device: str = "sd-11") -> list[Event]:
    out: list[Event] = []
    for s in range(seconds):
        out += feed(e, [(start + s, False)], "smoke_alarm", device, tick=False)
        out += e.tick(start + s + 0.5)
    return out


def _of(events: list[Event], device: str, kind: str) -> list[Event]:
    return [ev for ev in events if ev.device_id == device and ev.kind == kind]


def test_flapping_detector_is_bounded_and_held_raised(caplog: pytest.LogCaptureFixture) -> None:
    e = _pack_engine()
    rule = "smoke-fire.smoke_register"
    caplog.set_level(logging.INFO, logger="citynerve.gateway.rules")
    # The first alarm goes out in the same call (a fire is never delayed).
    first = feed(e, [(T0, True)], "smoke_alarm", "sd-11", tick=False)
    assert [(ev.kind, ev.state) for ev in first] == [("smoke", EventState.RAISED)]
    out = first + _toggle(e, T0 + 1, 599)  # ten minutes of a loose wire
    smoke = _of(out, "sd-11", "smoke")
    # 6 raises and clears pass (a door opened three times a minute is not flapping); the 7th, a
    # raise, goes out and the instance is flapping: nothing more for the next 9+ minutes.
    assert [ev.state for ev in smoke] == [EventState.RAISED, EventState.CLEARED] * 3 + [EventState.RAISED]
    assert smoke[-1].ts == T0 + 7
    notices = _of(out, "sd-11", FLAP_KIND)
    assert [(n.state, n.rule, n.value, n.severity.name) for n in notices] == [
        (EventState.RAISED, rule, 7, "MINOR")
    ]
    assert notices[0].attrs["alarm_kind"] == "smoke" and notices[0].attrs["location"]["building"] == "B1"
    # The alarm stays raised (clears held): the registry and status see it, and the notice.
    assert {(a.device_id, a.kind, a.rule) for a in e.active()} >= {
        ("sd-11", "smoke", rule),
        ("sd-11", FLAP_KIND, rule),
    }
    # At most one log line per minute of the flapping instance (the first minute: its 7 events).
    lines = [r for r in caplog.records if "sd-11" in r.getMessage() and rule in r.getMessage()]
    assert len(lines) <= 7 + 1 + 10, [r.getMessage() for r in lines]
    # Another detector's real alarm goes out at once meanwhile.
    fire = feed(e, [(T0 + 600, True)], "smoke_alarm", "sd-21", tick=False)
    assert [(ev.device_id, ev.kind, ev.state) for ev in fire] == [("sd-21", "smoke", EventState.RAISED)]
    # The wire is fixed: after 5 min clear the alarm clears and so does the notice (value: every
    # raise and clear of the episode), once.
    end = _clear_for(e, T0 + 600, 400)
    cleared = [(ev.kind, ev.state, ev.ts - T0) for ev in end if ev.device_id == "sd-11" and ev.rule == rule]
    assert cleared == [("smoke", EventState.CLEARED, 900.5), (FLAP_KIND, EventState.CLEARED, 900.5)]
    assert _of(end, "sd-11", FLAP_KIND)[0].value == 600
    assert not [a for a in e.active() if a.device_id == "sd-11" and a.rule == rule]
    # Afterwards the detector is believed again at once.
    again = feed(e, [(T0 + 1100, True)], "smoke_alarm", "sd-11", tick=False)
    assert [(ev.kind, ev.state) for ev in _of(again, "sd-11", "smoke")] == [("smoke", EventState.RAISED)]


def test_normal_use_is_not_flapping_and_zero_turns_it_off() -> None:
    door = {"id": "door", "kind": "boolean", "point": "value", "severity": "info"}
    e = engine([door, {**door, "id": "door_raw", "flap_limit": 0}])
    # A flat's door in busy use: opened and closed 3 times within a minute, every other minute, for
    # an hour (a resident going out, back for the keys, out again; a visitor). A door or input
    # changing more often in normal use is reported with a hold time (the packs' `held_open`) or
    # `flap_limit = 0`.
    series = [(T0 + m * 120 + s, s in (0, 20, 40)) for m in range(30) for s in (0, 10, 20, 30, 40, 50)]
    out = feed(e, series)
    assert not [ev for ev in out if ev.kind == FLAP_KIND]
    assert len([ev for ev in out if ev.rule == "door"]) == 180
    # Toggling every second: `flap_limit = 0` sends every event, the default holds them.
    out = feed(e, [(T0 + 4000 + s, s % 2 == 0) for s in range(120)])
    assert len([ev for ev in out if ev.rule == "door_raw"]) == 120
    assert len([ev for ev in out if ev.rule == "door" and ev.kind == "door"]) == 7


def test_flapping_survives_snapshot_restore_and_clock_steps() -> None:
    e = engine([SMOKE], [dev("d1", ("smoke",))])
    out = feed(e, [(T0 + s, s % 2 == 0) for s in range(60)], "smoke")
    assert len([ev for ev in out if ev.kind == FLAP_KIND]) == 1
    snap = e.snapshot()
    e2 = engine([SMOKE], [dev("d1", ("smoke",))])
    assert e2.restore(snap) == 1
    assert {a.kind for a in e2.active()} == {"smoke", FLAP_KIND}
    # Still flapping after the restart: nothing new goes out, not even a second notice.
    assert not feed(e2, [(T0 + 60 + s, s % 2 == 0) for s in range(60)], "smoke")
    # The wall clock steps a day ahead (NTP): the settle time is real time, not the step.
    e2.shift(86400.0)
    t = T0 + 86400.0 + 120
    assert not feed(e2, [(t, False)], "smoke")
    assert not e2.tick(t + 200)
    end = e2.tick(t + 300)
    assert [(ev.kind, ev.state) for ev in end] == [
        ("smoke", EventState.CLEARED),
        (FLAP_KIND, EventState.CLEARED),
    ]
    # A registry that no longer holds the notice (it settled after the snapshot): start fresh.
    e3 = engine([SMOKE], [dev("d1", ("smoke",))])
    e3.restore(snap)
    assert e3.forget_cleared([]) >= 1
    assert not e3.active()
    assert [ev.kind for ev in feed(e3, [(T0 + 200, True)], "smoke")] == ["smoke"]


def test_damaged_flapping_snapshot_starts_fresh() -> None:
    e = engine([SMOKE], [dev("d1", ("smoke",))])
    feed(e, [(T0 + s, s % 2 == 0) for s in range(60)], "smoke")
    snap = e.snapshot()
    snap["flapping"]["smoke|d1"] = [True, "x", None, 1, "y"]
    e2 = engine([SMOKE], [dev("d1", ("smoke",))])
    e2.restore(snap)
    assert FLAP_KIND not in {a.kind for a in e2.active()}


@pytest.mark.asyncio
async def test_flapping_detector_bounded_in_the_outbox(tmp_path: Path) -> None:
    """Uplink down, ten minutes of sd-11 toggling at every 1 s poll through the pipeline into the
    outbox: what waits for the platform from sd-11 is bounded (the old code stored 600 of its
    events per rule, and kept storing 2 a second)."""
    devs = {d.id: d for d in _detectors()}
    clock = [T0]
    eng = RuleEngine(RulesConfig(packs=(PackRef(name="smoke-fire"),)), devs, clock=lambda: clock[0])
    async with AsyncOutbox(tmp_path / "gw.db") as outbox:
        writer = OutboxWriter(outbox, max_latency_s=0.05)
        pipe = Pipeline(devs, writer, eng)
        per_minute: list[int] = []
        seen = 0
        for minute in range(10):
            for s in range(60):
                t = T0 + minute * 60 + s
                clock[0] = t
                pipe.submit(SampleBatch("sd-11", t, (Sample("smoke_alarm", s % 2 == 0),)))
                pipe.submit(SampleBatch("sd-12", t, (Sample("smoke_alarm", False),)))
                pipe.tick(t + 0.5)
            await writer.flush()
            rows = await outbox.peek(Lane.EVENT, limit=100_000)
            n = sum(1 for r in rows if getattr(r.record, "device_id", None) == "sd-11")
            per_minute.append(n - seen)
            seen = n
    # The first minute: the alarm's 7 events, the flapping notice, the unwanted-alarm maintenance
    # event (a detector its flat's other detector never joined); then nothing.
    assert per_minute[0] <= 10, per_minute
    assert per_minute[1:] == [0] * 9, per_minute
