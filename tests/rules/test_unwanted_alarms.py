"""Unwanted-alarm management (issue 18): the `unwanted` composite mode, `alone_unless` and `relays`.

A detector whose alarms end again and again without the flat's second detector joining raises one
maintenance event (BS 5839-1: investigate a detector that is the source of three or more false alarms;
NFPA 72 14.4.4.3: sensitivity kept within its listed range) and is no longer confirmed on its own
until four weeks pass without such an alarm; its immediate alarm and the second detector's
confirmation are untouched. A panel relaying a gateway detector is confirmed by that detector's
confirmation only. Readings go through the real engine, and the shipped pack through the pipeline.
"""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from citynerve.gateway.api import Event, EventState, Sample, SampleBatch
from citynerve.gateway.pipeline import Pipeline
from citynerve.gateway.rules import PackRef, RuleEngine, RulesConfig
from citynerve.hil.eval.harness import CollectingSink
from tests.rules.conftest import T0, dev, engine, feed
from tests.rules.test_panel_confirmed import _device

WEEK = 7 * 86400.0
SMOKE = {"id": "smoke", "kind": "boolean", "point": "smoke", "severity": "critical"}
FIRE = {"id": "fire", "kind": "boolean", "point": "fire", "severity": "critical"}
UNWANTED = {
    "id": "unwanted_alarms",
    "kind": "composite",
    "mode": "unwanted",
    "event": "detector_unwanted_alarms",
    "of": ["smoke"],
    "group": "zone",
    "count": 3,
    "within_s": 1800,
    "quiet_s": 4 * WEEK,
    "severity": "minor",
}
SMOKE_CONFIRMED = {
    "id": "smoke_confirmed",
    "kind": "composite",
    "mode": "coincidence",
    "of": ["smoke"],
    "group": "zone",
    "within_s": 1800,
    "alone_s": 1800,
    "alone_unless": ["unwanted_alarms"],
    "severity": "critical",
}
FIRE_CONFIRMED = {
    "id": "fire_confirmed",
    "kind": "composite",
    "mode": "coincidence",
    "of": ["fire"],
    "confirmed_by": ["smoke_confirmed"],
    "relays": ["smoke"],
    "group": "building",
    "within_s": 1800,
    "alone_s": 1800,
    "severity": "critical",
}
RULES = [SMOKE, FIRE, UNWANTED, SMOKE_CONFIRMED, FIRE_CONFIRMED]


def _flat() -> RuleEngine:
    devices = [
        dev("a", ("smoke",), tags=("zone:flat-1", "building:b1")),
        dev("b", ("smoke",), tags=("zone:flat-1", "building:b1")),
        dev("panel", ("fire",), tags=("building:b1",)),
    ]
    return engine(RULES, devices)


def _events(events: list[Event], rule: str) -> list[tuple[str, EventState, float]]:
    return [(e.device_id, e.state, e.ts - T0) for e in events if e.rule == rule]


def _alarm(e: RuleEngine, device: str, start: float, minutes: float) -> list[Event]:
    """The detector in alarm from T0 + start for `minutes`, with the runtime's ticks every 30 s."""
    out = feed(e, [(T0 + start, True)], "smoke", device)
    t = start
    while t < start + minutes * 60:
        t += 30
        out += e.tick(T0 + t)
    return out + feed(e, [(T0 + start + minutes * 60, False)], "smoke", device)


def test_three_unconfirmed_alarms_raise_it_once_and_take_the_alone_path_away() -> None:
    e = _flat()
    out: list[Event] = []
    for day in range(3):  # three meals a week apart: 40 min alone each, confirmed alone (30 min)
        out += _alarm(e, "a", day * WEEK, 40)
    assert [s for d, s, _ in _events(out, "smoke_confirmed") if d == "a"].count(EventState.RAISED) == 3
    raised = [ev for ev in out if ev.rule == "unwanted_alarms"]
    assert [(ev.device_id, ev.state, ev.value, ev.kind) for ev in raised] == [
        ("a", EventState.RAISED, 3, "detector_unwanted_alarms")
    ]
    # The fourth: the immediate alarm at once, no confirmation after 40 min alone.
    out = _alarm(e, "a", 3 * WEEK, 40)
    assert _events(out, "smoke")[0] == ("a", EventState.RAISED, 3 * WEEK)
    assert not _events(out, "smoke_confirmed")
    assert not _events(out, "unwanted_alarms")  # reported once, not per alarm
    # A fire: the flat's second detector joins, and both are confirmed at once.
    out = feed(e, [(T0 + 3.5 * WEEK, True)], "smoke", "a") + feed(
        e, [(T0 + 3.5 * WEEK + 90, True)], "smoke", "b"
    )
    assert sorted((d, t) for d, s, t in _events(out, "smoke_confirmed")) == [
        ("a", 3.5 * WEEK + 90),
        ("b", 3.5 * WEEK + 90),
    ]


