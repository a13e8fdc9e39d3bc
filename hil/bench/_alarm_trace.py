"""Where an alarm's time goes in hil/bench/northbound.py (`--trace`; bench only, no product code).

- `AlarmTrace`: per alarm (known by its `t0` attribute, the wall time it was written), the moments
  the outbox's thread finished its commit, the loop took the commit back (the writer's `append`
  returned), the city uplink started its publish task and got the PUBACK; with how many callbacks
  were ready on the loop and how many tasks existed at the commit. It wraps the bench's own
  outbox and uplink instances' methods, so the product code runs unchanged.
- `CpuShares`: a thread reading /proc every 0.25 s: the CPU each process of the run took (the
  gateway's loop thread and its other threads apart, the brokers, the platform children) and the
  machine's idle share, per window of the drain.
"""

from __future__ import annotations

import asyncio
import functools
import itertools
import json
import os
import threading
import time
from collections.abc import Callable, Sequence
from typing import Any

from citynerve.gateway.api import Event
from citynerve.gateway.store import AsyncOutbox
from citynerve.gateway.uplink import Uplink

TICK = os.sysconf("SC_CLK_TCK")


def _pct(xs: Sequence[float], q: float) -> float | None:
    s = sorted(xs)
    return round(s[min(len(s) - 1, round(q / 100 * (len(s) - 1)))], 1) if s else None


