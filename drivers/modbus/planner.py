"""Read planner: merge a device's points into the fewest Modbus reads.

Rules (ARCHITECTURE: on a serial bus the number of transactions is the cost):
- one read never spans two tables or two poll intervals;
- a read is at most `max_registers` registers (`max_bits` coils/inputs) long;
- two neighbouring points share a read only if the unused addresses between them are at most
  `max_gap` (for coils/inputs `max_gap * 16` bits: the same bytes on the wire);
- a multi-register point is never split over two reads.

Among plans with the fewest reads the planner picks the one reading the fewest addresses.
Method: within one (table, interval) group, points sorted by start address are cut into
consecutive runs by dynamic programming (exact for that order, O(n^2)); a run is feasible when its
span fits and no hole in the union of its points exceeds the gap. tests/modbus/test_planner.py
compares the result with a brute force over every partition of the points.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class PointSpan:
    """What the planner needs to know about one point."""

    name: str
    table: str
    address: int
    count: int
    interval_s: float

    @property
    def end(self) -> int:
        return self.address + self.count


@dataclass(frozen=True, slots=True)
class PlannedRead:
    """One read: table, first address, how many, and the points it carries."""

    table: str
    address: int
    count: int
    interval_s: float
    points: tuple[PointSpan, ...]


@dataclass(frozen=True, slots=True)
class Limits:
    """Per-device request limits."""

    max_registers: int = 125
    max_bits: int = 2000
    max_gap: int = 10

    def size_for(self, table: str) -> int:
        return self.max_bits if table in ("coil", "discrete") else self.max_registers

    def gap_for(self, table: str) -> int:
        return self.max_gap * 16 if table in ("coil", "discrete") else self.max_gap


def run_feasible(points: Sequence[PointSpan], max_size: int, max_gap: int) -> bool:
    """Whether one read can carry exactly `points` (any order) within the limits."""
    ordered = sorted(points, key=lambda p: (p.address, p.end))
    start = ordered[0].address
    reach = ordered[0].end
    for p in ordered[1:]:
        if p.address - reach > max_gap:
            return False
        reach = max(reach, p.end)
    return reach - start <= max_size


def _plan_group(points: list[PointSpan], max_size: int, max_gap: int) -> list[list[PointSpan]]:
    points.sort(key=lambda p: (p.address, p.end, p.name))
    n = len(points)
    inf = (n + 1, 0)
    # best[j] = (reads, addresses read) to carry points[:j]; cut[j] = start of the last run.
    best: list[tuple[int, int]] = [(0, 0)] + [inf] * n
    cut = [0] * (n + 1)
    for i in range(n):
        if best[i] == inf:
            continue
        start = points[i].address
        reach = points[i].end
        for j in range(i, n):
            p = points[j]
            if j > i and p.address - reach > max_gap:
                break  # a hole no later point (starting further on) can fill
            reach = max(reach, p.end)
            if reach - start > max_size:
                break
            candidate = (best[i][0] + 1, best[i][1] + reach - start)
            if candidate <= best[j + 1]:  # on a tie keep the later cut: earlier reads fuller
                best[j + 1] = candidate
                cut[j + 1] = i
    if best[n] == inf:  # only if one point alone exceeds the limit: config validation prevents it
        raise ValueError(f"a point is longer than the request limit of {max_size}")
    runs: list[list[PointSpan]] = []
    j = n
    while j > 0:
        i = cut[j]
        runs.append(points[i:j])
        j = i
    runs.reverse()
    return runs


def plan_reads(points: Iterable[PointSpan], limits: Limits) -> list[PlannedRead]:
    """The fewest reads carrying every point, ordered by interval, table and address."""
    groups: dict[tuple[float, str], list[PointSpan]] = {}
    for p in points:
        groups.setdefault((p.interval_s, p.table), []).append(p)
    reads: list[PlannedRead] = []
    for (interval, table), members in sorted(groups.items()):
        for run in _plan_group(members, limits.size_for(table), limits.gap_for(table)):
            start = min(p.address for p in run)
            end = max(p.end for p in run)
            reads.append(PlannedRead(table, start, end - start, interval, tuple(run)))
    return reads
