"""Benchmark: drain a backlog of queued readings from a real outbox file to a local Mosquitto.

Reports, medians over --runs (after --warmup rounds that are not counted, so that neither side
pays for first-run costs such as the allocator growing its heap):
- readings_per_s: the Uplink draining N readings from start until every one is acknowledged (the
  outbox holds them as compressed blocks in the neutral form; the store's thread reads and
  decodes them, the loop renders them as JSON v1 messages, publishes QoS 1 and deletes
  acknowledged blocks);
- bare_readings_per_s: a bare aiomqtt loop publishing the SAME payloads (pre-encoded, nothing read
  or deleted) with the same in-flight window, in the same run: `await client.publish(topic,
  payload, qos=1)`, aiomqtt's own default timeout and all (pure MQTT, as an aiomqtt user writes it);
  bare_no_timeout_readings_per_s: the same loop with `timeout=math.inf` (no timer per publish:
  faster, but a hung broker would hang it forever; the Uplink gets the same saving by watching
  its oldest in-flight message instead of timing every publish);
  bare_sequential_readings_per_s: the naive loop awaiting each PUBACK before the next publish;
  bare_encoding_readings_per_s: a loop that encodes the same readings from memory with the same
  JSON v1 encoder and publishes them (what a gateway without an outbox would do);
- ratio = readings_per_s / bare_readings_per_s (floor 0.15), also per run (paired: each uplink
  run against the bare run right after it) and against the no-timeout loop;
- alarm latency: alarms put into an OutboxWriter every 50 ms while the backlog drains, timed to
  their arrival at a subscriber in another process (p50, p99; floor p99 < 100 ms).

Floors (issue 16: a simple store and uplink beat drain speed): readings_per_s >= 300,000 and
ratio >= 0.15 and alarm p99 < 100 ms; the exit status is non-zero when one is missed.

    python -m citynerve.hil.bench.uplink [--readings 1000000] [--runs 5] [--warmup 1] [--json]

The replay rate limit is set out of the way (it exists to pace fleets, not to be measured here).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import math
import os
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import aiomqtt

from citynerve.gateway.api import Event, EventState, Reading, Severity
from citynerve.gateway.store import AsyncOutbox, Lane, Outbox, OutboxRow, OutboxWriter
from citynerve.gateway.uplink import JsonV1Encoding, Uplink, UpstreamConfig
from citynerve.hil.platform.broker import MosquittoBroker

GW = "gw-bench"
FLOOR_READINGS_PER_S = 300_000
FLOOR_RATIO = 0.15
FLOOR_ALARM_P99_MS = 100.0
DEVICES = 200
POINTS = ("flow", "total", "pressure", "temperature", "battery")

SUBSCRIBER = r"""
import asyncio, json, sys, time
import aiomqtt
async def main(host, port, topic):
    async with aiomqtt.Client(host, int(port)) as c:
        await c.subscribe(topic, qos=1)
        print("ready", flush=True)
        async for m in c.messages:
            now = time.time()
            for e in json.loads(m.payload)["events"]:
                t0 = e["attrs"].get("t0")
                if t0 is not None:
                    print(json.dumps({"seq": e["seq"], "ms": (now - t0) * 1000}), flush=True)