class AlarmTrace:
    """Install with `install(outbox, city)` after both are open and before the drain."""

    def __init__(self) -> None:
        self.stored: dict[float, float] = {}  # t0 -> wall time the thread finished the commit
        self.committed: dict[float, float] = {}  # t0 -> wall time the loop resumed the writer
        self.published: dict[float, float] = {}  # t0 -> the city uplink's publish task started
        self.acked: dict[float, float] = {}  # t0 -> its PUBACK
        self.ready_at_commit: dict[float, tuple[int, int]] = {}  # t0 -> (ready callbacks, tasks)
        self.writer_ran: dict[float, float] = {}  # t0 -> the writer task handed the commit over
        self.thread_began: dict[float, float] = {}  # t0 -> the store thread began the commit
        # Every call on the store's thread: (name, submitted, began, ended), wall times.
        self.store_ops: list[tuple[str, float, float, float]] = []
        self.store_cpu_s: list[float] = []  # the thread's CPU time in each of those calls
        # t0 -> the event-lane peeks that returned it: (submitted, began, ended, resumed on the loop)
        self.peeks: dict[float, list[tuple[float, float, float, float]]] = {}

    def install(self, outbox: AsyncOutbox, city: Uplink) -> None:
        sync = outbox._outbox  # the Outbox the worker thread owns
        assert sync is not None
        thread_append = sync.append
        loop_append = outbox.append
        loop = asyncio.get_running_loop()

        def on_thread(readings: Any, events: Sequence[Event], **kw: Any) -> Any:
            began = time.time()
            for t0 in _t0s(events):
                self.thread_began[t0] = began
            out = thread_append(readings, events, **kw)
            now = time.time()
            for t0 in _t0s(events):
                self.stored[t0] = now
            return out

        async def on_loop(readings: Any, events: Sequence[Event], **kw: Any) -> Any:
            ran = time.time()
            for t0 in _t0s(events):
                self.writer_ran[t0] = ran
            out = await loop_append(readings, events, **kw)
            now = time.time()
            ready = len(getattr(loop, "_ready", ()))
            tasks = len(asyncio.all_tasks())
            for t0 in _t0s(events):
                self.committed[t0] = now
                self.ready_at_commit[t0] = (ready, tasks)
            return out

        run = outbox._run
        ops, cpu_s = self.store_ops, self.store_cpu_s

        async def traced_run(fn: Callable[[], Any], **kw: Any) -> Any:
            submitted = time.time()
            name = getattr(getattr(fn, "func", fn), "__name__", "?")

            def timed() -> Any:
                began, cpu = time.time(), time.thread_time()
                try:
                    return fn()
                finally:
                    ops.append((name, submitted, began, time.time()))
                    cpu_s.append(time.thread_time() - cpu)

            out = await run(timed, **kw)
            last[id(asyncio.current_task())] = ops[-1]
            return out

        last: dict[int, tuple[str, float, float, float]] = {}
        peek = outbox.peek

        async def traced_peek(lane: Any, **kw: Any) -> Any:
            rows = await peek(lane, **kw)
            resumed = time.time()
            _, submitted, began, ended = last.pop(id(asyncio.current_task()))
            for row in rows:
                if isinstance(row.record, Event) and isinstance(t0 := row.record.attrs.get("t0"), float):
                    self.peeks.setdefault(t0, []).append((submitted, began, ended, resumed))
            return rows

        outbox.peek = traced_peek  # type: ignore[method-assign]

        outbox._run = traced_run  # type: ignore[method-assign]
        sync.append = on_thread  # type: ignore[method-assign]
        outbox.append = on_loop  # type: ignore[method-assign]
        publish: Callable[..., Any] = city._publish

        @functools.wraps(publish)
        async def traced(client: Any, window: Any, entry: Any) -> None:
            msg = entry.batch.message
            t0s: list[float] = []
            if msg is not None and msg.topic.endswith("/events"):
                t0s = [e["attrs"]["t0"] for e in json.loads(msg.payload)["events"] if "t0" in e["attrs"]]
                now = time.time()
                for t0 in t0s:
                    self.published[t0] = now
            await publish(client, window, entry)
            now = time.time()
            for t0 in t0s:
                self.acked[t0] = now

        city._publish = traced  # type: ignore[method-assign]

    def breakdown(
        self, received: Sequence[dict[str, float]], wall_t0: float, slowest: int = 8
    ) -> dict[str, Any]:
        """`received`: the events subscriber's lines ({"t0", "ms"}). Per phase p50 / p99 / max in
        ms, and the `slowest` alarms phase by phase (at_s: written, seconds from the drain's start)."""
        rows: list[dict[str, Any]] = []
        for line in received:
            t0 = line["t0"]
            if t0 not in self.acked:
                continue
            rx = t0 + line["ms"] / 1000
            stored, committed = self.stored[t0], self.committed[t0]
            ran, began = self.writer_ran[t0], self.thread_began[t0]
            ahead = [op for op in self.store_ops if op[2] < began and op[3] > ran]  # ran while it waited
            published, acked = self.published[t0], self.acked[t0]
            rows.append(
                {
                    "at_s": round(t0 - wall_t0, 2),
                    "total": round(line["ms"], 1),
                    "write_to_writer": round((ran - t0) * 1000, 1),
                    "writer_to_thread": round((began - ran) * 1000, 1),
                    "thread_commit": round((stored - began) * 1000, 1),
                    "store_ops_ahead": ",".join(f"{n}:{(e - b) * 1000:.0f}" for n, _, b, e in ahead),
                    "stored_to_loop": round((committed - stored) * 1000, 1),
                    "loop_to_publish": round((published - committed) * 1000, 1),
                    **self._peek_phases(t0, committed, published),
                    "publish_to_received": round((rx - published) * 1000, 1),
                    "publish_to_puback": round((acked - published) * 1000, 1),
                    "ready_callbacks_at_commit": self.ready_at_commit[t0][0],
                    "tasks_at_commit": self.ready_at_commit[t0][1],
                }
            )
        phases = (
            "total",
            "write_to_writer",
            "writer_to_thread",
            "thread_commit",
            "stored_to_loop",
            "loop_to_publish",
            "to_peek",
            "peek_waits",
            "peek_on_thread",
            "peek_to_publish",
            "publish_to_received",
            "publish_to_puback",
            "ready_callbacks_at_commit",
            "tasks_at_commit",
        )
        return {
            "n": len(rows),
            "phases": {
                p: {q: _pct([r[p] for r in rows], n) for q, n in (("p50", 50), ("p99", 99), ("max", 100))}
                for p in phases
            },
            "store_ops": self._op_summary(),
            "slowest": sorted(rows, key=lambda r: -r["total"])[:slowest],
        }

    def _peek_phases(self, t0: float, committed: float, published: float) -> dict[str, float]:
        """The city's peek of the alarm: the last event-lane peek that returned it before the
        publish (the fire and Sparkplug destinations peek the lane too)."""
        before = [p for p in self.peeks.get(t0, []) if p[3] <= published]
        if not before:
            return {"to_peek": 0.0, "peek_waits": 0.0, "peek_on_thread": 0.0, "peek_to_publish": 0.0}
        submitted, began, ended, _ = max(before, key=lambda p: p[3])
        return {
            "to_peek": round((submitted - committed) * 1000, 1),
            "peek_waits": round((began - submitted) * 1000, 1),
            "peek_on_thread": round((ended - began) * 1000, 1),
            "peek_to_publish": round((published - ended) * 1000, 1),
        }

    def _op_summary(self) -> dict[str, Any]:
        """Per kind of store call: wall time on the thread (p50, max, sum) and the thread's CPU time
        in it (sum, and in the calls over 10 ms: wall far above CPU on a machine with idle CPU is
        the thread waiting for the GIL)."""
        by: dict[str, list[tuple[float, float]]] = {}
        for (name, _, began, ended), cpu in zip(self.store_ops, self.store_cpu_s, strict=False):
            by.setdefault(name, []).append(((ended - began) * 1000, cpu * 1000))
        out = {}
        for n, v in by.items():
            walls = [w for w, _ in v]
            slow = [(w, c) for w, c in v if w > 10]
            out[n] = {
                "n": len(v),
                "p50": _pct(walls, 50),
                "max": _pct(walls, 100),
                "sum_ms": round(sum(walls)),
                "cpu_sum_ms": round(sum(c for _, c in v)),
                "over_10ms": len(slow),
                "over_10ms_wall_ms": round(sum(w for w, _ in slow)),
                "over_10ms_cpu_ms": round(sum(c for _, c in slow)),
            }
        return out


