"""Consumption windows over cumulative meters: sliding, calendar day, every slot; rollover,
replacement and gaps; the meter tracker's bookkeeping under hypothesis."""

from __future__ import annotations

import itertools
from datetime import datetime
from zoneinfo import ZoneInfo

from hypothesis import given, settings
from hypothesis import strategies as st

from citynerve.gateway.rules.meter import MeterTrack, Step, spread

from .conftest import engine, feed, states

TZ = ZoneInfo("Asia/Shanghai")
MIDNIGHT = datetime(2026, 9, 21, tzinfo=TZ).timestamp()  # a Monday
H = 3600.0

NO_USE = {
    "id": "no_use",
    "kind": "consumption",
    "point": "value",
    "window": "sliding",
    "window_s": 12 * H,
    "bin_s": 900,
    "below": 0.01,
    "rollover_at": 100000.0,
    "max_step": 5.0,
}


def reads(start: float, totals: list[float], every: float = 900.0) -> list[tuple[float, float]]:
    return [(start + i * every, v) for i, v in enumerate(totals)]


def test_no_use_needs_a_full_window_then_raises_and_clears_on_use() -> None:
    e = engine([NO_USE])
    # 13 h of reads every 15 min without use: raised once 12 h (+ up to a bin) after the first read.
    ev = feed(e, reads(MIDNIGHT, [100.0] * 53))
    assert states(ev) == [("no_use", "raised")]
    assert 12 * H <= ev[0].ts - MIDNIGHT <= 12.25 * H
    assert ev[0].value == 0.0
    # 6 L in one read: still below 0.01 m3; 15 L: cleared.
    assert feed(e, [(MIDNIGHT + 53 * 900, 100.006)]) == []
    assert states(feed(e, [(MIDNIGHT + 54 * 900, 100.021)])) == [("no_use", "cleared")]