asyncio.run(main(*sys.argv[1:]))
"""


def make_backlog(path: Path, n: int) -> None:
    """N readings in one outbox file, appended in big transactions (executemany inside append)."""
    t0 = 1_790_000_000.0
    with Outbox(path, synchronous="normal", max_bytes=8 << 30) as ob:
        chunk = 100_000
        for start in range(0, n, chunk):
            ob.append(
                [
                    Reading(
                        f"wm-{(i // len(POINTS)) % DEVICES:03d}",
                        POINTS[i % len(POINTS)],
                        i * 0.5,
                        "m3",
                        t0 + i,
                    )
                    for i in range(start, min(n, start + chunk))
                ],
                [],
            )


def config(url: str, args: argparse.Namespace) -> UpstreamConfig:
    return UpstreamConfig.model_validate(
        {
            "brokers": [url],
            "max_batch_readings": args.batch,
            "max_inflight": args.inflight,
            "replay_max_msgs_per_s": 1e9,
            "replay_burst": 1_000_000,
        }
    )


async def uplink_run(
    url: str, path: Path, n: int, args: argparse.Namespace, sub_host: str, sub_port: int
) -> tuple[float, list[float]]:
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-c",
        SUBSCRIBER,
        sub_host,
        str(sub_port),
        f"citynerve/{GW}/events",
        stdout=asyncio.subprocess.PIPE,
    )
    assert proc.stdout is not None
    assert (await proc.stdout.readline()).strip() == b"ready"
    latencies: list[float] = []

    async def collect() -> None:
        assert proc.stdout is not None
        async for line in proc.stdout:
            latencies.append(json.loads(line)["ms"])

    collector = asyncio.create_task(collect())
    async with AsyncOutbox(path, synchronous="normal", max_bytes=8 << 30) as ob:
        writer = OutboxWriter(ob, max_latency_s=0.05)
        wtask = asyncio.create_task(writer.run())
        alarms = 0
        t_start = time.perf_counter()
        async with Uplink(config(url, args), gateway_id=GW, outbox=ob, inventory=lambda: []) as up:
            tick = 0
            while True:
                if tick % 5 == 0:  # an alarm every 50 ms
                    writer.put_event(
                        Event(
                            "smoke-1",
                            "smoke",
                            EventState.RAISED,
                            Severity.CRITICAL,
                            time.time(),
                            attrs={"t0": time.time()},
                        )
                    )
                    alarms += 1
                tick += 1
                await asyncio.sleep(0.01)
                # The uplink's own counters, not outbox stats: count(*) on the store's thread would
                # slow the drain being measured. Looked at every 10 ms: that is the timing's grain.
                acked = up.snapshot().acked_rows
                if acked["telemetry"] >= n and acked["event"] >= alarms:
                    break
            elapsed = time.perf_counter() - t_start
            # let the last alarms reach the subscriber
            deadline = time.monotonic() + 5
            while len(latencies) < alarms and time.monotonic() < deadline:  # noqa: ASYNC110
                await asyncio.sleep(0.05)
        wtask.cancel()
    proc.terminate()
    await proc.wait()
    collector.cancel()
    return n / elapsed, latencies


def payloads(path: Path, n: int, args: argparse.Namespace) -> tuple[list[bytes], list[OutboxRow]]:
    """The telemetry messages the uplink sends for this backlog (same encoder, same limits), and the rows."""
    enc = JsonV1Encoding(topic_prefix="citynerve", gateway_id=GW)
    out: list[bytes] = []
    every: list[OutboxRow] = []
    with Outbox(path, synchronous="normal", max_bytes=8 << 30) as ob:
        after = 0
        while True:
            rows = ob.peek(Lane.TELEMETRY, after_seq=after, limit=max(args.batch * 4, 1000))
            if not rows:
                break
            every.extend(rows)
            for b in enc.rows(Lane.TELEMETRY, rows, prev_seq=after, max_rows=args.batch, max_bytes=64 * 1024):
                assert b.message is not None
                out.append(b.message.payload)
            after = rows[-1].seq
    return out, every


async def bare_encoding_run(
    host: str, port: int, rows: list[OutboxRow], n: int, args: argparse.Namespace
) -> float:
    """Encode in-memory rows with the uplink's encoder and publish them: everything but the outbox."""
    enc = JsonV1Encoding(topic_prefix="citynerve", gateway_id=GW)
    topic = f"citynerve/{GW}/telemetry"
    chunk = max(args.batch * 10, 2000)
    async with aiomqtt.Client(
        host, port, protocol=aiomqtt.ProtocolVersion.V5, max_inflight_messages=args.inflight
    ) as c:
        c.pending_calls_threshold = 10**9
        sem = asyncio.Semaphore(args.inflight)

        async def one(p: bytes) -> None:
            try:
                await c.publish(topic, p, qos=1)
            finally:
                sem.release()

        t0 = time.perf_counter()
        async with asyncio.TaskGroup() as tg:
            for i in range(0, len(rows), chunk):
                part = rows[i : i + chunk]
                for b in enc.rows(
                    Lane.TELEMETRY, part, prev_seq=part[0].seq - 1, max_rows=args.batch, max_bytes=64 * 1024
                ):
                    assert b.message is not None
                    await sem.acquire()
                    tg.create_task(one(b.message.payload))
        return n / (time.perf_counter() - t0)


