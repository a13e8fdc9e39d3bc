"""Pipeline: normalize, rules see everything, report by exception, offline handling."""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from citynerve.gateway.api import (
    DeviceConfig,
    Event,
    EventState,
    Location,
    PointConfig,
    Quality,
    Reading,
    Sample,
    SampleBatch,
    Severity,
)
from citynerve.gateway.pipeline import NoRules, Pipeline, ReadingSink, RulesHook
from citynerve.gateway.store import AsyncOutbox, Lane, OutboxWriter


class RecordingSink(ReadingSink):
    """Keeps what the pipeline hands on (the real sink, OutboxWriter, is tested at the end)."""

    def __init__(self) -> None:
        self.readings: list[Reading] = []
        self.events: list[Event] = []

    def put_readings(self, readings: Sequence[Reading]) -> None:
        self.readings.extend(readings)

    def put_event(self, event: Event) -> None:
        self.events.append(event)


class RecordingRules(RulesHook):
    """Sees what the rules engine would see; raises an event when flow exceeds 10."""

    def __init__(self) -> None:
        self.seen: list[Reading] = []
        self.ticks: list[float] = []

    def evaluate(self, readings: Sequence[Reading]) -> Sequence[Event]:
        self.seen.extend(readings)
        return [
            Event(r.device_id, "high_flow", EventState.RAISED, Severity.MAJOR, r.ts, value=r.value)
            for r in readings
            if r.point == "flow" and isinstance(r.value, float) and r.value > 10
        ]

    def tick(self, now: float) -> Sequence[Event]:
        self.ticks.append(now)
        return [Event("meter-1", "water_no_use", EventState.RAISED, Severity.MINOR, now)]


def device(dev_id: str = "meter-1", **points: PointConfig) -> DeviceConfig:
    pts = points or {
        "flow": PointConfig(name="flow", unit="m3/h", scale=0.01, deadband=0.05, max_interval_s=60),
        "total": PointConfig(name="total", unit="m3", max_interval_s=300),
        "valve": PointConfig(name="valve", max_interval_s=300),
        "serial": PointConfig(name="serial", max_interval_s=300),
        "temp": PointConfig(name="temp", unit="°C", scale=0.1, offset=-40.0),
    }
    return DeviceConfig(
        id=dev_id, bus="rs485-1", profile="modbus-water-meter", address=1,
        location=Location(address_code="320508001"), points=pts,
    )  # fmt: skip


def batch(ts: float, dev: str = "meter-1", **values: object) -> SampleBatch:
    return SampleBatch(dev, ts, tuple(Sample(k, v) for k, v in values.items()))  # type: ignore[arg-type]


def test_normalize_scale_offset_unit_and_types() -> None:
    sink = RecordingSink()
    p = Pipeline({"meter-1": device()}, sink)
    p.submit(batch(100.0, flow=1234, total=99, valve=True, serial="SN-42", temp=650))
    got = {r.point: r for r in sink.readings}
    assert got["flow"] == Reading("meter-1", "flow", 12.34, "m3/h", 100.0)
    assert got["total"].value == 99 and type(got["total"].value) is int  # no scaling: int stays int
    assert got["valve"].value is True and got["serial"].value == "SN-42"
    assert got["temp"].value == pytest.approx(25.0) and got["temp"].unit == "°C"
    assert p.counters().readings_in == 5 and p.counters().reported == 5


def test_none_nan_and_odd_values_become_bad() -> None:
    sink = RecordingSink()
    p = Pipeline({"meter-1": device()}, sink)
    p.submit(
        SampleBatch(
            "meter-1",
            1.0,
            (
                Sample("flow", None, Quality.GOOD),
                Sample("temp", math.nan),
                Sample("total", math.inf),
                Sample("serial", [1, 2]),  # type: ignore[arg-type]
            ),
        )
    )
    assert [(r.point, r.value, r.quality) for r in sink.readings] == [
        ("flow", None, Quality.BAD),
        ("temp", None, Quality.BAD),
        ("total", None, Quality.BAD),
        ("serial", None, Quality.BAD),
    ]
    assert p.counters().bad_values == 3