def test_a_detector_alone_in_its_area_keeps_its_alone_path() -> None:
    # No second detector could ever confirm it: after any number of lone alarms it is still
    # confirmed by lasting alone (a fire in a one-detector flat), and no maintenance event claims
    # its alarms were unwanted.
    e = engine(RULES, [dev("solo", ("smoke",), tags=("building:b1",)), dev("x", ("smoke",))])
    out: list[Event] = []
    for day in range(5):
        out += _alarm(e, "solo", day * WEEK, 40)
        out += _alarm(e, "x", day * WEEK + 3600, 40)
    assert not _events(out, "unwanted_alarms")
    confirmed = [(d, s) for d, s, _ in _events(out, "smoke_confirmed") if s is EventState.RAISED]
    assert (
        confirmed.count(("solo", EventState.RAISED)) == 5 and confirmed.count(("x", EventState.RAISED)) == 5
    )


def test_servicing_the_detector_clears_it_and_it_is_believed_again() -> None:
    # The technician cleaned the chamber and ended the maintenance window: the count is forgotten,
    # the maintenance event clears at the next tick, and lasting alone confirms it again.
    e = _flat()
    for day in range(3):
        _alarm(e, "a", day * WEEK, 10)
    assert e.serviced("a") == ["unwanted_alarms"]  # the rule ids it reset
    assert e.serviced("panel") == []  # nothing judged by its own history on the panel
    out = e.tick(T0 + 2 * WEEK + 3600)
    assert _events(out, "unwanted_alarms") == [("a", EventState.CLEARED, 2 * WEEK + 3600)]
    out = _alarm(e, "a", 2 * WEEK + 7200, 40)
    assert [s for d, s, _ in _events(out, "smoke_confirmed") if d == "a"] == [
        EventState.RAISED,
        EventState.CLEARED,
    ]
    assert not _events(out, "unwanted_alarms")


def test_it_clears_after_four_quiet_weeks_and_the_detector_is_believed_again() -> None:
    e = _flat()
    for day in range(3):
        _alarm(e, "a", day * WEEK, 10)
    assert any(i.alarm.active for i in e.instances.values() if i.rule.id == "unwanted_alarms")
    out = e.tick(T0 + 2 * WEEK + 4 * WEEK - 60)
    assert not _events(out, "unwanted_alarms")
    out = e.tick(T0 + 2 * WEEK + 4 * WEEK + 601)
    assert _events(out, "unwanted_alarms") == [("a", EventState.CLEARED, 2 * WEEK + 4 * WEEK + 601)]
    out = _alarm(e, "a", 7 * WEEK, 40)
    assert [s for _, s, _ in _events(out, "smoke_confirmed")] == [EventState.RAISED, EventState.CLEARED]


def test_alarms_the_second_detector_joined_and_spaced_out_alarms_are_not_unwanted() -> None:
    e = _flat()
    for day in range(3):  # both detectors each time: a real coincidence, never unwanted
        feed(e, [(T0 + day * WEEK, True)], "smoke", "b")
        _alarm(e, "a", day * WEEK + 60, 10)
        feed(e, [(T0 + day * WEEK + 700, False)], "smoke", "b")
    # Unconfirmed alarms more than four weeks apart do not add up.
    for k in range(3):
        _alarm(e, "a", 3 * WEEK + k * 5 * WEEK, 10)
    assert not any(ev for ev in e.tick(T0 + 20 * WEEK) if ev.rule == "unwanted_alarms")
    assert not any(i.alarm.active for i in e.instances.values() if i.rule.id == "unwanted_alarms")


def test_the_panel_relaying_a_detector_follows_its_confirmation_only() -> None:
    e = _flat()
    # Cooking smoke on detector a for 40 min; the panel relays it and is reset 10 min after it.
    out = feed(e, [(T0 + 1, True)], "fire", "panel") + _alarm(e, "a", 0, 40)
    out += e.tick(T0 + 2900) + feed(e, [(T0 + 3000, False)], "fire", "panel")
    assert [d for d, s, _ in _events(out, "smoke_confirmed") if s is EventState.RAISED] == ["a"]
    # Confirmed because the detector was (alone for 30 min), not because the panel lasted.
    assert _events(out, "fire_confirmed")[0] == ("panel", EventState.RAISED, 1800)
    # Under unwanted-alarm management the detector is not confirmed alone, nor is the panel.
    for day in range(1, 4):
        _alarm(e, "a", day * WEEK, 10)
    out = feed(e, [(T0 + 4 * WEEK + 1, True)], "fire", "panel") + _alarm(e, "a", 4 * WEEK, 40)
    out += e.tick(T0 + 4 * WEEK + 3000)
    assert not _events(out, "smoke_confirmed") and not _events(out, "fire_confirmed")
    # The panel in fire with no gateway detector behind it: its own alone_s, as before.
    feed(e, [(T0 + 4 * WEEK + 3100, False)], "fire", "panel")
    out = feed(e, [(T0 + 6 * WEEK, True)], "fire", "panel") + e.tick(T0 + 6 * WEEK + 1801)
    assert _events(out, "fire_confirmed") == [("panel", EventState.RAISED, 6 * WEEK + 1801)]