async def bare_run(
    host: str,
    port: int,
    msgs: list[bytes],
    n: int,
    window: int | None,
    *,
    publish_timeout: float | None = None,
) -> float:
    """`publish_timeout=None`: aiomqtt's default (a timer per publish), as a user writes it."""
    topic = f"citynerve/{GW}/telemetry"
    async with aiomqtt.Client(
        host, port, protocol=aiomqtt.ProtocolVersion.V5, max_inflight_messages=window or 20
    ) as c:
        c.pending_calls_threshold = 10**9
        t0 = time.perf_counter()
        if window is None:
            for p in msgs:
                await c.publish(topic, p, qos=1, timeout=publish_timeout)
        else:
            sem = asyncio.Semaphore(window)

            async def one(p: bytes) -> None:
                try:
                    await c.publish(topic, p, qos=1, timeout=publish_timeout)
                finally:
                    sem.release()

            async with asyncio.TaskGroup() as tg:
                for p in msgs:
                    await sem.acquire()
                    tg.create_task(one(p))
        return n / (time.perf_counter() - t0)


def remove_outbox(path: Path) -> None:
    for suffix in ("", "-wal", "-shm"):
        Path(str(path) + suffix).unlink(missing_ok=True)


def pct(xs: list[float], q: float) -> float:
    if not xs:
        return float("nan")
    s = sorted(xs)
    return s[min(len(s) - 1, round(q / 100 * (len(s) - 1)))]