def test_unusable_values_after_numbers_with_the_same_quality() -> None:
    """NaN after a BAD number, an odd type after a number: compared safely, never a crash."""
    sink = RecordingSink()
    p = Pipeline({"meter-1": device()}, sink)
    p.submit(SampleBatch("meter-1", 1.0, (Sample("flow", 5.0, Quality.BAD), Sample("total", 3))))
    p.submit(SampleBatch("meter-1", 2.0, (Sample("flow", math.nan, Quality.BAD), Sample("total", [3]))))  # type: ignore[arg-type]
    p.submit(SampleBatch("meter-1", 3.0, (Sample("flow", math.nan, Quality.BAD), Sample("total", [3]))))  # type: ignore[arg-type]
    assert [(r.ts, r.point, r.value, r.quality) for r in sink.readings] == [
        (1.0, "flow", 0.05, Quality.BAD),
        (1.0, "total", 3, Quality.GOOD),
        (2.0, "flow", None, Quality.BAD),
        (2.0, "total", None, Quality.BAD),
    ]


def test_unknown_points_and_devices_are_counted_and_dropped() -> None:
    sink = RecordingSink()
    disabled = PointConfig(name="x", enabled=False)
    p = Pipeline({"meter-1": device(flow=PointConfig(name="flow"), x=disabled)}, sink)
    p.submit(batch(1.0, flow=1.0, nope=2.0, x=3.0))
    p.submit(batch(1.0, dev="ghost", flow=1.0))
    p.mark_offline("ghost", 2.0)
    assert [r.point for r in sink.readings] == ["flow"]
    c = p.counters()
    assert (c.unknown_points, c.unknown_devices, c.readings_in) == (2, 2, 1)


def test_deadband_max_interval_quality_and_non_numeric_changes() -> None:
    sink = RecordingSink()
    p = Pipeline({"meter-1": device()}, sink)
    p.submit(batch(0.0, flow=1000, valve=False))  # first: reported
    p.submit(batch(1.0, flow=1004, valve=False))  # 10.04 vs 10.00: inside deadband 0.05
    p.submit(batch(2.0, flow=1006, valve=True))  # 10.06: beyond; valve changed
    p.submit(batch(3.0, flow=1006, valve=True))  # nothing changed
    p.submit(SampleBatch("meter-1", 4.0, (Sample("flow", 1006, Quality.BAD),)))  # quality changed
    p.submit(batch(5.0, flow=1006))  # back to good
    p.submit(batch(65.0, flow=1006))  # max interval 60 s passed since 5.0
    p.submit(batch(66.0, flow=1006))
    flow = [(r.ts, r.value, r.quality) for r in sink.readings if r.point == "flow"]
    assert flow == [
        (0.0, 10.0, Quality.GOOD),
        (2.0, 10.06, Quality.GOOD),
        (4.0, 10.06, Quality.BAD),
        (5.0, 10.06, Quality.GOOD),
        (65.0, 10.06, Quality.GOOD),
    ]
    assert [(r.ts, r.value) for r in sink.readings if r.point == "valve"] == [(0.0, False), (2.0, True)]
    c = p.counters()
    assert c.reported + c.suppressed == c.readings_in == 12


def test_bool_and_int_are_different_values() -> None:
    sink = RecordingSink()
    p = Pipeline({"d": device("d", s=PointConfig(name="s"))}, sink)
    p.submit(batch(0.0, dev="d", s=1))
    p.submit(batch(1.0, dev="d", s=True))  # True == 1 in Python, but it is a different reading
    p.submit(batch(2.0, dev="d", s="1"))
    assert [r.value for r in sink.readings] == [1, True, "1"]


def test_clock_going_backwards_reports() -> None:
    sink = RecordingSink()
    p = Pipeline({"meter-1": device()}, sink)
    p.submit(batch(1000.0, total=5))
    p.submit(batch(10.0, total=5))  # the gateway clock was reset: do not go silent for 990 s
    assert [r.ts for r in sink.readings] == [1000.0, 10.0]


