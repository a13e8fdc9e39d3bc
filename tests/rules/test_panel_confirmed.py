"""A fire panel's fire_confirmed (issue 18): the coincidence mode with `confirmed_by` and `solo_s`.

The panel relays the detectors' alarms, so its fire is confirmed by a confirmed detector alarm of its
building (the double knock of EN 54-2 7.12 / BS 5839-1 / GB 50116-2013 4.1.6), or by lasting
`alone_s`; a panel with no gateway detector in its building keeps its own `solo_s` (NFPA 72's 180 s).
Readings go through the real engine, and the shipped pack through the real pipeline.
"""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from citynerve.gateway.api import DeviceConfig, Event, EventState, PointConfig, Sample, SampleBatch
from citynerve.gateway.pipeline import Pipeline
from citynerve.gateway.rules import PackRef, RuleEngine, RulesConfig
from citynerve.hil.eval.harness import CollectingSink
from tests.rules.conftest import T0, dev, engine, feed

SMOKE = {"id": "smoke", "kind": "boolean", "point": "smoke", "severity": "critical"}
FIRE = {"id": "fire", "kind": "boolean", "point": "fire", "severity": "critical"}
SMOKE_CONFIRMED = {
    "id": "smoke_confirmed",
    "kind": "composite",
    "mode": "coincidence",
    "of": ["smoke"],
    "group": "zone",
    "within_s": 1800,
    "alone_s": 1800,
    "severity": "critical",
}
FIRE_CONFIRMED = {
    "id": "fire_confirmed",
    "kind": "composite",
    "mode": "coincidence",
    "of": ["fire"],
    "confirmed_by": ["smoke_confirmed"],
    "group": "building",
    "within_s": 1800,
    "alone_s": 1800,
    "solo_s": 180,
    "severity": "critical",
}
RULES = [SMOKE, FIRE, SMOKE_CONFIRMED, FIRE_CONFIRMED]


def _building() -> RuleEngine:
    devices = [
        dev("a", ("smoke",), tags=("zone:flat-1", "building:b1")),
        dev("b", ("smoke",), tags=("zone:flat-1", "building:b1")),
        dev("c", ("smoke",), tags=("zone:flat-2", "building:b1")),
        dev("panel", ("fire",), tags=("building:b1",)),
        dev("lone-panel", ("fire",), tags=("building:b2",)),
    ]
    return engine(RULES, devices)


def _raised(events: list[Event], rule: str) -> list[tuple[str, float]]:
    return [(e.device_id, e.ts) for e in events if e.rule == rule and e.state is EventState.RAISED]


def test_only_the_panel_gets_it_and_the_relayed_alarm_alone_does_not_confirm() -> None:
    e = _building()
    on = {i.device_id for i in e.instances.values() if i.rule.id == "fire_confirmed"}
    assert on == {"panel", "lone-panel"}  # detectors have no `fire`: no fire_confirmed on them
    # Toast sets off detector a; the panel relays it and stays in fire until reset 15 min later.
    feed(e, [(T0, True), (T0 + 120, False)], "smoke", "a")
    out = feed(e, [(T0 + 1, True)], "fire", "panel")
    out += e.tick(T0 + 200) + e.tick(T0 + 1000)  # past NFPA 72's 180 s: no longer enough here
    out += feed(e, [(T0 + 1020, False)], "fire", "panel")
    assert not _raised(out, "fire_confirmed")
    assert not _raised(e.tick(T0 + 1900), "fire_confirmed")


def test_a_confirmed_detector_alarm_of_the_building_confirms_the_panel() -> None:
    e = _building()
    feed(e, [(T0, True)], "smoke", "a")
    out = feed(e, [(T0 + 1, True)], "fire", "panel")
    assert not _raised(out, "fire_confirmed")
    # The flat's second detector joins: smoke_confirmed on both, and the panel's fire at once.
    out = feed(e, [(T0 + 90, True)], "smoke", "b")
    assert sorted(_raised(out, "smoke_confirmed")) == [("a", T0 + 90), ("b", T0 + 90)]
    assert _raised(out, "fire_confirmed") == [("panel", T0 + 90)]
    # The panel reset clears it.
    out = feed(e, [(T0 + 2000, False)], "fire", "panel")
    assert [(ev.rule, ev.state) for ev in out if ev.rule == "fire_confirmed"] == [
        ("fire_confirmed", EventState.CLEARED)
    ]