def test_small_uses_spread_over_the_window_keep_it_clear() -> None:
    e = engine([NO_USE])
    totals = [100 + 0.002 * (i // 8) for i in range(100)]  # 2 L every 2 h: 12 L per 12 h
    assert feed(e, reads(MIDNIGHT, totals)) == []


def test_rollover_is_use_not_replacement() -> None:
    over = {**NO_USE, "id": "over", "below": None, "above": 0.5, "window_s": 4 * H}
    e = engine([over])
    ev = feed(e, reads(MIDNIGHT, [99999.7, 99999.9, 0.1, 0.3]))
    assert states(ev) == [("over", "raised")]  # 0.6 m3 across the wrap
    assert round(float(ev[0].value), 6) == 0.6  # type: ignore[arg-type]


def test_replacement_rebaselines_instead_of_a_burst_or_a_drop() -> None:
    over = {**NO_USE, "id": "over", "below": None, "above": 0.5, "window_s": 4 * H}
    e = engine([over, NO_USE])
    # Old meter at 1234.5, new meter starts at 0.002 (a drop far from the top): no use counted.
    # Then a swap to a meter reading 50 (a jump above max_step): no burst either.
    ev = feed(e, reads(MIDNIGHT, [1234.5, 1234.52, 0.002, 0.03, 50.0, 50.02]))
    assert ev == []


def test_gap_spreads_use_and_zero_delta_is_known_no_use() -> None:
    e = engine([NO_USE])
    # Reads stop for 13 h, then the total has not moved: the no-use is known for the whole gap.
    ev = feed(e, [(MIDNIGHT, 10.0), (MIDNIGHT + 13 * H, 10.0)])
    assert states(ev) == [("no_use", "raised")]
    # 13 h gap with 30 L used somewhere in it: spread, so the window is not "no use".
    e = engine([NO_USE])
    assert feed(e, [(MIDNIGHT, 10.0), (MIDNIGHT + 13 * H, 10.03)]) == []


def test_daily_below_closes_complete_days_only() -> None:
    rule = {"id": "day", "kind": "consumption", "point": "value", "window": "day", "below": 0.01}
    e = engine([rule])
    # Gateway starts at 10:00: that day is incomplete and never judged.
    ev = feed(e, reads(MIDNIGHT + 10 * H, [5.0] * (14 * 4 + 1)))
    assert ev == []
    # The next day is watched from midnight to midnight without use: raised by the first read at or after.
    ev = feed(e, reads(MIDNIGHT + 24 * H + 900, [5.0] * 97))
    assert states(ev) == [("day", "raised")]
    assert ev[0].ts == MIDNIGHT + 48 * H  # the 00:00 read closes the day
    # Use resumes: cleared.
    assert states(feed(e, [(MIDNIGHT + 48 * H + 1800, 5.02)])) == [("day", "cleared")]


def test_daily_above_raises_on_the_crossing_and_clears_at_midnight() -> None:
    rule = {"id": "over", "kind": "consumption", "point": "value", "window": "day", "above": 2.0}
    e = engine([rule])
    ev = feed(e, reads(MIDNIGHT + 8 * H, [10.0, 11.0, 12.1, 12.5]))
    assert states(ev) == [("over", "raised")]
    assert ev[0].ts == MIDNIGHT + 8 * H + 1800 and ev[0].value == 2.1
    ev = feed(e, [(MIDNIGHT + 24 * H + 600, 12.5)])
    assert states(ev) == [("over", "cleared")]


def test_use_in_every_slot_for_24_hours_is_a_leak() -> None:
    leak = {
        "id": "leak",
        "kind": "consumption",
        "point": "value",
        "window": "slots",
        "slot_s": 1800,
        "slots": 48,
        "min_per_slot": 0.0005,
        "gap_s": 7200,
    }
    e = engine([leak])
    totals = [100 + 0.002 * i for i in range(24 * 4 + 3)]  # 2 L every 15 min (8 L/h)
    ev = feed(e, reads(MIDNIGHT, totals))
    assert states(ev) == [("leak", "raised")]
    assert 24 * H <= ev[0].ts - MIDNIGHT <= 24.5 * H
    # A slot without use ends it.
    ev = feed(e, reads(MIDNIGHT + 99 * 900, [totals[-1]] * 4))
    assert states(ev) == [("leak", "cleared")]


def test_a_long_gap_restarts_the_slot_run() -> None:
    leak = {"id": "leak", "kind": "consumption", "point": "value", "window": "slots", "min_per_slot": 0.0005}
    e = engine([leak])
    first = [100 + 0.002 * i for i in range(20 * 4)]  # 20 h of flow
    ev = feed(e, reads(MIDNIGHT, first))
    # 3 h without reads (longer than gap_s), flow continues: the run cannot be proven, starts again.
    t = MIDNIGHT + 23 * H
    ev += feed(e, reads(t, [first[-1] + 0.03 + 0.002 * i for i in range(10 * 4)]))
    assert ev == []


def test_meter_track_rollover_replacement_out_of_order() -> None:
    m = MeterTrack(rollover_at=100.0, max_step=5.0)
    assert m.feed(99.5, 1.0) is Step.REBASE
    assert m.feed(0.5, 2.0) is Step.ROLLOVER and m.use == 1.0 and m.t0 == 1.0
    assert m.feed(0.4, 1.5) is None  # out of order
    assert m.feed(float("nan"), 3.0) is None
    assert m.feed(0.1, 4.0) is Step.REBASE  # a drop far from the top: replaced
    assert m.feed(30.0, 5.0) is Step.REBASE  # a jump above max_step: replaced
    assert m.feed(31.0, 6.0) is Step.USE and m.use == 1.0 and m.gap_s == 1.0


@settings(max_examples=200, deadline=None)
@given(
    start=st.floats(0, 99_000),
    steps=st.lists(st.tuples(st.floats(1, 3600), st.floats(0, 4.9)), min_size=1, max_size=60),
)
def test_meter_track_conserves_use_across_rollovers(start: float, steps: list[tuple[float, float]]) -> None:
    """Whatever the totals do (wrapping at 100,000), summed steps equal the true use."""
    m = MeterTrack(rollover_at=100_000.0, max_step=5.0)
    t, total, true_use, counted = 0.0, start, 0.0, 0.0
    m.feed(total, t)
    for dt, use in steps:
        t += dt
        total = (total + use) % 100_000.0
        true_use += use
        kind = m.feed(total, t)
        assert kind in (Step.USE, Step.ROLLOVER)
        counted += m.use
    assert abs(counted - true_use) < 1e-6 * max(1.0, true_use) + 1e-6


@given(
    use=st.floats(0, 1000),
    t0=st.floats(0, 1e6),
    dt=st.floats(0.001, 1e5),
    cuts=st.lists(st.floats(0, 1), min_size=1, max_size=8),
)
def test_spread_over_a_partition_adds_up(use: float, t0: float, dt: float, cuts: list[float]) -> None:
    edges = sorted({t0, t0 + dt, *(t0 + c * dt for c in cuts)})
    parts = sum(spread(use, t0, t0 + dt, a, b) for a, b in itertools.pairwise(edges))
    assert abs(parts - use) < 1e-6 * max(1.0, use)