def test_rules_see_every_reading_and_their_events_go_to_the_sink() -> None:
    sink = RecordingSink()
    rules = RecordingRules()
    p = Pipeline({"meter-1": device()}, sink, rules)
    p.submit(batch(0.0, flow=2000))
    p.submit(batch(1.0, flow=2001))  # suppressed by RBE, but the rules still see it
    assert [r.value for r in rules.seen] == [20.0, 20.01]
    assert p.counters().suppressed == 1
    assert [e.kind for e in sink.events] == ["high_flow", "high_flow"]
    p.tick(5.0)
    assert rules.ticks == [5.0] and sink.events[-1].kind == "water_no_use"
    bus_event = Event("meter-1", "device_offline", EventState.RAISED, Severity.MAJOR, 6.0)
    p.event(bus_event)
    assert sink.events[-1] is bus_event and rules.seen[-1].ts == 1.0  # bus events bypass rules
    assert p.counters().events == 4


def test_a_failing_rules_hook_never_breaks_the_bus() -> None:
    class Broken(NoRules):
        def evaluate(self, readings: Sequence[Reading]) -> Sequence[Event]:
            raise ZeroDivisionError

        def tick(self, now: float) -> Sequence[Event]:
            raise KeyError(now)

    sink = RecordingSink()
    p = Pipeline({"meter-1": device()}, sink, Broken())
    p.submit(batch(0.0, flow=1000))
    p.tick(1.0)
    assert len(sink.readings) == 1 and p.counters().rule_errors == 2


def test_offline_emits_stale_once_and_recovery_is_reported() -> None:
    sink = RecordingSink()
    p = Pipeline({"meter-1": device()}, sink)
    p.submit(batch(0.0, flow=1000, total=7))
    sink.readings.clear()
    p.mark_offline("meter-1", 30.0)
    p.mark_offline("meter-1", 40.0)  # still offline: not again
    assert sorted((r.point, r.value, r.quality, r.ts) for r in sink.readings) == [
        ("flow", 10.0, Quality.STALE, 30.0),
        ("total", 7, Quality.STALE, 30.0),
    ]
    assert p.latest("meter-1")["flow"].quality is Quality.STALE
    sink.readings.clear()
    p.submit(batch(50.0, flow=1000, total=7))  # same values as before the outage: still reported
    assert sorted((r.point, r.quality) for r in sink.readings) == [
        ("flow", Quality.GOOD),
        ("total", Quality.GOOD),
    ]
    assert p.latest("meter-1")["flow"] == Reading("meter-1", "flow", 10.0, "m3/h", 50.0)
    assert p.latest("nobody") == {}


@settings(max_examples=300, deadline=None)
@given(
    deadband=st.floats(min_value=0, max_value=10),
    max_interval=st.floats(min_value=0.5, max_value=100),
    steps=st.lists(
        st.tuples(
            st.floats(min_value=0.01, max_value=30),  # time step
            st.floats(min_value=-1e6, max_value=1e6, allow_nan=False),  # raw value
            st.sampled_from([Quality.GOOD, Quality.GOOD, Quality.GOOD, Quality.BAD, Quality.STALE]),
        ),
        min_size=1,
        max_size=60,
    ),
)
def test_rbe_properties(
    deadband: float, max_interval: float, steps: list[tuple[float, float, Quality]]
) -> None:
    sink = RecordingSink()
    cfg = PointConfig(name="v", scale=0.5, offset=3.0, deadband=deadband, max_interval_s=max_interval)
    p = Pipeline({"d": device("d", v=cfg)}, sink)
    ts = 1_000.0
    last_reported: Reading | None = None
    for dt, raw, q in steps:
        ts += dt
        before = len(sink.readings)
        p.submit(SampleBatch("d", ts, (Sample("v", raw, q),)))
        true_value = raw * 0.5 + 3.0
        if len(sink.readings) > before:
            last_reported = sink.readings[-1]
            # A report carries the true, current value.
            assert last_reported.value == true_value and last_reported.ts == ts
        assert last_reported is not None  # the first reading is always reported
        # Between reports the platform's view is never off by more than the deadband ...
        assert abs(true_value - last_reported.value) <= deadband  # type: ignore[operator]
        # ... nor older than max_interval, nor of another quality.
        assert ts - last_reported.ts < max_interval
        assert last_reported.quality is q
    c = p.counters()
    assert c.reported == len(sink.readings) and c.reported + c.suppressed == len(steps)