def test_state_survives_a_restart() -> None:
    e = _flat()
    for day in range(2):
        _alarm(e, "a", day * WEEK, 10)
    again = _flat()
    assert again.restore(e.snapshot()) > 0
    out = _alarm(again, "a", 2 * WEEK, 10)
    assert [(d, s) for d, s, _ in _events(out, "unwanted_alarms")] == [("a", EventState.RAISED)]


def test_config_is_checked() -> None:
    with pytest.raises(ValidationError, match="mode 'unwanted' needs `quiet_s`"):
        RulesConfig.model_validate({"rules": [SMOKE, {**UNWANTED, "quiet_s": None}]})
    with pytest.raises(ValidationError, match="`alone_unless` names unknown rule nope"):
        RulesConfig.model_validate({"rules": [SMOKE, {**SMOKE_CONFIRMED, "alone_unless": ["nope"]}]})
    with pytest.raises(ValidationError, match="`relays` names unknown rule nope"):
        RulesConfig.model_validate(
            {"rules": [SMOKE, FIRE, *RULES[2:4], {**FIRE_CONFIRMED, "relays": ["nope"]}]}
        )
    with pytest.raises(ValidationError, match="are for mode 'coincidence'"):
        RulesConfig.model_validate({"rules": [SMOKE, {**UNWANTED, "alone_unless": ["smoke"]}]})


def test_shipped_pack_through_the_pipeline() -> None:
    # Flat 301: detector a alarms 40 min on four evenings a week apart (the panel relays it, reset 10
    # min later); b never. Then a fire reaches both.
    devs = [
        _device("sd-301a", 1, "modbus-smoke-detector", "smoke_alarm", ["zone:301", "building:B1"]),
        _device("sd-301b", 2, "modbus-smoke-detector", "smoke_alarm", ["zone:301", "building:B1"]),
        _device("p1", 3, "firepanel-gst", "fire_alarm", ["building:B1"]),
    ]
    clock = [T0]
    eng = RuleEngine(RulesConfig(packs=(PackRef(name="smoke-fire"),)), devs, clock=lambda: clock[0])
    sink = CollectingSink()
    pipe = Pipeline({d.id: d for d in devs}, sink, eng)
    nights = [k * WEEK for k in range(4)]
    fire = 5 * WEEK
    spans = {
        "sd-301a": [(t, t + 2400) for t in nights] + [(fire, fire + 1800)],
        "sd-301b": [(fire + 120, fire + 1800)],
        "p1": [(t + 2, t + 3000) for t in nights] + [(fire + 2, fire + 2400)],
    }
    points = {d.id: next(iter(d.points)) for d in devs}
    for start in [*nights, fire]:
        for k in range(1600):  # 2 s polls over each evening, the runtime's tick with them
            t = T0 + start + 2.0 * k
            clock[0] = t
            for d in devs:
                on = any(T0 + a <= t < T0 + b for a, b in spans[d.id])
                pipe.submit(SampleBatch(d.id, t, (Sample(points[d.id], on),)))
            pipe.tick(t)
    raised = [(e.device_id, e.kind, e.ts - T0) for e in sink.events if e.state is EventState.RAISED]
    # Every detector alarm and panel fire goes out at once, as before.
    assert [t for d, k, t in raised if k == "smoke" and d == "sd-301a"] == [*nights, fire]
    assert [t for d, k, t in raised if k == "fire"] == [t + 2 for t in [*nights, fire]]
    # Three evenings confirmed alone (30 min); then reported for maintenance once, and the fourth
    # evening is not confirmed (the detector nor the panel relaying it). The fire: when b joins.
    assert [d for d, k, _ in raised if k == "detector_unwanted_alarms"] == ["sd-301a"]
    confirmed = [(d, t) for d, k, t in raised if k == "smoke_confirmed"]
    assert confirmed == [
        *(("sd-301a", t + 1800) for t in nights[:3]),
        ("sd-301a", fire + 120),
        ("sd-301b", fire + 120),
    ]
    assert [t for d, k, t in raised if k == "fire_confirmed"] == [*(t + 1800 for t in nights[:3]), fire + 120]
