"""The `coincidence` composite mode (gateway/rules/coincidence.py) and the smoke-fire pack's
smoke_confirmed on it (issue 18): readings through the real pipeline and engine."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from citynerve.gateway.api import DeviceConfig, Event, EventState, PointConfig, Sample, SampleBatch
from citynerve.gateway.pipeline import Pipeline
from citynerve.gateway.rules import PackRef, RuleEngine, RulesConfig
from citynerve.hil.eval.harness import CollectingSink
from tests.rules.conftest import T0, dev, engine, feed

COINCIDENCE = {
    "id": "confirmed",
    "kind": "composite",
    "mode": "coincidence",
    "of": ["smoke"],
    "count": 2,
    "within_s": 1800,
    "alone_s": 1800,
    "severity": "critical",
}
SMOKE = {"id": "smoke", "kind": "boolean", "point": "smoke", "severity": "critical"}


def _flat() -> RuleEngine:
    devices = [
        dev("a", ("smoke",), tags=("zone:flat-1",)),
        dev("b", ("smoke",), tags=("zone:flat-1",)),
        dev("c", ("smoke",), tags=("zone:flat-2",)),
    ]
    return engine([SMOKE, COINCIDENCE], devices)


def _raised(events: list[Event], rule: str) -> list[tuple[str, float]]:
    return [(e.device_id, e.ts) for e in events if e.rule == rule and e.state is EventState.RAISED]


def test_a_second_detector_of_the_zone_confirms_at_once() -> None:
    e = _flat()
    out = feed(e, [(T0, True)], "smoke", "a")
    assert _raised(out, "smoke") == [("a", T0)] and not _raised(out, "confirmed")
    # Another flat's detector is not a coincidence.
    out = feed(e, [(T0 + 60, True)], "smoke", "c")
    assert not _raised(out, "confirmed")
    # The flat's second detector 20 min later: both detectors in alarm confirm, on both.
    out = feed(e, [(T0 + 1200, True)], "smoke", "b")
    assert sorted(_raised(out, "confirmed")) == [("a", T0 + 1200), ("b", T0 + 1200)]
    confirmed = next(ev for ev in out if ev.rule == "confirmed" and ev.device_id == "b")
    assert confirmed.value == 2 and confirmed.severity.name == "CRITICAL"


def test_a_detector_cleared_within_the_window_still_counts() -> None:
    e = _flat()
    feed(e, [(T0, True), (T0 + 120, False)], "smoke", "a")  # toast: 2 min
    out = feed(e, [(T0 + 1000, True)], "smoke", "b")
    # b is in alarm and a raised 1000 s ago (< 1800 s): confirmed on b; a is no longer in alarm.
    assert _raised(out, "confirmed") == [("b", T0 + 1000)]
    e2 = _flat()
    feed(e2, [(T0, True), (T0 + 120, False)], "smoke", "a")
    assert not _raised(feed(e2, [(T0 + 1900, True)], "smoke", "b"), "confirmed")  # outside the window


def test_alone_for_alone_s_confirms_and_clearing_clears() -> None:
    e = _flat()
    out = feed(e, [(T0 + k * 60.0, True) for k in range(31)], "smoke", "c")
    assert _raised(out, "confirmed") == [("c", T0 + 1800)]
    out = feed(e, [(T0 + 1900, False)], "smoke", "c")
    assert [(ev.rule, ev.state) for ev in out if ev.rule == "confirmed"] == [
        ("confirmed", EventState.CLEARED)
    ]
    # Time alone drives it too: ticks without readings.
    e2 = _flat()
    feed(e2, [(T0, True)], "smoke", "a")
    assert not _raised(e2.tick(T0 + 1799), "confirmed")
    assert _raised(e2.tick(T0 + 1801), "confirmed") == [("a", T0 + 1801)]


def test_a_device_without_a_zone_tag_is_alone_and_devices_without_the_child_get_none() -> None:
    devices = [dev("a", ("smoke",)), dev("b", ("smoke",)), dev("panel", ("fire",))]
    e = engine([SMOKE, COINCIDENCE], devices)
    assert {i.device_id for i in e.instances.values() if i.rule.id == "confirmed"} == {"a", "b"}
    feed(e, [(T0, True)], "smoke", "a")
    assert not _raised(feed(e, [(T0 + 10, True)], "smoke", "b"), "confirmed")  # no shared zone


def test_restart_keeps_the_coincidence() -> None:
    e = _flat()
    feed(e, [(T0, True)], "smoke", "a")
    snap = e.snapshot()
    e2 = _flat()
    e2.restore(snap)
    assert _raised(feed(e2, [(T0 + 300, True)], "smoke", "b"), "confirmed") == [
        ("a", T0 + 300),
        ("b", T0 + 300),
    ]


def test_bad_config_names_the_key() -> None:
    with pytest.raises(ValidationError, match="count"):
        RulesConfig.model_validate({"rules": [SMOKE, {**COINCIDENCE, "count": 1}]})
    with pytest.raises(ValidationError, match="at least 2 rules"):
        RulesConfig.model_validate({"rules": [SMOKE, {**COINCIDENCE, "mode": "all"}]})
    with pytest.raises(ValidationError, match="group"):
        RulesConfig.model_validate({"rules": [SMOKE, {**COINCIDENCE, "group": "Zone:"}]})


def _detector(dev_id: str, i: int, zone: str) -> DeviceConfig:
    return DeviceConfig.model_validate(
        {
            "id": dev_id,
            "bus": "rs485",
            "profile": "modbus-smoke-detector",
            "address": i,
            "location": {"address_code": "320508001001", "building": "B1", "room": zone},
            "tags": [f"zone:{zone}"],
            "points": {"smoke_alarm": PointConfig()},
        }
    )


def test_shipped_pack_through_the_pipeline() -> None:
    # Two detectors of flat 301 and one of 302 polled every 2 s: toast sets off 301's kitchen detector
    # for 4 min; a fire in 302 keeps its only detector in alarm; a fire in 301 reaches the hallway too.
    devs = [_detector("sd-301a", 1, "301"), _detector("sd-301b", 2, "301"), _detector("sd-302a", 3, "302")]
    rules = RulesConfig(packs=(PackRef(name="smoke-fire"),))
    clock = [T0]
    eng = RuleEngine(rules, devs, clock=lambda: clock[0])
    sink = CollectingSink()
    pipe = Pipeline({d.id: d for d in devs}, sink, eng)
    spans = {
        "sd-301a": [(600.0, 840.0), (7200.0, 9000.0)],
        "sd-301b": [(7290.0, 9000.0)],
        "sd-302a": [(3000.0, 5400.0)],
    }
    for k in range(5000):
        t = T0 + 2.0 * k
        clock[0] = t
        for d in devs:
            on = any(T0 + a <= t < T0 + b for a, b in spans[d.id])
            pipe.submit(SampleBatch(d.id, t, (Sample("smoke_alarm", on),)))
        pipe.tick(t)
    raised = [(e.device_id, e.kind, e.ts - T0) for e in sink.events if e.state is EventState.RAISED]
    # Every alarm goes out at once (GB 26875), toast included.
    assert [(d, t) for d, k, t in raised if k == "smoke"] == [
        ("sd-301a", 600.0),
        ("sd-302a", 3000.0),
        ("sd-301a", 7200.0),
        ("sd-301b", 7290.0),
    ]
    confirmed = [(d, t) for d, k, t in raised if k == "smoke_confirmed"]
    # Toast: never confirmed. 302 alone: after 30 min. 301's fire: when the hallway detector joins.
    assert confirmed == [("sd-302a", 4800.0), ("sd-301a", 7290.0), ("sd-301b", 7290.0)]