async def test_pipeline_into_the_real_outbox(tmp_path: Path) -> None:
    async with AsyncOutbox(tmp_path / "p.db", synchronous="normal") as ob:
        writer = OutboxWriter(ob, max_latency_s=0.05)
        p = Pipeline({"meter-1": device()}, writer, RecordingRules())
        p.submit(batch(0.0, flow=2000, total=1))
        p.submit(batch(1.0, flow=2001, total=1))
        await writer.flush()
        tele = [r.record for r in await ob.peek(Lane.TELEMETRY)]
        assert tele == [
            Reading("meter-1", "flow", 20.0, "m3/h", 0.0),
            Reading("meter-1", "total", 1, "m3", 0.0),
        ]
        events = await ob.peek(Lane.EVENT)
        assert [e.record.kind for e in events] == ["high_flow", "high_flow"]  # type: ignore[union-attr]


any_value = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(),
    st.floats(),
    st.text(max_size=5),
    st.lists(st.integers(), max_size=2),
    st.decimals(allow_nan=True),
)


@settings(max_examples=300, deadline=None)
@given(
    batches=st.lists(
        st.tuples(
            st.floats(min_value=-1e10, max_value=1e10),
            st.lists(
                st.tuples(
                    st.sampled_from(["flow", "total", "valve", "serial", "temp", "nope"]),
                    any_value,
                    st.sampled_from(list(Quality)),
                ),
                max_size=6,
            ),
        ),
        max_size=12,
    ),
    offline_after=st.integers(0, 12),
)
def test_pipeline_never_raises_on_any_input(
    batches: list[tuple[float, list[tuple[str, object, Quality]]]], offline_after: int
) -> None:
    sink = RecordingSink()
    p = Pipeline({"meter-1": device()}, sink, RecordingRules())
    total = unknown = stale = 0
    for i, (ts, samples) in enumerate(batches):
        if i == offline_after:
            before = len(sink.readings)
            p.mark_offline("meter-1", ts)
            stale = len(sink.readings) - before
        p.submit(SampleBatch("meter-1", ts, tuple(Sample(n, v, q) for n, v, q in samples)))  # type: ignore[arg-type]
        total += sum(1 for n, _, _ in samples if n != "nope")
        unknown += sum(1 for n, _, _ in samples if n == "nope")
    c = p.counters()
    assert c.readings_in == total and c.unknown_points == unknown
    assert c.reported + c.suppressed == total + stale
    assert c.reported == len(sink.readings)
    for r in sink.readings:
        assert r.value is None or type(r.value) in (bool, int, float, str)
        assert not (isinstance(r.value, float) and not math.isfinite(r.value))


def test_huge_int_with_scaling_is_bad_not_a_crash() -> None:
    sink = RecordingSink()
    p = Pipeline({"meter-1": device()}, sink)
    p.submit(batch(1.0, flow=10**400, total=10**400))
    got = {r.point: r for r in sink.readings}
    assert got["flow"].value is None and got["flow"].quality is Quality.BAD
    assert got["total"].value is None and got["total"].quality is Quality.BAD  # beyond 64 bits


def test_a_reloaded_device_list_keeps_the_state_of_unchanged_points() -> None:
    sink = RecordingSink()
    p = Pipeline({"meter-1": device()}, sink)
    p.submit(batch(10.0, flow=1000, total=5, temp=500))
    assert len(sink.readings) == 3
    changed = device(
        flow=PointConfig(name="flow", unit="m3/h", scale=0.01, deadband=0.05, max_interval_s=60),
        total=PointConfig(name="total", unit="m3", scale=2.0, max_interval_s=300),  # scale changed
    )
    p.update_devices({"meter-1": changed, "meter-2": device("meter-2")})
    assert set(p.latest("meter-1")) == {"flow"}  # temp removed, total starts afresh
    assert p.latest("meter-1")["flow"] == Reading("meter-1", "flow", 10.0, "m3/h", 10.0)
    p.submit(batch(20.0, flow=1000, total=5))
    p.submit(batch(20.0, "meter-2", flow=1000))
    reported = [(r.device_id, r.point, r.value) for r in sink.readings[3:]]
    assert reported == [("meter-1", "total", 10.0), ("meter-2", "flow", 10.0)]  # flow: unchanged, held back
    p.submit(batch(30.0, temp=1))
    assert p.counters().unknown_points == 1