async def main(args: argparse.Namespace) -> dict[str, Any]:
    tmp = Path(tempfile.mkdtemp(prefix="citynerve-bench-uplink-"))
    try:
        template = tmp / "backlog.sqlite"
        t0 = time.perf_counter()
        make_backlog(template, args.readings)
        gen_s = time.perf_counter() - t0
        msgs, rows = payloads(template, args.readings, args)
        broker = MosquittoBroker(workdir=tmp)
        broker.start()
        try:
            up_rates: list[float] = []
            bare_rates: list[float] = []
            free_rates: list[float] = []
            seq_rates: list[float] = []
            enc_rates: list[float] = []
            lat: list[float] = []
            for run in range(args.warmup + args.runs):
                counted = run >= args.warmup
                path = tmp / f"run{run}.sqlite"
                shutil.copy(template, path)
                rate, ls = await uplink_run(broker.url, path, args.readings, args, broker.host, broker.port)
                bare = await bare_run(broker.host, broker.port, msgs, args.readings, args.inflight)
                free = await bare_run(
                    broker.host, broker.port, msgs, args.readings, args.inflight, publish_timeout=math.inf
                )
                remove_outbox(path)
                if not counted:
                    if not args.json:
                        print(f"warm-up: uplink {rate:,.0f}/s, bare {bare:,.0f}/s (not counted)", flush=True)
                    continue
                up_rates.append(rate)
                lat.extend(ls)
                bare_rates.append(bare)
                free_rates.append(free)
                seq_rates.append(await bare_run(broker.host, broker.port, msgs, args.readings, None))
                enc_rates.append(await bare_encoding_run(broker.host, broker.port, rows, args.readings, args))
                if not args.json:
                    print(
                        f"run {len(up_rates)}: uplink {rate:,.0f}/s, bare {bare:,.0f}/s "
                        f"(ratio {rate / bare:.2f}), bare without timeout {free:,.0f}/s, "
                        f"bare sequential {seq_rates[-1]:,.0f}/s, bare+encoding {enc_rates[-1]:,.0f}/s, "
                        f"alarms {len(ls)}",
                        flush=True,
                    )
        finally:
            broker.close()
        up, bare, seq = (
            statistics.median(up_rates),
            statistics.median(bare_rates),
            statistics.median(seq_rates),
        )
        bare_enc = statistics.median(enc_rates)
        free = statistics.median(free_rates)
        paired = [u / b for u, b in zip(up_rates, bare_rates, strict=True)]
        return {
            "readings": args.readings,
            "runs": args.runs,
            "warmup_runs": args.warmup,
            "messages": len(msgs),
            "batch_readings": args.batch,
            "inflight": args.inflight,
            "backlog_generate_s": round(gen_s, 2),
            "readings_per_s": round(up),
            "bare_readings_per_s": round(bare),
            "bare_sequential_readings_per_s": round(seq),
            "ratio": round(up / bare, 3),
            "ratio_paired_median": round(statistics.median(paired), 3),
            "ratios_per_run": [round(x, 3) for x in paired],
            "bare_no_timeout_readings_per_s": round(free),
            "ratio_vs_no_timeout": round(up / free, 3),
            "ratio_vs_sequential": round(up / seq, 3),
            "bare_encoding_readings_per_s": round(bare_enc),
            "ratio_vs_encoding": round(up / bare_enc, 3),
            "alarms": len(lat),
            "alarm_p50_ms": round(pct(lat, 50), 1),
            "alarm_p99_ms": round(pct(lat, 99), 1),
            "alarm_max_ms": round(max(lat), 1) if lat else None,
            "cpu_count": os.cpu_count(),
            "floors_met": up >= FLOOR_READINGS_PER_S
            and up / bare >= FLOOR_RATIO
            and pct(lat, 99) < FLOOR_ALARM_P99_MS,
        }
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def cli() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--readings", type=int, default=1_000_000)
    p.add_argument("--runs", type=int, default=5)
    p.add_argument("--warmup", type=int, default=1, help="rounds run first and not counted")
    p.add_argument("--batch", type=int, default=200, help="max readings per message (default of the config)")
    p.add_argument("--inflight", type=int, default=32, help="QoS 1 window (default of the config)")
    p.add_argument("--json", action="store_true", help="print one JSON object")
    args = p.parse_args()
    res = asyncio.run(main(args))
    if args.json:
        print(json.dumps(res))
    else:
        print(f"uplink          {res['readings_per_s']:>12,} readings/s")
        print(f"bare aiomqtt    {res['bare_readings_per_s']:>12,} readings/s (same window)")
        print(f"bare, no timeout{res['bare_no_timeout_readings_per_s']:>12,} readings/s")
        print(f"bare sequential {res['bare_sequential_readings_per_s']:>12,} readings/s")
        print(f"bare + encoding {res['bare_encoding_readings_per_s']:>12,} readings/s (no outbox)")
        print(
            f"ratio           {res['ratio']:>12} (floor {FLOOR_RATIO}); per run {res['ratios_per_run']}, "
            f"vs bare without timeout {res['ratio_vs_no_timeout']}"
        )
        print(f"ratio vs bare+encoding {res['ratio_vs_encoding']}")
        print(
            f"alarm latency   p50 {res['alarm_p50_ms']} ms, p99 {res['alarm_p99_ms']} ms "
            f"over {res['alarms']} alarms (floor p99 < {FLOOR_ALARM_P99_MS:g} ms)"
        )
        verdict = "met" if res["floors_met"] else "MISSED"
        print(f"floors          readings/s >= {FLOOR_READINGS_PER_S:,}, ratio, alarm p99: {verdict}")
    ok = res["floors_met"]
    sys.exit(0 if ok else 1)


if __name__ == "__main__":
    cli()