def test_a_detector_confirmed_before_the_panel_raised_counts_within_the_window() -> None:
    e = _building()
    feed(e, [(T0, True), (T0 + 30, True)], "smoke", "a")
    feed(e, [(T0 + 30, True)], "smoke", "b")  # confirmed at T0 + 30
    feed(e, [(T0 + 200, False)], "smoke", "a")
    feed(e, [(T0 + 200, False)], "smoke", "b")
    out = feed(e, [(T0 + 600, True)], "fire", "panel")  # the panel's own loop, 10 min later
    assert _raised(out, "fire_confirmed") == [("panel", T0 + 600)]


def test_the_panel_alone_in_fire_for_alone_s_and_a_lone_panel_after_solo_s() -> None:
    e = _building()
    feed(e, [(T0, True)], "fire", "panel")
    feed(e, [(T0, True)], "fire", "lone-panel")
    out = e.tick(T0 + 179)
    assert not _raised(out, "fire_confirmed")
    # No gateway detector in building b2: NFPA 72's 180 s, as before the coincidence.
    assert _raised(e.tick(T0 + 181), "fire_confirmed") == [("lone-panel", T0 + 181)]
    assert not _raised(e.tick(T0 + 1799), "fire_confirmed")
    assert _raised(e.tick(T0 + 1801), "fire_confirmed") == [("panel", T0 + 1801)]


def test_bad_by_names_the_key() -> None:
    with pytest.raises(ValidationError, match="`confirmed_by` names unknown rule nope"):
        RulesConfig.model_validate(
            {"rules": [SMOKE, FIRE, SMOKE_CONFIRMED, {**FIRE_CONFIRMED, "confirmed_by": ["nope"]}]}
        )
    with pytest.raises(ValidationError, match="`confirmed_by` is for mode 'coincidence'"):
        RulesConfig.model_validate(
            {
                "rules": [
                    SMOKE,
                    FIRE,
                    {
                        "id": "x",
                        "kind": "composite",
                        "mode": "any",
                        "of": ["smoke", "fire"],
                        "confirmed_by": ["smoke"],
                    },
                ]
            }
        )
    with pytest.raises(ValidationError, match="solo_s"):
        RulesConfig.model_validate({"rules": [*RULES[:3], {**FIRE_CONFIRMED, "solo_s": 0}]})


def _device(dev_id: str, i: int, profile: str, point: str, tags: list[str]) -> DeviceConfig:
    return DeviceConfig.model_validate(
        {
            "id": dev_id,
            "bus": "rs485",
            "profile": profile,
            "address": i,
            "location": {"address_code": "320508001001", "building": "B1", "room": tags[0]},
            "tags": tags,
            "points": {point: PointConfig()},
        }
    )


def test_shipped_pack_panel_through_the_pipeline() -> None:
    # Building B1: flat 301's two detectors and panel p1 relaying them; panel p2 has no gateway
    # detector. Toast in 301 (4 min, the panel reset 10 min later); then a fire in 301 reaching the
    # hallway; p2 reports a fire for 10 min.
    devs = [
        _device("sd-301a", 1, "modbus-smoke-detector", "smoke_alarm", ["zone:301", "building:B1"]),
        _device("sd-301b", 2, "modbus-smoke-detector", "smoke_alarm", ["zone:301", "building:B1"]),
        _device("p1", 3, "firepanel-gst", "fire_alarm", ["building:B1"]),
        _device("p2", 4, "firepanel-gst", "fire_alarm", ["building:B2"]),
    ]
    eng = RuleEngine(RulesConfig(packs=(PackRef(name="smoke-fire"),)), devs, clock=lambda: clock[0])
    clock = [T0]
    sink = CollectingSink()
    pipe = Pipeline({d.id: d for d in devs}, sink, eng)
    spans = {
        "sd-301a": [(600.0, 840.0), (7200.0, 9000.0)],
        "sd-301b": [(7290.0, 9000.0)],
        "p1": [(602.0, 1440.0), (7202.0, 9600.0)],
        "p2": [(3000.0, 3600.0)],
    }
    points = {d.id: next(iter(d.points)) for d in devs}
    for k in range(5000):
        t = T0 + 2.0 * k
        clock[0] = t
        for d in devs:
            on = any(T0 + a <= t < T0 + b for a, b in spans[d.id])
            pipe.submit(SampleBatch(d.id, t, (Sample(points[d.id], on),)))
        pipe.tick(t)
    raised = [(e.device_id, e.kind, e.ts - T0) for e in sink.events if e.state is EventState.RAISED]
    # The panels' fire alarms go out at once, as before.
    assert [(d, t) for d, k, t in raised if k == "fire"] == [("p1", 602.0), ("p2", 3000.0), ("p1", 7202.0)]
    # Toast relayed for 14 min: not confirmed. p2 alone: after 180 s. The fire: when the hallway joins.
    assert [(d, t) for d, k, t in raised if k == "fire_confirmed"] == [("p2", 3180.0), ("p1", 7290.0)]
