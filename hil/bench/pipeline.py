"""Pipeline benchmark: readings/s from driver output to a durable outbox commit.

Measured: SampleBatches as a bus owner hands them over (1,000 devices x 10 points per round,
values moving beyond the deadband so every reading IS reported) -> Pipeline (normalize, rules hook,
report by exception) -> OutboxWriter -> AsyncOutbox, until the last commit has returned (durable
with the chosen `synchronous`).
Baseline, same run: a bare sqlite3 `executemany` of the same rows (already built as tuples) into
the same kind of file (same table, WAL, same synchronous, same rows per commit).

    python -m citynerve.hil.bench.pipeline [--runs 5] [--rounds 10] [--json]

By default the process is pinned to one CPU, so the figure is "on one core" (the event loop and
the outbox thread share it). The machine may be shared and noisy: compare the ratio.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import sqlite3
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from citynerve.gateway.api import DeviceConfig, Location, PointConfig, Sample, SampleBatch
from citynerve.gateway.pipeline import Pipeline
from citynerve.gateway.store import AsyncOutbox, OutboxWriter

POINTS = (
    "flow",
    "total",
    "pressure",
    "temp",
    "voltage_a",
    "voltage_b",
    "voltage_c",
    "current",
    "power",
    "pf",
)


def make_devices(n_devices: int) -> dict[str, DeviceConfig]:
    points = {
        p: PointConfig(name=p, unit="u", scale=0.1, offset=1.0, deadband=0.5, max_interval_s=900)
        for p in POINTS
    }
    return {
        f"dev-{i:04d}": DeviceConfig(
            id=f"dev-{i:04d}",
            bus=f"bus-{i % 8}",
            profile="bench",
            address=i % 247 + 1,
            location=Location(address_code="320508001"),
            points=points,
        )
        for i in range(n_devices)
    }


def make_rounds(devices: dict[str, DeviceConfig], rounds: int, t0: float) -> list[list[SampleBatch]]:
    """Each round: one batch per device; every raw value moves by 10 (1.0 after scaling > 0.5 deadband)."""
    out = []
    for r in range(rounds):
        ts = t0 + r * 10.0
        out.append(
            [
                SampleBatch(dev_id, ts, tuple(Sample(p, 1000 + r * 10 + k) for k, p in enumerate(POINTS)))
                for dev_id in devices
            ]
        )
    return out


async def run_pipeline(
    db: Path,
    devices: dict[str, DeviceConfig],
    rounds: list[list[SampleBatch]],
    synchronous: str,
    max_rows: int,
) -> tuple[float, int]:
    async with AsyncOutbox(db, synchronous=synchronous) as outbox:  # type: ignore[arg-type]
        writer = OutboxWriter(outbox, max_latency_s=0.2, max_rows=max_rows, max_backlog=10 * max_rows * 10)
        pipeline = Pipeline(devices, writer)
        task = asyncio.create_task(writer.run(), name="outbox.writer")
        start = time.perf_counter()
        for batches in rounds:
            for batch in batches:
                pipeline.submit(batch)
            await asyncio.sleep(0)  # a poll cycle ends: the writer gets its turn, as with real buses
        await writer.flush()
        elapsed = time.perf_counter() - start
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
        c = writer.counters()
        if c.dropped_readings or pipeline.suppressed or c.committed_readings != pipeline.reported:
            raise RuntimeError(f"benchmark invalid: {c} {pipeline.counters()}")
        return elapsed, c.committed_readings


def bare_rows(devices: dict[str, DeviceConfig], rounds: int, t0: float) -> list[tuple[Any, ...]]:
    series = {(d, p): i + 1 for i, (d, p) in enumerate((d, p) for d in devices for p in POINTS)}
    rows: list[tuple[Any, ...]] = []
    seq = 1
    for r in range(rounds):
        ts = t0 + r * 10.0
        for d in devices:
            for k, p in enumerate(POINTS):
                rows.append((seq, ts, series[(d, p)], 0, (1000 + r * 10 + k) * 0.1 + 1.0))
                seq += 1
    return rows


def run_bare(db: Path, rows: list[tuple[Any, ...]], synchronous: str, max_rows: int) -> float:
    conn = sqlite3.connect(db, isolation_level=None)
    conn.execute("PRAGMA journal_mode = WAL")
    conn.execute(f"PRAGMA synchronous = {synchronous.upper()}")
    conn.execute(
        "CREATE TABLE readings (seq INTEGER PRIMARY KEY, ts REAL NOT NULL, series INTEGER NOT NULL, "
        "kind INTEGER NOT NULL, value)"
    )
    start = time.perf_counter()
    for i in range(0, len(rows), max_rows):
        conn.execute("BEGIN IMMEDIATE")
        conn.executemany("INSERT INTO readings VALUES (?, ?, ?, ?, ?)", rows[i : i + max_rows])
        conn.execute("COMMIT")
    elapsed = time.perf_counter() - start
    conn.close()
    return elapsed


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--runs", type=int, default=5, help="runs of each (median reported), >= 5")
    ap.add_argument("--devices", type=int, default=1000)
    ap.add_argument("--rounds", type=int, default=10, help="poll rounds per run (devices x 10 points each)")
    ap.add_argument("--synchronous", choices=["full", "normal"], default="full")
    ap.add_argument("--max-rows", type=int, default=5000, help="readings per commit (writer and baseline)")
    ap.add_argument("--no-pin", action="store_true", help="do not pin the process to one CPU")
    ap.add_argument("--dir", default=None, help="folder for the files (default: a temp dir)")
    ap.add_argument("--json", action="store_true", help="print one JSON object")
    args = ap.parse_args(argv)
    if not args.no_pin and hasattr(os, "sched_setaffinity"):
        os.sched_setaffinity(0, {min(os.sched_getaffinity(0))})
    devices = make_devices(args.devices)
    t0 = time.time()
    rounds = make_rounds(devices, args.rounds, t0)
    rows = bare_rows(devices, args.rounds, t0)
    pipe_rates, bare_rates = [], []
    with tempfile.TemporaryDirectory(dir=args.dir) as tmp:
        for i in range(max(5, args.runs)):
            # Interleaved, so that noise from other users of the machine hits both alike.
            elapsed, n = asyncio.run(
                run_pipeline(Path(tmp, f"pipe{i}.db"), devices, rounds, args.synchronous, args.max_rows)
            )
            pipe_rates.append(n / elapsed)
            bare_rates.append(
                len(rows) / run_bare(Path(tmp, f"bare{i}.db"), rows, args.synchronous, args.max_rows)
            )
            for f in Path(tmp).iterdir():
                f.unlink()
    readings_per_s = statistics.median(pipe_rates)
    sqlite_rows_per_s = statistics.median(bare_rates)
    ratio = readings_per_s / sqlite_rows_per_s
    if args.json:
        print(
            json.dumps(
                {
                    "readings_per_s": round(readings_per_s),
                    "sqlite_rows_per_s": round(sqlite_rows_per_s),
                    "ratio": round(ratio, 3),
                }
            )
        )
    else:
        pinned = "1 CPU" if not args.no_pin else "unpinned"
        print(
            f"pipeline -> outbox : {readings_per_s:>10,.0f} readings/s  (median of {len(pipe_rates)}, "
            f"{len(rows):,} readings/run, synchronous={args.synchronous}, {pinned})"
        )
        print(f"bare executemany   : {sqlite_rows_per_s:>10,.0f} rows/s")
        print(f"ratio              : {ratio:.3f}")
        print(f"floor 50,000/s     : {'PASS' if readings_per_s >= 50_000 else 'FAIL'}")
    return 0 if readings_per_s >= 50_000 else 1


if __name__ == "__main__":
    sys.exit(main())
