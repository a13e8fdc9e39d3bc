"""The engine: every rule kind, raise once / clear once, holds, hysteresis, suppression, composites."""

from __future__ import annotations

from citynerve.gateway.api import Event, EventState, Quality, Reading, Severity
from citynerve.gateway.rules import DEVICE_OFFLINE, DEVICE_ONLINE, RuleEngine, RulesConfig

from .conftest import T0, dev, engine, feed, states

R, C = EventState.RAISED, EventState.CLEARED


def test_threshold_raises_once_clears_once_with_hysteresis() -> None:
    e = engine([{"id": "hot", "kind": "threshold", "point": "value", "above": 50, "hysteresis": 5}])
    ev = feed(e, [(T0 + i, v) for i, v in enumerate([10, 51, 60, 52, 47, 46, 44, 60, 40])])
    assert states(ev) == [("hot", R), ("hot", C), ("hot", R), ("hot", C)]
    assert [x.value for x in ev] == [51, 44, 60, 40]
    assert [x.ts for x in ev] == [T0 + 1, T0 + 6, T0 + 7, T0 + 8]


def test_event_carries_rule_severity_value_location_and_component_code() -> None:
    e = engine(
        [
            {
                "id": "hot",
                "kind": "threshold",
                "point": "value",
                "above": 50,
                "severity": "major",
                "event": "overheat",
            }
        ]
    )
    (ev,) = feed(e, [(T0, 70.0)])
    assert ev.kind == "overheat" and ev.rule == "hot" and ev.severity is Severity.MAJOR and ev.value == 70.0
    assert ev.device_id == "d1" and ev.state is R and ev.ts == T0
    assert ev.attrs["component_code"] == "3205080101000001"
    assert ev.attrs["location"] == {
        "address_code": "320508001001",
        "lat": 31.3,
        "lon": 120.6,
        "building": "B1",
        "floor": "3F",
    }
    assert ev.attrs["profile"] == "test-profile"


def test_hold_time_filters_short_excursions_and_tick_raises_when_held() -> None:
    e = engine([{"id": "tilt", "kind": "threshold", "point": "value", "above": 10, "hold_s": 2}])
    # A passing vehicle: above 10 for 0.8 s, then back.
    assert feed(e, [(T0 + i * 0.2, v) for i, v in enumerate([1, 15, 20, 18, 12, 3, 2])]) == []
    # A real opening reported once (report on change): no new reading, the tick raises after 2 s.
    assert e.evaluate([Reading("d1", "value", 30.0, "deg", T0 + 10)]) == []
    assert e.tick(T0 + 11) == []
    (ev,) = e.tick(T0 + 12)
    assert ev.state is R and ev.ts == T0 + 12 and ev.value == 30.0


def test_clear_hold_needs_the_clear_held() -> None:
    e = engine([{"id": "x", "kind": "threshold", "point": "value", "above": 10, "clear_hold_s": 5}])
    ev = feed(e, [(T0, 20), (T0 + 1, 5), (T0 + 3, 20), (T0 + 4, 5), (T0 + 6, 5)])
    assert states(ev) == [("x", R)]
    assert states(e.tick(T0 + 9)) == [("x", C)]


def test_band_threshold_and_bad_quality_keeps_state() -> None:
    e = engine(
        [{"id": "v", "kind": "threshold", "point": "value", "above": 235.4, "below": 198, "hysteresis": 2}]
    )
    ev = feed(e, [(T0, 220), (T0 + 1, 190), (T0 + 2, None), (T0 + 3, 199), (T0 + 4, 201), (T0 + 5, 240)])
    assert states(ev) == [("v", R), ("v", C), ("v", R)]
    assert [x.value for x in ev] == [190, 201, 240]


def test_non_numeric_values_are_unknown_not_errors() -> None:
    e = engine([{"id": "x", "kind": "threshold", "point": "value", "above": 1}])
    assert feed(e, [(T0, "abc"), (T0 + 1, float("nan")), (T0 + 2, float("inf"))]) == []


def test_rate_of_change_both_directions() -> None:
    e = engine([{"id": "jump", "kind": "rate", "point": "value", "max_change": 5, "window_s": 60}])
    ev = feed(e, [(T0, 100), (T0 + 10, 102), (T0 + 20, 108), (T0 + 70, 109), (T0 + 80, 110)])
    assert states(ev) == [("jump", R), ("jump", C)]
    assert ev[0].value == 8
    down = engine(
        [
            {
                "id": "fall",
                "kind": "rate",
                "point": "value",
                "max_change": 5,
                "window_s": 60,
                "direction": "falling",
            }
        ]
    )
    assert feed(down, [(T0, 100), (T0 + 10, 110)]) == []
    assert states(feed(down, [(T0 + 20, 90)])) == [("fall", R)]


