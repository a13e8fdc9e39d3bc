"""What hil/bench/northbound.py measures besides the drains: where the alarm latency goes.

- `LoopStalls`: how late a 5 ms sleep wakes on the gateway's loop (a stall delays every alarm);
- `GcPauses`: the cyclic collector's pauses in the gateway's process, per generation;
- `sparkplug_payloads`: the backlog encoded as the Sparkplug destination encodes it (one
  `EdgeNode`, the same batches, device by device), timed: the protobuf encoding cost per reading,
  which bounds the destination's rate on one core whatever the uplink around it does;
- `protobuf_floor_us`: the least a reading costs in the protobuf package: one metric (alias,
  datatype, timestamp, double value, the epoch and seq properties) added to a payload and
  serialized, no edge node logic at all;
- `bare_sparkplug_run`: a bare aiomqtt loop publishing those pre-encoded payloads (QoS 1, the
  same in-flight window) to the Sparkplug broker: the Sparkplug destination's baseline.
"""

from __future__ import annotations

import asyncio
import gc
import itertools
import resource
import time
from pathlib import Path
from typing import Any

import aiomqtt

from citynerve.gateway.store import Outbox
from citynerve.gateway.uplink.sparkplug import EdgeNode, Payload
from citynerve.gateway.uplink.sparkplug._node import StoredRecord
from citynerve.gateway.uplink.sparkplug._session import by_device


def _pct(xs: list[float], q: float) -> float:
    s = sorted(xs)
    return s[min(len(s) - 1, round(q / 100 * (len(s) - 1)))] if s else float("nan")


class LoopStalls:
    """Run `run()` as a task on the loop being measured; `summary()` after."""

    def __init__(self, period_s: float = 0.005) -> None:
        self.period_s = period_s
        self.lags_ms: list[float] = []
        self.series: list[tuple[float, float, int]] = []  # (s from start, lag ms, ready callbacks)

    async def run(self) -> None:
        loop = asyncio.get_running_loop()
        start = loop.time()
        while True:
            t = loop.time()
            await asyncio.sleep(self.period_s)
            lag = (loop.time() - t - self.period_s) * 1000
            self.lags_ms.append(lag)
            self.series.append((t - start, lag, len(getattr(loop, "_ready", ()))))

    def windows(self, edges: list[float]) -> list[dict[str, Any]]:
        """Per window of the run (seconds from its start): the longest stall and the most
        callbacks found ready on the loop at once (asyncio's `_ready` queue, sampled every period)."""
        out = []
        for lo, hi in itertools.pairwise(edges):
            inside = [(lag, ready) for t, lag, ready in self.series if lo <= t < hi]
            if inside:
                lags = [lag for lag, _ in inside]
                out.append(
                    {
                        "from_s": round(lo, 1),
                        "to_s": round(hi, 1),
                        "stall_p99_ms": round(_pct(lags, 99), 1),
                        "stall_max_ms": round(max(lags), 1),
                        "ready_p50": round(_pct([r for _, r in inside], 50)),
                        "ready_max": max(r for _, r in inside),
                    }
                )
        return out

    def summary(self) -> dict[str, Any]:
        return {
            "p99_ms": round(_pct(self.lags_ms, 99), 1),
            "max_ms": round(max(self.lags_ms, default=0.0), 1),
            "over_50ms": sum(1 for x in self.lags_ms if x > 50),
        }


class GcPauses:
    """The collector's pauses while installed (a context manager)."""

    def __init__(self) -> None:
        self.pauses: list[tuple[int, float]] = []  # (generation, ms)
        self._t = 0.0

    def _callback(self, phase: str, info: dict[str, Any]) -> None:
        if phase == "start":
            self._t = time.perf_counter()
        else:
            self.pauses.append((int(info["generation"]), (time.perf_counter() - self._t) * 1000))

    def __enter__(self) -> GcPauses:
        gc.callbacks.append(self._callback)
        return self

    def __exit__(self, *exc: object) -> None:
        gc.callbacks.remove(self._callback)

    def summary(self) -> dict[str, Any]:
        gen2 = [ms for g, ms in self.pauses if g == 2]
        return {
            "collections": len(self.pauses),
            "max_ms": round(max((ms for _, ms in self.pauses), default=0.0), 1),
            "gen2": len(gen2),
            "gen2_max_ms": round(max(gen2, default=0.0), 1),
            "frozen_objects": gc.get_freeze_count(),
        }


def max_rss_mib() -> float:
    """The gateway process's peak resident set (Linux reports KiB)."""
    return round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)


def sparkplug_payloads(
    path: Path, batch_records: int, gateway_id: str
) -> tuple[list[tuple[str, bytes]], float]:
    """The backlog's telemetry as Sparkplug messages (topic, payload), and the encoding's cost in
    microseconds per reading (`EdgeNode.encode` only: the outbox read is not counted)."""
    node = EdgeNode(group_id="citynerve", edge_node_id=gateway_id)
    node.start_session()
    now_ms = round(time.time() * 1000)
    out = [(m.topic, m.payload) for m in node.birth(now_ms)]
    encode_s = 0.0
    readings = 0
    with Outbox(path, synchronous="normal", max_bytes=8 << 30) as ob:
        after = 0
        while blocks := ob.peek_telemetry_blocks(after_seq=after, max_readings=2000):
            after = blocks[-1].last_seq
            records = [StoredRecord(ob.epoch, seq, r, True) for b in blocks for seq, r in b.readings()]
            readings += len(records)
            for i in range(0, len(records), batch_records):
                t = time.perf_counter()
                messages = [
                    m for part in by_device(records[i : i + batch_records]) for m in node.encode(part, now_ms)
                ]
                encode_s += time.perf_counter() - t
                out += [(m.topic, m.payload) for m in messages]
    return out, encode_s / max(1, readings) * 1e6


def protobuf_floor_us(n: int = 20_000) -> float:
    """Microseconds per reading, median of 5 payloads of `n` metrics each."""
    runs = []
    for _ in range(5):
        t = time.perf_counter()
        payload = Payload(timestamp=1, seq=0)
        add = payload.metrics.add
        for i in range(n):
            metric = add(alias=i % 1000, datatype=10, timestamp=1_790_000_000_000 + i, double_value=i * 0.5)
            props = metric.properties
            props.keys.extend(("epoch", "seq"))
            props.values.add(type=12, string_value="0123456789abcdef")
            props.values.add(type=8, long_value=i)
        payload.SerializeToString()
        runs.append((time.perf_counter() - t) / n * 1e6)
    return sorted(runs)[len(runs) // 2]


async def bare_sparkplug_run(host: str, port: int, msgs: list[tuple[str, bytes]], window: int) -> float:
    """Seconds to publish `msgs` QoS 1 with `window` in flight (no timer per publish)."""
    async with aiomqtt.Client(host, port, max_inflight_messages=window) as c:
        c.pending_calls_threshold = 10**9
        sem = asyncio.Semaphore(window)

        async def one(topic: str, payload: bytes) -> None:
            try:
                await c.publish(topic, payload, qos=1, timeout=float("inf"))
            finally:
                sem.release()

        t0 = time.perf_counter()
        async with asyncio.TaskGroup() as tg:
            for topic, payload in msgs:
                await sem.acquire()
                tg.create_task(one(topic, payload))
        return time.perf_counter() - t0
