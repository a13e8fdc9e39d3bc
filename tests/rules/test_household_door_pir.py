"""The household's third signal (issue 18): the flat's door contact and a PIR in the living room,
through the engine next to the bed-foot sensor and the meter - a sleepless resident moving about is
not raised, a fall after the flush is raised 40 min after the last movement, an outing is not a fall,
a fall by day at home is raised after `still_s`, `home_by`, a silent node is a maintenance event and
the alarm falls back to bed and water, state across a restart, config errors with their key paths."""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime
from typing import Any
from zoneinfo import ZoneInfo

import pytest
from pydantic import ValidationError

from citynerve.gateway.api import Event, EventState, Quality, Reading
from citynerve.gateway.rules import RuleEngine, RulesConfig
from tests.rules.conftest import dev

TZ = ZoneInfo("Asia/Shanghai")
BED, WM, DOOR, PIR = "bed-301", "wm-301", "door-301", "pir-301"
Flag = Callable[[float], bool]


def _ts(day: int, hhmm: str) -> float:
    h, m = hhmm.split(":")
    return datetime(2026, 9, day, int(h), int(m), tzinfo=TZ).timestamp()


def _engine(third: bool = True, **hh: Any) -> RuleEngine:
    keys: dict[str, Any] = {"id": "301", "bed": BED, "water": WM, "night_end": "06:00"}
    if third:
        keys |= {"door": DOOR, "motion": PIR}
    cfg = RulesConfig.model_validate({"households": [{**keys, **hh}]})
    devices = [
        dev(BED, points=("in_bed",), profile="bthome-bed-occupancy"),
        dev(WM, points=("flow_total",), profile="cjt188-water-cold"),
        dev(DOOR, points=("door_open", "battery"), profile="bthome-door-contact"),
        dev(PIR, points=("motion", "battery"), profile="bthome-motion-pir"),
    ]
    return RuleEngine(cfg, devices)


def _never(t: float) -> bool:
    return False


def _live(
    e: RuleEngine,
    start: float,
    until: float,
    in_bed: Flag,
    litres: Callable[[float], float],
    door: Flag = _never,
    motion: Flag = _never,
    pir_until: float = float("inf"),
) -> list[tuple[float, str, EventState, Any]]:
    """One flat, minute by minute: each node sends its changes and a 600 s heartbeat, the meter is
    read every 900 s (1 L resolution), the runtime ticks every 60 s. Returns (ts, rule, state,
    value) of the household's events."""
    out: list[Event] = []
    sent: dict[str, tuple[Any, float]] = {}
    t = start
    while t <= until:
        for dev_id, point, state in (
            (BED, "in_bed", in_bed(t)),
            (DOOR, "door_open", door(t)),
            (PIR, "motion", motion(t)),
        ):
            if dev_id == PIR and t >= pir_until:
                continue
            last = sent.get(dev_id)
            if last is None or last[0] != state or t - last[1] >= 600:
                out += e.evaluate([Reading(dev_id, point, state, "", t, Quality.GOOD)])
                sent[dev_id] = (state, t)
        if int(t - start) % 900 == 0:
            m3 = 512.0 + int(litres(t)) / 1000
            out += e.evaluate([Reading(WM, "flow_total", m3, "", t, Quality.GOOD)])
        out += e.tick(t)
        t += 60
    return [(ev.ts, ev.rule, ev.state, ev.value) for ev in out if ev.rule.startswith("household.301")]


def _between(*spans: tuple[float, float]) -> Flag:
    return lambda t: any(a <= t < b for a, b in spans)


def _uses(*events: tuple[float, float]) -> Callable[[float], float]:
    return lambda t: sum(v for ts, v in events if ts <= t)


def _every(a: float, b: float, step_s: float, on_s: float = 60) -> Flag:
    """The PIR sees someone moving for `on_s` every `step_s` between a and b."""
    return lambda t: a <= t < b and (t - a) % step_s < on_s


def _in_bed_except(*spans: tuple[float, float]) -> Flag:
    """In bed from 21:30 on the 21st, out of it during `spans`."""
    return lambda t: t >= _ts(21, "21:30") and not any(a <= t < b for a, b in spans)