def test_missing_data_raises_after_silence_and_clears_on_data() -> None:
    e = engine([{"id": "silent", "kind": "missing", "point": "value", "after_s": 600}])
    assert e.tick(T0) == []  # the gateway's start is a grace period
    assert e.tick(T0 + 599) == []
    (ev,) = e.tick(T0 + 601)
    assert ev.state is R and ev.value == 601
    assert e.tick(T0 + 700) == []  # raised once
    assert states(feed(e, [(T0 + 800, 1.0)])) == [("silent", C)]


def test_missing_any_point_ignores_bad_quality() -> None:
    e = engine([{"id": "node", "kind": "missing", "after_s": 100}], [dev(points=("a", "b"))])
    e.tick(T0)
    e.evaluate([Reading("d1", "a", 1, "", T0 + 50)])
    e.evaluate([Reading("d1", "b", None, "", T0 + 120, Quality.BAD)])
    assert states(e.tick(T0 + 151)) == [("node", R)]


def test_device_offline_rule_from_bus_events() -> None:
    e = engine([{"id": "off", "kind": "offline", "hold_s": 60, "severity": "minor"}])
    off = Event("d1", DEVICE_OFFLINE, R, Severity.WARNING, T0)
    assert e.on_event(off) == []
    assert e.tick(T0 + 30) == []
    assert states(e.tick(T0 + 61)) == [("off", R)]
    assert states(e.on_event(Event("d1", DEVICE_ONLINE, R, Severity.INFO, T0 + 100))) == [("off", C)]
    # Back online before the hold: nothing.
    e.on_event(Event("d1", DEVICE_OFFLINE, R, Severity.WARNING, T0 + 200))
    e.on_event(Event("d1", DEVICE_OFFLINE, C, Severity.WARNING, T0 + 230))
    assert e.tick(T0 + 300) == []
    assert e.on_event(Event("d1", "smoke", R, Severity.CRITICAL, T0)) == []


def test_smoke_is_immediate_and_critical() -> None:
    cfg = RulesConfig.model_validate({"packs": [{"name": "smoke-fire"}]})
    e = RuleEngine(cfg, [dev(points=("smoke", "tamper", "fault"))])
    ev = e.evaluate([Reading("d1", "smoke", 1, "", T0)])
    assert [(x.kind, x.state, x.severity) for x in ev] == [("smoke", R, Severity.CRITICAL)]
    assert e.evaluate([Reading("d1", "smoke", True, "", T0 + 1)]) == []
    assert states(e.evaluate([Reading("d1", "smoke", "normal", "", T0 + 2)])) == [("smoke-fire.smoke", C)]


def test_boolean_inactive_state_and_words() -> None:
    e = engine([{"id": "door", "kind": "boolean", "point": "value", "active": False}])
    ev = feed(e, [(T0, "closed"), (T0 + 1, 1), (T0 + 2, "off")])
    assert states(ev) == [("door", R), ("door", C), ("door", R)]
    assert feed(e, [(T0 + 3, "maybe")]) == []


def test_composites_all_any_sequence() -> None:
    base = [
        {"id": "a", "kind": "boolean", "point": "a"},
        {"id": "b", "kind": "boolean", "point": "b"},
    ]
    devs = [dev(points=("a", "b"))]
    e = engine([*base, {"id": "both", "kind": "composite", "mode": "all", "of": ["a", "b"]}], devs)
    assert states(feed(e, [(T0, 1)], point="a")) == [("a", R)]
    assert states(feed(e, [(T0 + 1, 1)], point="b")) == [("b", R), ("both", R)]
    assert states(feed(e, [(T0 + 2, 0)], point="a")) == [("a", C), ("both", C)]

    e = engine([*base, {"id": "either", "kind": "composite", "mode": "any", "of": ["a", "b"]}], devs)
    assert states(feed(e, [(T0, 1)], point="b")) == [("b", R), ("either", R)]

    seq = {"id": "seq", "kind": "composite", "mode": "sequence", "of": ["a", "b"], "within_s": 10}
    e = engine([*base, seq], devs)
    feed(e, [(T0, 1)], point="b")
    assert states(feed(e, [(T0 + 1, 1)], point="a")) == [("a", R)]  # wrong order
    e = engine([*base, seq], devs)
    feed(e, [(T0, 1)], point="a")
    assert states(feed(e, [(T0 + 20, 1)], point="b")) == [("b", R)]  # too late
    e = engine([*base, seq], devs)
    feed(e, [(T0, 1)], point="a")
    assert states(feed(e, [(T0 + 5, 1)], point="b")) == [("b", R), ("seq", R)]