def _t0s(events: Sequence[Event]) -> list[float]:
    return [t0 for e in events if isinstance(t0 := e.attrs.get("t0"), float)]


def _ticks(path: str) -> int | None:
    try:
        with open(path, "rb") as f:
            fields = f.read().rsplit(b")", 1)[1].split()
    except (OSError, IndexError):
        return None
    return int(fields[11]) + int(fields[12])  # utime + stime (fields 14 and 15 of stat)


def _idle_total() -> tuple[int, int]:
    with open("/proc/stat", "rb") as f:
        cpu = [int(x) for x in f.readline().split()[1:]]
    return cpu[3] + cpu[4], sum(cpu)  # idle + iowait, all


class CpuShares:
    """`start(pids)` with a callable giving {name: pid} (brokers restart); `stop()`; `windows(edges)`
    gives each name's share of one core (%) and the machine's idle share (%) between the edges
    (seconds from `start`)."""

    def __init__(self, period_s: float = 0.25) -> None:
        self.period_s = period_s
        self.samples: list[tuple[float, dict[str, tuple[int, int]], tuple[int, int]]] = []
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._t0 = 0.0

    def start(self, pids: Callable[[], dict[str, int]]) -> None:
        self._t0 = time.perf_counter()
        gw = os.getpid()

        def sample() -> None:
            while not self._stop.is_set():
                ticks: dict[str, tuple[int, int]] = {}  # name -> (pid, ticks): broker B restarts
                for name, pid in pids().items():
                    if (t := _ticks(f"/proc/{pid}/stat")) is not None:
                        ticks[name] = (pid, t)
                main = _ticks(f"/proc/{gw}/task/{gw}/stat") or 0
                ticks["gateway_loop_thread"] = (gw, main)
                ticks["gateway_other_threads"] = (gw, (_ticks(f"/proc/{gw}/stat") or 0) - main)
                self.samples.append((time.perf_counter() - self._t0, ticks, _idle_total()))
                self._stop.wait(self.period_s)

        self._thread = threading.Thread(target=sample, name="cpu-shares", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join()

    def windows(self, edges: Sequence[float]) -> list[dict[str, Any]]:
        out = []
        for lo, hi in itertools.pairwise(edges):
            inside = [s for s in self.samples if lo <= s[0] <= hi]
            if len(inside) < 2:
                continue
            (t_a, _, (idle_a, all_a)), (t_b, b, (idle_b, all_b)) = inside[0], inside[-1]
            shares = {}
            for name, (pid, ticks) in b.items():
                first = next((s for s in inside if s[1].get(name, (0, 0))[0] == pid), None)
                if first is not None and first[0] < t_b:
                    shares[name] = round((ticks - first[1][name][1]) / TICK / (t_b - first[0]) * 100)
            idle = round((idle_b - idle_a) / max(1, all_b - all_a) * 100)
            out.append(
                {
                    "from_s": round(t_a, 1),
                    "to_s": round(t_b, 1),
                    "cpu_pct_of_one_core": shares,
                    "machine_idle_pct": idle,
                }
            )
        return out