def test_a_sleepless_resident_moving_about_is_not_raised_where_bed_and_water_alone_raise() -> None:
    """Up 01:30-03:20 in the living room, the PIR sees them every 12 min, no water at all."""
    up = (_ts(22, "01:30"), _ts(22, "03:20"))
    args = (_ts(21, "21:00"), _ts(22, "05:00"), _in_bed_except(up), _uses())
    motion = _every(*up, step_s=720)
    assert _live(_engine(), *args, motion=motion) == []
    without = _live(_engine(third=False), *args)
    assert [(round(t), v) for t, _, s, v in without if s is EventState.RAISED] == [
        (_ts(22, "02:10"), "out of bed at night, no water use")
    ]


def test_a_fall_after_the_flush_is_raised_40_min_after_the_last_movement() -> None:
    """Out at 01:00, flushed at 01:05, passed the PIR and fell: raised at 01:55, 40 min after the
    meter's read that showed the flush (01:15: the use is dated by its read), where bed and water
    alone wait for 3 h out of bed (04:00)."""
    out = (_ts(22, "01:00"), _ts(23, "00:00"))
    args = (_ts(21, "21:00"), _ts(22, "04:30"), _in_bed_except(out), _uses((_ts(22, "01:05"), 6)))
    got = _live(_engine(), *args, motion=_between((_ts(22, "01:01"), _ts(22, "01:07"))))
    assert [(round(t), s, v) for t, _, s, v in got] == [
        (_ts(22, "01:55"), EventState.RAISED, "out of bed at night, no movement")
    ]
    without = _live(_engine(third=False), *args)
    assert [round(t) for t, *_ in without] == [_ts(22, "04:00")]


def test_an_outing_is_not_a_fall_and_coming_home_is_seen() -> None:
    """Up at 07:00, breakfast, out of the door at 09:00 for a day at the family's, home at 21:10 and
    straight to bed: without the door the 12 h water window raises at 19:30."""
    in_bed = lambda t: t < _ts(22, "07:00") or t >= _ts(22, "21:20")  # noqa: E731
    door = _between((_ts(22, "09:00"), _ts(22, "09:01")), (_ts(22, "21:10"), _ts(22, "21:11")))
    motion = _between((_ts(22, "07:00"), _ts(22, "09:00")), (_ts(22, "21:09"), _ts(22, "21:20")))
    uses = _uses((_ts(22, "07:05"), 6), (_ts(22, "07:20"), 20))
    args = (_ts(22, "05:00"), _ts(22, "23:00"), in_bed, uses)
    assert _live(_engine(), *args, door=door, motion=motion) == []
    without = _live(_engine(third=False), *args)
    assert [(round(t), v) for t, _, s, v in without if s is EventState.RAISED] == [
        (_ts(22, "19:30"), "no water use while up")
    ]


def test_a_fall_by_day_at_home_is_raised_after_still_s() -> None:
    """Moving about from 07:00, a cup of tea at 09:50, a fall at 10:00 in the kitchen: raised at
    12:00 (still_s 2 h); without the third signal only 12 h after the last water use."""
    in_bed = lambda t: t < _ts(22, "07:00")  # noqa: E731
    motion = _every(_ts(22, "07:00"), _ts(22, "10:00"), step_s=600)
    uses = _uses((_ts(22, "07:05"), 6), (_ts(22, "09:50"), 2))
    got = _live(_engine(), _ts(22, "05:00"), _ts(22, "14:00"), in_bed, uses, motion=motion)
    assert [(round(t), s, v) for t, _, s, v in got] == [
        (_ts(22, "12:00"), EventState.RAISED, "no movement at home")
    ]


def test_not_home_by_the_residents_own_time() -> None:
    """Out at 15:00, not back at 21:00 (home_by): raised; the door opens at 22:40: cleared."""
    in_bed = lambda t: t >= _ts(22, "22:50")  # noqa: E731
    door = _between((_ts(22, "15:00"), _ts(22, "15:01")), (_ts(22, "22:40"), _ts(22, "22:41")))
    motion = _between((_ts(22, "12:00"), _ts(22, "15:00")), (_ts(22, "22:40"), _ts(22, "22:50")))
    uses = _uses((_ts(22, "12:10"), 10), (_ts(22, "14:50"), 6), (_ts(22, "22:45"), 6))
    e = _engine(home_by="21:00")
    got = _live(e, _ts(22, "12:00"), _ts(22, "23:30"), in_bed, uses, door=door, motion=motion)
    assert [(round(t), s, v) for t, _, s, v in got] == [
        (_ts(22, "21:00"), EventState.RAISED, "not home by 21:00"),
        (_ts(22, "22:40"), EventState.CLEARED, ""),
    ]


