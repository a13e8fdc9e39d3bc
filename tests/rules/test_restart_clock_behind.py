"""A restart on a wall clock behind the snapshot's (no RTC: 1970 until NTP, or fake-hwclock's stale
time), then NTP's step: the restored times must come out on the calendar, not moved by the step.

The snapshot says when it was saved (`saved_at`); a clock that reads earlier cannot be right, so
the restore moves every restored time by (now - saved_at) and NTP's step moves them back: the
outage counts as no time (RuleEngine.restore). Boot walls: a right clock (an RTC), 1970 a minute
after boot (restored times land below zero), and a stale fake-hwclock time.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from datetime import datetime
from typing import Any
from zoneinfo import ZoneInfo

import pytest

from citynerve.gateway.api import DeviceConfig, Event, EventState, Reading, SteadyWall
from citynerve.gateway.rules import RuleEngine, RulesConfig
from tests.rules.conftest import dev
from tests.rules.test_action_holds import BootClock

TZ = ZoneInfo("Asia/Shanghai")
BOOTS = ["rtc", "1970", "fake-hwclock"]


def local(d: int, hh: int, mm: int) -> float:
    return datetime(2026, 9, d, hh, mm, tzinfo=TZ).timestamp()


def run(
    e: RuleEngine,
    clock: BootClock,
    seconds: float,
    readings: Callable[[float], list[Reading]],
    ntp: tuple[float, float] | None = None,
) -> list[Event]:
    """Tick every 60 s, readings every 600 s; `ntp` (monotonic time, true wall at boot): NTP sets
    the wall clock then."""
    out: list[Event] = []
    mono0 = clock.mono_t
    for s in range(0, int(seconds), 60):
        if ntp is not None and clock.mono_t >= ntp[0]:
            clock.wall_t = ntp[1] + (clock.mono_t - mono0)
            ntp = None
        if s % 600 == 0:
            out += e.evaluate(readings(clock.wall_t))
        out += e.tick(e.now())
        clock.advance(60)
    return out


def restarted(
    cfg: RulesConfig,
    devices: Sequence[DeviceConfig],
    snap: dict[str, Any],
    boot: str,
    true_boot: float,
    stale: float,
) -> tuple[RuleEngine, BootClock]:
    """A new engine on a box booting at `true_boot` with its clock at `boot`, the snapshot restored."""
    clock = BootClock({"rtc": true_boot, "1970": 60.0, "fake-hwclock": stale}[boot])
    e = RuleEngine(cfg, devices, steady=SteadyWall(clock))
    e.restore(json.loads(json.dumps(snap)))  # as the store gives it back
    return e, clock


def raised(out: list[Event], rule: str) -> list[Event]:
    return [ev for ev in out if ev.rule == rule and ev.state is EventState.RAISED]


@pytest.mark.parametrize("boot", BOOTS)
def test_not_up_is_raised_after_a_power_cut_at_night(boot: str) -> None:
    """elderly-bed: in bed through a power cut at 03:00, never up: `not_up` at 09:00 (before the
    fix the restored times were carried decades into the future and it never raised)."""
    cfg = RulesConfig.model_validate({"packs": [{"name": "elderly-bed"}]})
    devices = [dev("bed", points=("in_bed",), profile="bthome-bed-occupancy")]
    clock = BootClock(local(21, 21, 30))
    e = RuleEngine(cfg, devices, steady=SteadyWall(clock))

    def in_bed(ts: float) -> list[Reading]:
        return [Reading("bed", "in_bed", True, "", ts)]

    run(e, clock, local(22, 3, 0) - local(21, 21, 30), in_bed)
    true_boot = local(22, 3, 5)
    again, clock = restarted(cfg, devices, e.snapshot(), boot, true_boot, stale=local(21, 22, 0))
    out = run(again, clock, local(22, 10, 0) - true_boot, in_bed, ntp=(clock.mono_t + 600, true_boot))
    got = [datetime.fromtimestamp(ev.ts, TZ).strftime("%H:%M") for ev in raised(out, "elderly-bed.not_up")]
    assert got[:1] == ["09:00"], f"boot clock {boot}: not_up raised at {got}"


@pytest.mark.parametrize("boot", BOOTS)
def test_up_before_a_power_cut_is_not_not_up(boot: str) -> None:
    """elderly-bed: up from 05:00 to 05:30 (a long absence: up), back to bed, a power cut at 06:00:
    no `not_up` at 09:00 (the restored end of the absence lies below zero on a 1970 clock; it must
    still move with NTP's step, not be taken for "never")."""
    cfg = RulesConfig.model_validate({"packs": [{"name": "elderly-bed"}]})
    devices = [dev("bed", points=("in_bed",), profile="bthome-bed-occupancy")]
    clock = BootClock(local(21, 21, 30))
    e = RuleEngine(cfg, devices, steady=SteadyWall(clock))

    def bed(ts: float) -> list[Reading]:
        return [Reading("bed", "in_bed", not local(22, 5, 0) <= ts < local(22, 5, 30), "", ts)]

    run(e, clock, local(22, 6, 0) - local(21, 21, 30), bed)
    true_boot = local(22, 6, 5)
    again, clock = restarted(cfg, devices, e.snapshot(), boot, true_boot, stale=local(21, 22, 0))
    out = run(again, clock, local(22, 10, 0) - true_boot, bed, ntp=(clock.mono_t + 600, true_boot))
    assert not raised(out, "elderly-bed.not_up")


@pytest.mark.parametrize("boot", BOOTS)
def test_a_pending_hold_goes_on_after_a_restart(boot: str) -> None:
    """A leak pending 120 s of its 300 s hold at the stop, still leaking after the restart: raised
    within minutes (the outage counts as no time on a wrong clock; with an RTC it counts)."""
    cfg = RulesConfig.model_validate(
        {"rules": [{"id": "leak", "kind": "boolean", "point": "leak", "severity": "major", "hold_s": 300}]}
    )
    devices = [dev(points=("leak",))]
    t0 = local(22, 12, 0)
    clock = BootClock(t0)
    e = RuleEngine(cfg, devices, steady=SteadyWall(clock))
    e.evaluate([Reading("d1", "leak", True, "", t0)])
    clock.advance(120)
    e.tick(e.now())
    snap = e.snapshot()
    assert snap["instances"]["leak|d1"][0][0] == "pending"
    assert snap["saved_at"] == t0 + 120
    true_boot = t0 + (8 * 3600 if boot == "fake-hwclock" else 300)  # fake-hwclock: an 8 h outage
    again, clock = restarted(cfg, devices, snap, boot, true_boot, stale=t0 - 1800)

    def leak(ts: float) -> list[Reading]:
        return [Reading("d1", "leak", True, "", ts)]

    out = run(again, clock, 3600, leak, ntp=(clock.mono_t + 120, true_boot))
    got = raised(out, "leak")
    assert got and got[0].ts <= true_boot + (0 if boot == "rtc" else 240), f"boot clock {boot}: {got}"


@pytest.mark.parametrize("boot", BOOTS)
def test_no_water_use_after_a_restart_is_raised(boot: str) -> None:
    """elderly-water: water used normally until a power cut at 07:00, none from the restart on:
    `water_no_use_12h` raises about 12 h after the last use (before the fix every reading after
    the restart was taken as out of order, the meter's last time being in the future)."""
    cfg = RulesConfig.model_validate({"packs": [{"name": "elderly-water"}]})
    devices = [dev("wm", points=("flow_total",), profile="cjt188-water-cold")]
    clock = BootClock(local(21, 7, 0))
    e = RuleEngine(cfg, devices, steady=SteadyWall(clock))
    used = {"m3": 100.0}

    def meter(ts: float) -> list[Reading]:
        return [Reading("wm", "flow_total", round(used["m3"], 3), "", ts)]

    def using(ts: float) -> list[Reading]:
        used["m3"] += 0.01  # 10 L per 10 min: someone at home
        return meter(ts)

    run(e, clock, 24 * 3600, using)
    true_boot = local(22, 7, 5)
    again, clock = restarted(cfg, devices, e.snapshot(), boot, true_boot, stale=local(22, 6, 0))
    out = run(again, clock, 16 * 3600, meter, ntp=(clock.mono_t + 600, true_boot))
    got = raised(out, "elderly-water.water_no_use_12h")
    hours = [(ev.ts - local(22, 6, 50)) / 3600 for ev in got]  # the last use was read at 06:50
    assert got and 11.5 <= hours[0] <= 13, f"boot clock {boot}: raised {hours} h after the last use"
    assert len(got) == 1


@pytest.mark.parametrize("washed", [True, False], ids=["washed", "no-water"])
@pytest.mark.parametrize("boot", BOOTS)
def test_the_mornings_water_use_survives_a_restart(boot: str, washed: bool) -> None:
    """A household: out of bed for 5 min at 06:30 (less than up_s), back in bed, a power cut at
    07:00, up at 09:30. With 40 L of water at 06:30 the morning's use shows the resident up: no
    `not up`, also when the meter is read on the wrong clock before NTP's step; without, `not up`
    at 09:00."""
    cfg = RulesConfig.model_validate({"households": [{"id": "1", "bed": "bed", "water": "wm"}]})
    devices = [
        dev("bed", points=("in_bed",), profile="bthome-bed-occupancy"),
        dev("wm", points=("flow_total",), profile="cjt188-water-cold"),
    ]
    clock = BootClock(local(21, 22, 0))
    e = RuleEngine(cfg, devices, steady=SteadyWall(clock))
    used = {"m3": 50.0}
    true_boot = local(22, 7, 5)
    offset = {"wall": 0.0}  # true time - wall time, after the restart until NTP

    def home(ts: float) -> list[Reading]:
        t = ts + offset["wall"]
        up = local(22, 6, 30) <= t < local(22, 6, 35) or t >= local(22, 9, 30)
        if washed and local(22, 6, 30) <= t < local(22, 6, 50):
            used["m3"] += 0.02
        return [
            Reading("bed", "in_bed", not up, "", ts),
            Reading("wm", "flow_total", round(used["m3"], 3), "", ts),
        ]

    out = run(e, clock, local(22, 7, 0) - local(21, 22, 0), home)
    assert not raised(out, "household.1")
    again, clock = restarted(cfg, devices, e.snapshot(), boot, true_boot, stale=local(22, 6, 0))
    offset["wall"] = true_boot - clock.wall_t
    out = again.evaluate(home(clock.wall_t))  # the meter read on the wrong clock
    offset["wall"] = 0.0
    out += run(again, clock, local(22, 10, 0) - true_boot, home, ntp=(clock.mono_t + 60, true_boot))
    got = [
        (datetime.fromtimestamp(ev.ts, TZ).strftime("%H:%M"), ev.value) for ev in raised(out, "household.1")
    ]
    assert got == ([] if washed else [("09:00", "not up")])


def test_a_snapshot_without_saved_at_is_restored_as_it_is() -> None:
    """An older gateway's snapshot (no `saved_at`) loads; its times are taken as they are."""
    cfg = RulesConfig.model_validate(
        {"rules": [{"id": "leak", "kind": "boolean", "point": "leak", "severity": "major", "hold_s": 300}]}
    )
    t0 = local(22, 12, 0)
    e = RuleEngine(cfg, [dev(points=("leak",))], steady=SteadyWall(BootClock(t0)))
    e.evaluate([Reading("d1", "leak", True, "", t0)])
    snap = e.snapshot()
    del snap["saved_at"]
    again = RuleEngine(cfg, [dev(points=("leak",))], steady=SteadyWall(BootClock(60.0)))
    assert again.restore(snap) == 1
    assert again.instances["leak|d1"].alarm.since == t0


def test_without_steady_the_snapshot_has_no_saved_at() -> None:
    """A replay's engine time is the readings': it has no time of the save to write."""
    cfg = RulesConfig.model_validate({"rules": [{"id": "leak", "kind": "boolean", "point": "leak"}]})
    assert "saved_at" not in RuleEngine(cfg, [dev(points=("leak",))]).snapshot()


def _water_day(
    boot: str,
    used_m3: Callable[[float], float],
    cut: float,
    true_boot: float,
    ntp: float,
    until: float,
    rule: str,
) -> list[str]:
    """elderly-water on one meter, read every 10 min from 22:00 the day before (`used_m3`: the
    total's rise since then at a true time); a power cut at `cut`, the restart at `true_boot` on a
    `boot` clock, NTP sets it at `ntp`. Returns the true local times (HH:MM) `rule` raised at."""
    cfg = RulesConfig.model_validate({"packs": [{"name": "elderly-water"}]})
    devices = [dev("wm", points=("flow_total",), profile="cjt188-water-cold")]

    def meter(true_t: float, wall: float) -> list[Reading]:
        return [Reading("wm", "flow_total", round(100.0 + used_m3(true_t), 4), "", wall)]

    clock = BootClock(local(21, 22, 0))
    e = RuleEngine(cfg, devices, steady=SteadyWall(clock))
    run(e, clock, cut - local(21, 22, 0), lambda ts: meter(ts, ts))
    again, clock = restarted(cfg, devices, e.snapshot(), boot, true_boot, stale=cut - 3600)
    out: list[tuple[float, Event]] = []
    for s in range(0, int(until - true_boot), 60):
        t = true_boot + s
        if t == ntp:
            clock.wall_t = t
        events = again.evaluate(meter(t, clock.wall_t)) if s % 600 == 0 else []
        out += [(t, ev) for ev in events + again.tick(again.now())]
        clock.advance(60)
    got = raised([ev for _, ev in out], rule)
    return [datetime.fromtimestamp(t, TZ).strftime("%H:%M") for t, ev in out if ev in got]


@pytest.mark.parametrize("boot", BOOTS)
def test_the_days_water_use_counts_after_a_restart(boot: str) -> None:
    """elderly-water `water_over_use_day` (> 2 m3 a day): 0.1 m3 by a power cut at 07:00, then a tap
    left running (0.3 m3/h) from 08:00 on a box without network (NTP only at 22:00): raised at
    about 14:15, as with an RTC. Before the fix the day stayed on the calendar while the restored
    meter moved to 1970: every read's use was spread into a day it is not in and nothing counted."""

    def used(t: float) -> float:
        return 0.0025 * ((min(t, local(22, 7, 0)) - local(21, 22, 0)) // 600) + max(
            0.0, 0.3 * (t - local(22, 8, 0)) / 3600
        )

    got = _water_day(
        boot,
        used,
        local(22, 7, 0),
        local(22, 7, 5),
        local(22, 22, 0),
        local(22, 23, 0),
        "elderly-water.water_over_use_day",
    )
    assert got[:1] and "14:00" <= got[0] <= "14:30", f"boot clock {boot}: over-use raised at {got}"


@pytest.mark.parametrize("washed", [True, False], ids=["water-used", "no-water"])
@pytest.mark.parametrize("boot", BOOTS)
def test_a_day_of_water_use_after_a_restart_is_not_a_day_without(boot: str, washed: bool) -> None:
    """elderly-water `water_no_use_day`: a power cut at 02:00 (no use yet), the restart at 02:05 and
    NTP only at 22:00; water used 07:00-21:00 (5 L an hour). The day closes with that use: no
    alarm (before the fix it closed with none, and a welfare visit went out at midnight). A day
    truly without water still raises, about midnight."""

    def used(t: float) -> float:
        return 0.005 * max(0.0, min(t, local(22, 21, 0)) - local(22, 7, 0)) / 3600 if washed else 0.0

    got = _water_day(
        boot,
        used,
        local(22, 2, 0),
        local(22, 2, 5),
        local(22, 22, 0),
        local(23, 1, 0),
        "elderly-water.water_no_use_day",
    )
    if washed:
        assert got == [], f"boot clock {boot}: no-use raised at {got} after a day of use"
    else:
        assert got[:1] and got[0] <= "00:15", f"boot clock {boot}: no-use raised at {got}"


@pytest.mark.parametrize("boot", BOOTS)
def test_a_fall_at_home_after_a_restart_is_raised_after_still_s(boot: str) -> None:
    """test_household_door_pir's fall by day (moving 07:00-10:00, then a fall: "no movement at home"
    2 h (still_s) after the last movement), with a power cut at 10:30, the restart at 10:35 and NTP at 13:30.
    The door never moved (NEVER): on a 1970 clock the restored times lie below zero, and before
    the fix max(last_motion, NEVER) took NEVER (about the boot) for the last sign of life: the
    alarm came half an hour late."""
    from tests.rules.test_household_door_pir import BED, DOOR, PIR, WM, _engine, _every, _ts

    def engine_on(clock: BootClock) -> RuleEngine:
        e = _engine()
        return RuleEngine(e.config, list(e.devices.values()), steady=SteadyWall(clock))

    motion = _every(_ts(22, "07:00"), _ts(22, "10:00"), step_s=600)

    def live(e: RuleEngine, clock: BootClock, start: float, until: float, ntp: float) -> list[str]:
        """As test_household_door_pir._live on the box's clock; the true times of the raises."""
        got: list[str] = []
        sent: dict[str, tuple[Any, float]] = {}
        t = start
        while t <= until:
            if t == ntp:
                clock.wall_t = t
            out: list[Event] = []
            for dev_id, point, state in (
                (BED, "in_bed", t < _ts(22, "07:00")),
                (DOOR, "door_open", False),
                (PIR, "motion", motion(t)),
            ):
                last = sent.get(dev_id)
                if last is None or last[0] != state or t - last[1] >= 600:
                    out += e.evaluate([Reading(dev_id, point, state, "", clock.wall_t)])
                    sent[dev_id] = (state, t)
            if int(t - start) % 900 == 0:
                litres = 6.0 if t >= _ts(22, "07:05") else 0.0
                out += e.evaluate([Reading(WM, "flow_total", 512.0 + litres / 1000, "", clock.wall_t)])
            out += e.tick(e.now())
            got += [
                f"{datetime.fromtimestamp(t, TZ):%H:%M} {ev.value}" for ev in raised(out, "household.301")
            ]
            t += 60
            clock.advance(60)
        return got

    clock = BootClock(_ts(22, "05:00"))
    e = engine_on(clock)
    assert live(e, clock, _ts(22, "05:00"), _ts(22, "10:30"), 0.0) == []
    true_boot = _ts(22, "10:35")
    clock = BootClock({"rtc": true_boot, "1970": 60.0, "fake-hwclock": _ts(22, "09:00")}[boot])
    again = engine_on(clock)
    again.restore(json.loads(json.dumps(e.snapshot())))
    got = live(again, clock, true_boot, _ts(22, "14:00"), _ts(22, "13:30"))
    # The last movement was read at 09:50: 11:50, 5 min later on a wrong clock (the outage is no time).
    assert got[:1] and "11:50" <= got[0] <= "11:56", f"boot clock {boot}: raised {got}"
    assert got[0].endswith(" no movement at home")


def test_a_first_start_on_a_1970_clock_then_ntp_is_no_day_without_water() -> None:
    """A new box (no snapshot) starts on a 1970 clock with the resident using water; NTP steps the
    clock 56 years on after an hour. The day moves with the step: no `water_no_use_day` (before
    the fix the next read closed every day since 1970 with no use in it and raised)."""
    cfg = RulesConfig.model_validate({"packs": [{"name": "elderly-water"}]})
    clock = BootClock(60.0)
    e = RuleEngine(
        cfg, [dev("wm", points=("flow_total",), profile="cjt188-water-cold")], steady=SteadyWall(clock)
    )
    used = {"m3": 100.0}

    def using(ts: float) -> list[Reading]:
        used["m3"] += 0.01
        return [Reading("wm", "flow_total", round(used["m3"], 3), "", ts)]

    out = run(e, clock, 2 * 86400, using, ntp=(clock.mono_t + 3600, local(22, 9, 0)))
    assert not raised(out, "elderly-water.water_no_use_day")
    assert not raised(out, "elderly-water.water_over_use_day")  # 1.44 m3 a day
