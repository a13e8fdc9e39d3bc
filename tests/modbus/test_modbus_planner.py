"""Read planner: minimal on tricky maps, checked against a brute force over every partition."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from citynerve.drivers.modbus.config import ModbusTcpBusConfig
from citynerve.drivers.modbus.driver import ModbusDriver, plan_device
from citynerve.drivers.modbus.planner import Limits, PlannedRead, PointSpan, plan_reads, run_feasible


def partitions(items: list[PointSpan]) -> Iterator[list[list[PointSpan]]]:
    if not items:
        yield []
        return
    first, rest = items[0], items[1:]
    for part in partitions(rest):
        for i in range(len(part)):
            yield [*part[:i], [first, *part[i]], *part[i + 1 :]]
        yield [[first], *part]


def brute_force(points: list[PointSpan], size: int, gap: int) -> tuple[int, int]:
    """(fewest reads, fewest addresses read among those) over every way to group the points."""
    best: tuple[int, int] | None = None
    for part in partitions(points):
        if all(run_feasible(block, size, gap) for block in part):
            cost = (len(part), sum(max(p.end for p in b) - min(p.address for p in b) for b in part))
            best = cost if best is None or cost < best else best
    assert best is not None
    return best


def check_valid(reads: list[PlannedRead], points: list[PointSpan], limits: Limits) -> None:
    carried = sorted(p.name for r in reads for p in r.points)
    assert carried == sorted(p.name for p in points), "every point read exactly once"
    for r in reads:
        assert r.count <= limits.size_for(r.table)
        assert {p.table for p in r.points} == {r.table}, "never across tables"
        assert {p.interval_s for p in r.points} == {r.interval_s}, "never across intervals"
        for p in r.points:
            assert r.address <= p.address and p.end <= r.address + r.count, "points never split"
        assert run_feasible(r.points, limits.size_for(r.table), limits.gap_for(r.table))


@st.composite
def tricky_maps(draw: Any) -> tuple[list[PointSpan], int, int]:
    size = draw(st.integers(2, 16))
    gap = draw(st.integers(0, 5))
    n = draw(st.integers(1, 7))
    points = [
        PointSpan(
            f"p{i}",
            "holding",
            draw(st.integers(0, 40)),
            draw(st.integers(1, min(size, 6))),  # overlapping and nested points included
            60.0,
        )
        for i in range(n)
    ]
    return points, size, gap


@settings(max_examples=400, deadline=None)
@given(tricky_maps())
def test_plan_is_minimal_against_brute_force(case: tuple[list[PointSpan], int, int]) -> None:
    points, size, gap = case
    limits = Limits(max_registers=size, max_gap=gap)
    reads = plan_reads(points, limits)
    check_valid(reads, points, limits)
    assert (len(reads), sum(r.count for r in reads)) == brute_force(points, size, gap)


def span(
    name: str, address: int, count: int = 1, table: str = "holding", interval: float = 60.0
) -> PointSpan:
    return PointSpan(name, table, address, count, interval)


@pytest.mark.parametrize(
    ("points", "limits", "expected"),
    [
        # Adjacent registers up to exactly 125 make one read; the 126th forces a second.
        ([span(f"r{i}", i) for i in range(125)], Limits(), [(0, 125)]),
        ([span(f"r{i}", i) for i in range(126)], Limits(), [(0, 125), (125, 1)]),
        # A float32 straddling the 125 boundary is never split; of the two 2-read plans the one
        # reading fewer addresses wins (0..2 + 100..126 = 28, not 0..102 + 124..126 = 104).
        ([span("a", 0, 2), span("b", 100, 2), span("c", 124, 2)], Limits(max_gap=100), [(0, 2), (100, 26)]),
        ([span("a", 0, 2), span("b", 123, 2)], Limits(max_gap=125), [(0, 125)]),
        ([span("a", 0, 2), span("b", 124, 2)], Limits(max_gap=125), [(0, 2), (124, 2)]),
        # Gap of exactly max_gap merges, max_gap + 1 does not.
        ([span("a", 0, 2), span("b", 12, 2)], Limits(max_gap=10), [(0, 14)]),
        ([span("a", 0, 2), span("b", 13, 2)], Limits(max_gap=10), [(0, 2), (13, 2)]),
        # A long string bridges a hole: the point behind the hole joins because the string covers it.
        ([span("s", 0, 40), span("a", 30, 2), span("b", 45, 1)], Limits(max_gap=10), [(0, 46)]),
        # Packing from the left (0..8 + 9..16 = 15 addresses) loses to 0..2 + 6..16 = 12 addresses.
        (
            [span("a", 0, 2), span("b", 6, 2), span("c", 9, 2), span("d", 14, 2)],
            Limits(max_registers=10, max_gap=4),
            [(0, 2), (6, 10)],
        ),
        # Per-device limit smaller than 125.
        ([span(f"r{i}", 2 * i, 2) for i in range(10)], Limits(max_registers=8), [(0, 8), (8, 8), (16, 4)]),
        # max_gap = 0: only touching points share a read.
        ([span("a", 0), span("b", 1), span("c", 3)], Limits(max_gap=0), [(0, 2), (3, 1)]),
        # Bits: 2000 per read; the gap is counted in bits (max_gap * 16).
        ([span("c1", 0, table="coil"), span("c2", 160, table="coil")], Limits(max_gap=10), [(0, 161)]),
        ([span("c1", 0, table="coil"), span("c2", 1999, table="coil")], Limits(max_gap=200), [(0, 2000)]),
        (
            [span("c1", 0, table="coil"), span("c2", 2000, table="coil")],
            Limits(max_gap=200),
            [(0, 1), (2000, 1)],
        ),
    ],
)
def test_hand_picked_tricky_maps(
    points: list[PointSpan], limits: Limits, expected: list[tuple[int, int]]
) -> None:
    reads = plan_reads(points, limits)
    check_valid(reads, points, limits)
    assert [(r.address, r.count) for r in reads] == expected


def test_never_across_tables_or_intervals() -> None:
    points = [
        span("h0", 0),
        span("h1", 1, interval=10.0),
        span("i0", 0, table="input"),
        span("i1", 1, table="input"),
        span("c0", 0, table="coil"),
        span("d0", 0, table="discrete"),
    ]
    reads = plan_reads(points, Limits())
    check_valid(reads, points, Limits())
    assert sorted((r.table, r.interval_s, r.address, r.count) for r in reads) == [
        ("coil", 60.0, 0, 1),
        ("discrete", 60.0, 0, 1),
        ("holding", 10.0, 1, 1),
        ("holding", 60.0, 0, 1),
        ("input", 60.0, 0, 2),
    ]


def test_bit_points_sharing_a_register_are_one_read() -> None:
    points = [span(f"b{i}", 7) for i in range(16)] + [span("word", 7)]
    reads = plan_reads(points, Limits())
    assert [(r.address, r.count, len(r.points)) for r in reads] == [(7, 1, 17)]


def test_plan_device_uses_effective_intervals_and_skips_disabled(make_device: Any) -> None:
    device = make_device(
        {
            "a": {"table": "holding", "address": 0},
            "b": {"table": "holding", "address": 1, "poll_interval_s": 5},
            "c": {"table": "holding", "address": 2},
            "off": {"table": "holding", "address": 3, "enabled": False},
        },
        poll_interval_s=30,
    )
    plan = plan_device(device)
    assert sorted((r.interval_s, r.points, r.function, r.address, r.count) for r in plan) == [
        (5.0, ("b",), 3, 1, 1),
        (30.0, ("a", "c"), 3, 0, 3),
    ]
    defaulted = make_device({"a": {"table": "input", "address": 0}})
    assert [(r.interval_s, r.function) for r in plan_device(defaulted)] == [(60.0, 4)]


def test_device_limits_reach_the_planner(make_device: Any) -> None:
    points = {f"p{i}": {"table": "holding", "address": i * 5} for i in range(4)}
    assert len(plan_device(make_device(points))) == 1
    assert len(plan_device(make_device(points, max_gap=3))) == 4
    assert len(plan_device(make_device(points, max_request_registers=6))) == 2


def test_planner_is_fast_on_a_large_device() -> None:
    import time

    points = [span(f"p{i}", i * 3, 2) for i in range(2000)]
    start = time.perf_counter()
    reads = plan_reads(points, Limits())
    assert time.perf_counter() - start < 2.0
    assert len(reads) == 48  # 2000 points x 3 addresses = 6000 -> ceil(5999 / 125) reads


def test_devices_of_one_profile_share_one_read_plan(make_device: Any) -> None:
    # The loader gives the devices of one profile the same point objects, each in its own mapping.
    first = make_device({"a": {"table": "holding", "address": 0}, "b": {"table": "input", "address": 4}})
    second = first.model_copy(update={"id": "dev2", "address": 2, "points": dict(first.points)})
    slower = first.model_copy(update={"id": "dev3", "points": dict(first.points), "poll_interval_s": 30})
    other = make_device({"a": {"table": "holding", "address": 0}, "b": {"table": "input", "address": 4}})
    bus = ModbusTcpBusConfig(id="b1", host="127.0.0.1", port=1)
    driver = ModbusDriver(bus, [first, second, slower, other])
    plan = driver.plan(first)
    assert plan == plan_device(first) and len(plan) == 2
    assert driver.plan(second) is plan
    # Another interval (or other point objects, as after a reload) is planned for itself.
    assert driver.plan(slower) is not plan and {r.interval_s for r in driver.plan(slower)} == {30.0}
    assert driver.plan(other) == plan and driver.plan(other) is not plan