def test_a_silent_pir_is_a_maintenance_event_and_bed_and_water_judge_alone() -> None:
    """The PIR's battery dies at 23:00: a minor maintenance event on the PIR 1 h after its last
    heartbeat (22:50); the
    sleepless resident (no water) is then judged as bed and water alone would judge them."""
    up = (_ts(22, "01:30"), _ts(22, "03:20"))
    e = _engine()
    got = _live(
        e,
        _ts(21, "21:00"),
        _ts(22, "05:00"),
        _in_bed_except(up),
        _uses(),
        motion=_every(*up, step_s=720),
        pir_until=_ts(21, "23:00"),
    )
    node = [(round(t), s) for t, rule, s, _ in got if rule == "household.301.node"]
    assert node == [(_ts(21, "23:50"), EventState.RAISED)]
    raised = [(round(t), v) for t, rule, s, v in got if rule == "household.301" and s is EventState.RAISED]
    assert raised == [(_ts(22, "02:10"), "out of bed at night, no water use")]
    inst = e.instances["household.301.node|pir-301"]
    assert inst.kind == "household_node_silent" and inst.attrs["household"] == "301"


def test_state_survives_a_restart() -> None:
    out = (_ts(22, "01:00"), _ts(23, "00:00"))
    e = _engine()
    motion = _between((_ts(22, "01:01"), _ts(22, "01:07")))
    _live(e, _ts(21, "21:00"), _ts(22, "01:30"), _in_bed_except(out), _uses(), motion=motion)
    e2 = _engine()
    assert e2.restore(e.snapshot()) == len(e.instances) == 3
    got = [ev for ev in e2.tick(_ts(22, "01:48")) if ev.rule == "household.301"]
    assert [(ev.state, ev.value) for ev in got] == [(EventState.RAISED, "out of bed at night, no movement")]


def test_config_errors_name_their_key_paths() -> None:
    with pytest.raises(ValidationError, match=r"households\.0\.home_by"):
        RulesConfig.model_validate({"households": [{"id": "h", "bed": "b", "home_by": "25:00"}]})
    with pytest.raises(ValidationError, match="`bed` and `motion` must be different devices"):
        RulesConfig.model_validate({"households": [{"id": "h", "bed": "b", "motion": "b"}]})
    with pytest.raises(ValidationError, match=r"households\.0\.still_s"):
        RulesConfig.model_validate({"households": [{"id": "h", "bed": "b", "still_s": 0}]})
    cfg = RulesConfig.model_validate(
        {"households": [{"id": "h", "bed": BED, "door": "door-9", "motion": PIR, "motion_point": "pir"}]}
    )
    issues = cfg.check([dev(BED, points=("in_bed",)), dev(PIR, points=("motion",))], "gw.toml")
    assert [(i.path, i.message) for i in issues] == [
        ("rules.households[0].door", "unknown device 'door-9'"),
        ("rules.households[0].motion", "device 'pir-301' has no point 'pir'; it has ['motion']"),
    ]


def test_coming_home_to_an_empty_flat_and_falling_at_the_door_is_raised() -> None:
    """Out at 09:00 (judged out at 09:10), the door opens on the empty flat at 17:00: someone came
    in, at home even though the PIR sees nothing after (a fall in the hallway): raised 2 h after
    the door closed."""
    in_bed = lambda t: t < _ts(22, "07:00")  # noqa: E731
    door = _between((_ts(22, "09:00"), _ts(22, "09:01")), (_ts(22, "17:00"), _ts(22, "17:01")))
    motion = _between((_ts(22, "07:00"), _ts(22, "09:00")))
    uses = _uses((_ts(22, "07:05"), 6), (_ts(22, "07:20"), 20))
    got = _live(_engine(), _ts(22, "05:00"), _ts(22, "20:00"), in_bed, uses, door=door, motion=motion)
    assert [(round(t), s, v) for t, _, s, v in got] == [
        (_ts(22, "19:01"), EventState.RAISED, "no movement at home")
    ]