def test_selectors_by_id_profile_tag_and_point() -> None:
    devices = [
        dev("m1", points=("value",), profile="meter"),
        dev("m2", points=("value",), tags=("elderly",)),
        dev("m3", points=("other",), profile="meter"),
        dev("m4", points=("value",)),
    ]
    rule = {"id": "r", "kind": "threshold", "point": "value", "above": 1}
    e = engine([{**rule, "select": {"profiles": ["meter"], "tags": ["elderly"]}}], devices)
    assert sorted(e.instances) == ["r|m1", "r|m2"]  # m3 has no such point
    e = engine([{**rule, "select": {"devices": ["m4"]}}], devices)
    assert sorted(e.instances) == ["r|m4"]
    e = engine([rule], devices)
    assert sorted(e.instances) == ["r|m1", "r|m2", "r|m4"]


def test_quiet_hours_hold_back_raising_until_they_end() -> None:
    # T0 is 22:13 local (Asia/Shanghai); quiet 22:00-23:00.
    e = engine(
        [{"id": "x", "kind": "threshold", "point": "value", "above": 1, "suppress_during": ["evening"]}],
        schedules=[{"id": "evening", "start": "22:00", "end": "23:00"}],
    )
    assert feed(e, [(T0, 5)]) == []
    assert e.tick(T0 + 2000) == []  # 22:46, still quiet
    (ev,) = e.tick(T0 + 2800)  # 23:00
    assert ev.state is R and ev.ts == T0 + 2800


def test_quiet_hours_spanning_midnight_and_weekdays() -> None:
    e = engine(
        [{"id": "x", "kind": "threshold", "point": "value", "above": 1, "suppress_during": ["night"]}],
        schedules=[{"id": "night", "start": "22:00", "end": "06:00", "days": ["mon"]}],
    )
    # T0 is Monday 21 Sep 2026 22:13; +3 h is Tuesday 01:13, inside Monday night's window.
    assert feed(e, [(T0 + 3 * 3600, 5)]) == []
    # Tuesday 23:00 is Tuesday night: not quiet.
    e2 = engine(
        [{"id": "x", "kind": "threshold", "point": "value", "above": 1, "suppress_during": ["night"]}],
        schedules=[{"id": "night", "start": "22:00", "end": "06:00", "days": ["mon"]}],
    )
    assert states(feed(e2, [(T0 + 25.5 * 3600, 5)])) == [("x", R)]


def test_household_away_suppresses_only_rules_that_ask() -> None:
    rules = [
        {"id": "no_use", "kind": "threshold", "point": "value", "below": 1, "suppress_when_away": True},
        {"id": "leak", "kind": "threshold", "point": "value", "below": 1},
    ]
    e = engine(rules, away=["d1"])
    assert states(feed(e, [(T0, 0)])) == [("leak", R)]
    e.set_away("d1", False)
    assert states(e.tick(T0 + 1)) == [("no_use", R)]
    assert [a.rule for a in e.active()] == ["no_use", "leak"] or sorted(a.rule for a in e.active()) == [
        "leak",
        "no_use",
    ]


def test_escalation_contacts_travel_with_the_event() -> None:
    e = engine(
        [{"id": "x", "kind": "boolean", "point": "value", "escalate": ["daughter", "community"]}],
        contacts=[
            {"id": "daughter", "name": "Li Na", "role": "emergency_contact", "phone": "+86 138 0000 0000"},
            {"id": "community", "role": "community", "after_s": 900},
        ],
    )
    (ev,) = feed(e, [(T0, True)])
    assert ev.attrs["escalation"] == [
        {"id": "daughter", "name": "Li Na", "role": "emergency_contact", "phone": "+86 138 0000 0000"},
        {"id": "community", "role": "community", "after_s": 900.0},
    ]


def test_unknown_devices_and_points_are_ignored() -> None:
    e = engine([{"id": "x", "kind": "threshold", "point": "value", "above": 1}])
    assert e.evaluate([Reading("nope", "value", 5, "", T0), Reading("d1", "other", 5, "", T0)]) == []
    assert e.tick(T0) == []


def test_disabled_rules_and_devices_make_no_instances() -> None:
    d = dev("off").model_copy(update={"enabled": False})
    e = engine([{"id": "x", "kind": "threshold", "point": "value", "above": 1, "enabled": False}], [dev(), d])
    assert e.instances == {}