def test_a_huge_unscaled_int_is_unknown_to_the_rules_and_the_batch_still_evaluates() -> None:
    """An int beyond float range (kept exactly by the pipeline) is no number to a rule: the threshold
    rule on it sees nothing, and the leak rule of the same batch still raises (it used to be lost with
    the whole batch, and the device marked faulted, on OverflowError)."""
    from citynerve.gateway.rules import RuleEngine, RulesConfig

    pts = {"value": PointConfig(name="value"), "leak": PointConfig(name="leak")}
    dev = device("d1", **pts)
    rules = [
        {"id": "hot", "kind": "threshold", "point": "value", "above": 10},
        {"id": "leak", "kind": "boolean", "point": "leak"},
    ]
    e = RuleEngine(RulesConfig.model_validate({"rules": rules}), [dev])
    sink = RecordingSink()
    p = Pipeline({"d1": dev}, sink, e)
    for big in (10**400, -(2**1024)):
        p.submit(batch(1.0, "d1", value=big, leak=True))
    assert [(ev.rule, ev.state) for ev in sink.events] == [("leak", EventState.RAISED)]
    assert p.rule_errors == 0
    assert e.instances["hot|d1"].alarm.phase.value == "idle"


async def test_an_int_beyond_64_bits_is_bad_and_its_batch_reaches_the_real_outbox(tmp_path: Path) -> None:
    """An int no register holds (10**400, 10**5000: over 4300 digits str() refuses it) is BAD before
    anything uses it: the batch is stored whole, nothing raises (the writer used to raise on it after
    report by exception had counted the batch's other readings as sent). 64-bit values stay exact."""
    async with AsyncOutbox(tmp_path / "p.db", synchronous="normal") as ob:
        writer = OutboxWriter(ob, max_latency_s=0.05)
        p = Pipeline({"meter-1": device()}, writer, RecordingRules())
        p.submit(batch(0.0, temp=650, total=10**5000, serial=2**64 - 1))
        p.submit(batch(1.0, temp=650, total=-(10**400), serial=-(2**64)))
        p.submit(batch(2.0, temp=650, total=2**64, serial=-(2**63)))
        await writer.flush()
        tele = [
            (r.record.ts, r.record.point, r.record.value, r.record.quality)
            for r in await ob.peek(Lane.TELEMETRY)
        ]  # type: ignore[union-attr]
    assert tele == [
        (0.0, "temp", pytest.approx(25.0), Quality.GOOD),
        (0.0, "total", None, Quality.BAD),
        (0.0, "serial", 2**64 - 1, Quality.GOOD),  # an unsigned 64-bit counter, exactly
        (1.0, "serial", None, Quality.BAD),
        (2.0, "serial", -(2**63), Quality.GOOD),
    ]
    assert p.bad_values == 4


def test_an_odd_number_that_overflows_when_scaled_is_bad() -> None:
    """Finiteness is checked on the engineering value: Decimal 1e308 x 10 is an infinity, not GOOD."""
    from decimal import Decimal

    sink = RecordingSink()
    p = Pipeline({"d1": device("d1", e=PointConfig(name="e", scale=10.0), c=PointConfig(name="c"))}, sink)
    p.submit(SampleBatch("d1", 1.0, (Sample("e", Decimal("1e308")), Sample("c", Decimal("1e400")))))  # type: ignore[arg-type]
    p.submit(SampleBatch("d1", 2.0, (Sample("e", Decimal("2.5")), Sample("c", Decimal("7")))))  # type: ignore[arg-type]
    assert [(r.ts, r.point, r.value, r.quality) for r in sink.readings] == [
        (1.0, "e", None, Quality.BAD),
        (1.0, "c", None, Quality.BAD),
        (2.0, "e", 25.0, Quality.GOOD),
        (2.0, "c", 7.0, Quality.GOOD),
    ]
