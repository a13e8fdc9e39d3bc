"""Northbound benchmark (issue 16 D8): one outbox, three destinations, one broker stopped for a while.

    python -m citynerve.hil.bench.northbound [--readings N] [--outage-s S] [--json]

- `city`: JSON v1 to broker A, every lane (the reference platform consumer stores it);
- `scada`: Sparkplug B to broker B, every lane, with the SCADA host as its primary host application
  (the host decodes the payloads and counts the outbox seqs of the backlog's readings carried in the
  metric properties; the gateway publishes only while the host's STATE says online);
- `fire`: JSON v1 to broker A under the topic prefix `fire`, events of severity critical only.

A backlog of N readings is queued; alarms are written every 50 ms while it drains. Broker B is
stopped when the drain starts and started again `--outage-s` later: `city` and `fire` must not wait
for it. Prints per destination the rows delivered, gaps, duplicates and drain readings/s, the bare
aiomqtt loop publishing the same JSON messages to broker A (the baseline, same run) and the alarm
latency (p50/p99) twice: at a subscriber to the events topic only (the gateway's latency, measured
as hil/bench/uplink.py does) and at the city's consumer (which takes the telemetry too, so its
alarms wait behind the backlog it is still storing: the platform's latency, not the gateway's).

Also printed: the Sparkplug destination's baseline (a bare aiomqtt loop publishing the backlog
pre-encoded, device by device as the destination does, to broker B before the drain), what the
encoding costs per reading (`EdgeNode.encode`, and the protobuf package's least: one metric built
and serialized), the gateway loop's stalls, the collector's pauses, the slowest alarms (when they
were written, seconds from the drain's start) and the process's peak RSS (hil/bench/_northbound_probes.py).
The heap is settled (gateway/heap.py, as the runtime does once ready) before the drain unless
`--no-settle`; `--sparkplug-batch N` sets the Sparkplug destination's `batch_records`.

`--trace` adds where each alarm's time goes (the writer, the outbox's thread, the city uplink's read
and publish, the subscriber), the store thread's calls (wall and CPU time), the loop's ready queue
and the CPU of every process per window of the drain (hil/bench/_alarm_trace.py). Diagnoses:
`--switch-interval-ms` (the GIL's switch interval here), `--nice-platform N` (the SCADA host and the
city consumer at a lower priority; their work runs on other machines in the field).

The platform side (the city and fire consumers, the events subscriber, the SCADA host decoding the
Sparkplug payloads) runs in child processes, as a platform runs on other machines: in the gateway's
process it took the loop from the gateway being measured. The drains are timed from the uplinks'
own acknowledged positions, looked at every 10 ms. Nothing here is a test verdict:
docs/benchmarks.md.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import shutil
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from citynerve.gateway.api import Event, EventState, Severity, stop_task
from citynerve.gateway.heap import settle_heap
from citynerve.gateway.store import AsyncOutbox, Lane, OutboxWriter
from citynerve.gateway.uplink import Uplink, UpstreamConfig
from citynerve.gateway.uplink.config import SparkplugConfig
from citynerve.gateway.uplink.sparkplug import SparkplugUplink
from citynerve.hil.bench._alarm_trace import AlarmTrace, CpuShares
from citynerve.hil.bench._northbound_probes import (
    GcPauses,
    LoopStalls,
    bare_sparkplug_run,
    max_rss_mib,
    protobuf_floor_us,
    sparkplug_payloads,
)
from citynerve.hil.bench.uplink import GW, bare_run, make_backlog, payloads, pct
from citynerve.hil.platform.broker import MosquittoBroker
from citynerve.hil.platform.store import LaneView, PlatformStore


def destination(url: str, id_: str, **kw: Any) -> UpstreamConfig:
    base: dict[str, Any] = {
        "id": id_,
        "brokers": [url],
        "max_batch_readings": 200,
        "replay_max_msgs_per_s": 1e9,
        "replay_burst": 1_000_000,
        "backoff": {"initial_s": 0.1, "max_s": 0.5, "jitter": 0.2},
    }
    base.update(kw)
    return UpstreamConfig.model_validate(base)


SCADA_HOST = r"""
import asyncio, contextlib, json, sys, time
import aiomqtt
from citynerve.gateway.uplink.sparkplug import Payload
seqs = {}
STATE = "spBv1.0/STATE/scada-host"
def state(online):
    return json.dumps({"online": online, "timestamp": int(time.time() * 1000)})
async def consume(host, port):
    while True:
        with contextlib.suppress(aiomqtt.MqttError):
            will = aiomqtt.Will(STATE, state(False), qos=1, retain=True)
            async with aiomqtt.Client(host, port, identifier="scada-host", will=will) as client:
                await client.subscribe("spBv1.0/+/DDATA/#", qos=1)
                # The primary host application: the edge node publishes only while this says online
                # (Sparkplug 3.0), so nothing goes out before this subscription exists.
                await client.publish(STATE, state(True), qos=1, retain=True)
                print("ready", flush=True)
                async for m in client.messages:
                    seen = set()  # an alarm is several metrics with one seq
                    for metric in Payload.FromString(m.payload).metrics:
                        props = dict(zip(metric.properties.keys, metric.properties.values))
                        if "seq" in props:
                            seen.add(props["seq"].long_value)
                    for seq in seen:
                        seqs[seq] = seqs.get(seq, 0) + 1
        await asyncio.sleep(0.2)
async def main(host, port, n):
    task = asyncio.create_task(consume(host, int(port)))
    await asyncio.get_running_loop().run_in_executor(None, sys.stdin.read)  # until the parent closes it
    task.cancel()
    backlog = [c for s, c in seqs.items() if 1 <= s <= int(n)]  # the backlog's readings: seqs 1..n
    print(json.dumps({"rows": len(backlog), "duplicates": sum(c - 1 for c in backlog)}), flush=True)
asyncio.run(main(*sys.argv[1:]))
"""

EVENTS = r"""
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
                    print(json.dumps({"t0": t0, "ms": (now - t0) * 1000}), flush=True)
asyncio.run(main(*sys.argv[1:]))
"""

PLATFORM = r"""
import asyncio, json, sys, time
from citynerve.hil.platform import PlatformConsumer
def arrived(arrival):
    if arrival.kind != "events":
        return
    now = time.time()
    for rec in arrival.body.get("events", ()):
        t0 = rec.get("attrs", {}).get("t0") if isinstance(rec, dict) else None
        if isinstance(t0, float):
            print(json.dumps({"ms": (now - t0) * 1000}), flush=True)
async def main(host, port, work):
    async with (
        PlatformConsumer(
            host=host, port=int(port), db_path=f"{work}/city.db", e2e_ack=False, on_arrival=arrived
        ) as city,
        PlatformConsumer(
            host=host, port=int(port), db_path=f"{work}/fire.db", topic_prefix="fire", e2e_ack=False
        ) as fire,
    ):
        await city.wait_connected()
        await fire.wait_connected()
        print("ready", flush=True)
        await asyncio.get_running_loop().run_in_executor(None, sys.stdin.read)  # until the parent closes it
asyncio.run(main(*sys.argv[1:]))
"""


class Child:
    """A platform-side process: started, waited for ("ready"), its JSON lines collected. `on_eof`:
    it finishes (printing a summary) when its stdin is closed; else it is terminated."""

    def __init__(self, script: str, *args: str, on_eof: bool = True, nice: int = 0) -> None:
        # `nice`: the child lowers its own priority first (the platform's work that runs on other
        # machines in the field; never the events subscriber, which measures the latency).
        self.script = f"import os; os.nice({nice})\n{script}" if nice else script
        self.args, self.on_eof = args, on_eof
        self.lines: list[Any] = []
        self._proc: asyncio.subprocess.Process | None = None
        self._reader: asyncio.Task[None] | None = None

    async def start(self) -> None:
        self._proc = await asyncio.create_subprocess_exec(
            sys.executable,
            "-c",
            self.script,
            *self.args,
            stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE,
        )
        assert self._proc.stdout is not None
        async with asyncio.timeout(30):
            line = await self._proc.stdout.readline()
        if line.strip() != b"ready":
            raise RuntimeError(f"platform child did not start: {line!r}")
        self._reader = asyncio.create_task(self._read())

    async def _read(self) -> None:
        assert self._proc is not None and self._proc.stdout is not None
        async for line in self._proc.stdout:
            if line.strip() not in (b"", b"ready"):  # the SCADA host says ready again on reconnects
                self.lines.append(json.loads(line))

    async def stop(self) -> None:
        """Close its stdin (it finishes and prints its summary) or terminate it, wait for it."""
        if self._proc is None:
            return
        assert self._proc.stdin is not None
        self._proc.stdin.close()
        if not self.on_eof:
            self._proc.terminate()
        try:
            async with asyncio.timeout(30):
                await self._proc.wait()
        except TimeoutError:
            self._proc.kill()
            await self._proc.wait()
        if self._reader is not None:
            await self._reader


def pids(*brokers: MosquittoBroker, **children: Child) -> dict[str, int]:
    out = {f"broker_{'ab'[i]}": b.proc.pid for i, b in enumerate(brokers) if b.proc is not None and b.running}
    out.update({name: c._proc.pid for name, c in children.items() if c._proc is not None})
    return out


def lane(db: Path, name: str) -> LaneView | None:
    store = PlatformStore(db)
    try:
        return store.lane(GW, name)
    finally:
        store.close()


async def run(args: argparse.Namespace, work: Path) -> dict[str, Any]:
    a, b = MosquittoBroker(workdir=work / "a"), MosquittoBroker(workdir=work / "b")
    (work / "a").mkdir()
    (work / "b").mkdir()
    a.start()
    b.start()
    n = args.readings
    path = work / "outbox.sqlite"
    make_backlog(path, n)
    # Only the encoded messages are kept: the 300,000 rows `payloads` reads are freed before the
    # drain (held, they made every full collection of the gateway's heap walk them).
    msgs = payloads(path, n, argparse.Namespace(batch=200))[0]
    bare = await bare_run(a.host, a.port, msgs, n, 32)
    del msgs
    batch_records = args.sparkplug_batch or SparkplugConfig().batch_records
    spark_msgs, encode_us = sparkplug_payloads(path, batch_records, GW)
    bare_spark_s = await bare_sparkplug_run(b.host, b.port, spark_msgs, 32)
    del spark_msgs
    floor_us = protobuf_floor_us()
    sent_alarms = 0
    platform = Child(PLATFORM, a.host, str(a.port), str(work), nice=args.nice_platform)
    events = Child(EVENTS, a.host, str(a.port), f"citynerve/{GW}/events", on_eof=False)
    host = Child(SCADA_HOST, b.host, str(b.port), str(n), nice=args.nice_platform)
    done_at: dict[str, float] = {}
    sparkplug = {"primary_host_id": "scada-host", "batch_records": batch_records}
    try:
        for child in (platform, events, host):
            await child.start()
        async with AsyncOutbox(path, synchronous="normal", max_bytes=8 << 30) as ob:
            await ob.set_destinations({"city": tuple(Lane), "scada": tuple(Lane), "fire": (Lane.EVENT,)})
            writer = OutboxWriter(ob, max_latency_s=0.05)
            wtask = asyncio.create_task(writer.run())
            city = Uplink(destination(a.url, "city"), gateway_id=GW, outbox=ob, inventory=lambda: [])
            fire = Uplink(
                destination(
                    a.url,
                    "fire",
                    topic_prefix="fire",
                    filter={"lanes": ["event"], "min_severity": "critical"},
                ),
                gateway_id=GW,
                outbox=ob,
                inventory=lambda: [],
            )
            spark = SparkplugUplink(
                destination(b.url, "scada", encoding="sparkplug-b", sparkplug=sparkplug),
                gateway_id=GW,
                outbox=ob,
                devices={},
                state_dir=work,
            )
            b.stop()  # the SCADA centre's broker is down as the drain starts
            if not args.no_settle:
                settle_heap()  # as the runtime does once it is ready
            stalls = LoopStalls()
            trace, cpu = AlarmTrace(), CpuShares()
            if args.trace:
                trace.install(ob, city)
                cpu.start(lambda: pids(a, b, platform=platform, events=events, scada_host=host))
            probe = asyncio.create_task(stalls.run())
            gc_pauses = GcPauses().__enter__()
            t0, wall_t0 = time.perf_counter(), time.time()
            for u in (city, fire):
                await u.__aenter__()
            stask = asyncio.create_task(spark.run())
            restarted = False
            try:
                tick = 0
                while len(done_at) < 3 and time.perf_counter() - t0 < args.timeout_s:
                    if tick % 5 == 0:
                        severity = Severity.CRITICAL if tick % 10 == 0 else Severity.MAJOR
                        writer.put_event(
                            Event(
                                "smoke-1",
                                "smoke",
                                EventState.RAISED,
                                severity,
                                time.time(),
                                attrs={"t0": time.time()},
                            )
                        )
                        sent_alarms += 1
                    tick += 1
                    await asyncio.sleep(0.01)
                    now = time.perf_counter() - t0
                    if not restarted and now >= args.outage_s:
                        b.start()
                        restarted = True
                    # The uplinks' own acknowledged positions (no store query on the drain's thread).
                    acked = {
                        "city": city.snapshot().ack_seq.get("telemetry", 0),
                        "scada": spark.snapshot().ack_seq.get("telemetry", 0),
                        "fire": fire.snapshot().ack_seq.get("event", 0),
                    }
                    for dest, seq in acked.items():
                        if dest not in done_at and seq >= (1 if dest == "fire" else n):
                            done_at[dest] = now
            finally:
                gc_pauses.__exit__()
                cpu.stop()
                await stop_task(probe)
                await stop_task(stask)
                for u in (city, fire):
                    await u.__aexit__(None, None, None)
                wtask.cancel()
            await asyncio.sleep(1.0)  # the last alarms reach the platform
    finally:
        for child in (platform, events, host):
            await child.stop()
        a.close()
        b.close()
    c_lane, f_lane = lane(work / "city.db", "telemetry"), lane(work / "fire.db", "event")
    scada = host.lines[-1] if host.lines else {"rows": 0, "duplicates": None}
    at_city = [line["ms"] for line in platform.lines]
    at_broker = [line["ms"] for line in events.lines]
    slowest = sorted(events.lines, key=lambda line: -line["ms"])[:5]
    out = {
        "readings": n,
        "alarms_written": sent_alarms,
        "outage_s": args.outage_s,
        "bare_readings_per_s": round(bare),
        "destinations": {
            "city": {
                "encoding": "json-v1",
                "rows": c_lane.rows if c_lane else 0,
                "gaps": c_lane.gaps_seen if c_lane else None,
                "duplicates": c_lane.duplicates if c_lane else None,
                "drain_s": round(done_at.get("city", float("nan")), 3),
                "readings_per_s": round(n / done_at["city"]) if "city" in done_at else None,
            },
            "scada": {
                "encoding": "sparkplug-b",
                "rows": scada["rows"],
                "gaps": n - scada["rows"],
                "duplicates": scada["duplicates"],
                "drain_s": round(done_at.get("scada", float("nan")), 2),
                "readings_per_s_after_outage": (
                    round(n / (done_at["scada"] - args.outage_s)) if "scada" in done_at else None
                ),
            },
            "fire": {
                "encoding": "json-v1, events >= critical",
                "rows": f_lane.rows if f_lane else 0,
                "gaps": f_lane.gaps_seen if f_lane else None,
                "duplicates": f_lane.duplicates if f_lane else None,
            },
        },
        "alarm_latency_ms": {
            "p50": round(pct(at_broker, 50), 1) if at_broker else None,
            "p99": round(pct(at_broker, 99), 1) if at_broker else None,
            "n": len(at_broker),
        },
        "alarm_latency_at_city_consumer_ms": {
            "p50": round(pct(at_city, 50), 1) if at_city else None,
            "p99": round(pct(at_city, 99), 1) if at_city else None,
            "n": len(at_city),
        },
    }
    out["scada_bare"] = {
        "readings_per_s": round(n / bare_spark_s),
        "encode_us_per_reading": round(encode_us, 2),
        "protobuf_floor_us_per_reading": round(floor_us, 2),
        "encode_bound_readings_per_s": round(1e6 / encode_us),
        "batch_records": batch_records,
    }
    scada_rate = out["destinations"]["scada"]["readings_per_s_after_outage"]
    out["scada_ratio_to_bare"] = round(scada_rate * bare_spark_s / n, 3) if scada_rate else None
    out["slowest_alarms"] = [
        {"ms": round(line["ms"], 1), "at_s": round(line["t0"] - wall_t0, 2)} for line in slowest
    ]
    out["loop_stalls"] = stalls.summary()
    out["gc"] = gc_pauses.summary()
    out["max_rss_mib"] = max_rss_mib()
    if args.trace:
        # Windows: the city's drain, until broker B is back, the Sparkplug catch-up, the rest.
        scada_done = done_at.get("scada", args.outage_s + 1)
        edges = sorted({0.0, done_at.get("city", 1.0), args.outage_s, scada_done})
        edges.append(edges[-1] + 5.0)
        out["trace"] = {
            "alarm_phases_ms": trace.breakdown(events.lines, wall_t0),
            "loop": stalls.windows(edges),
            "cpu": cpu.windows(edges),
        }
    out["city_ratio_to_bare"] = (
        round(out["destinations"]["city"]["readings_per_s"] / bare, 3)
        if out["destinations"]["city"]["readings_per_s"]
        else None
    )
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--readings", type=int, default=300_000)
    ap.add_argument("--outage-s", type=float, default=5.0, help="how long broker B is down at the start")
    ap.add_argument("--timeout-s", type=float, default=300.0)
    ap.add_argument("--json", action="store_true")
    ap.add_argument("--sparkplug-batch", type=int, default=0, help="batch_records (default: the config's)")
    ap.add_argument("--no-settle", action="store_true", help="no settle_heap() (gc.freeze)")
    ap.add_argument(
        "--trace", action="store_true", help="where the alarms' time goes (hil/bench/_alarm_trace.py)"
    )
    ap.add_argument(
        "--switch-interval-ms",
        type=float,
        default=0.0,
        help="sys.setswitchinterval here (a diagnosis of the GIL's hand-over; default: Python's 5 ms)",
    )
    ap.add_argument(
        "--nice-platform",
        type=int,
        default=0,
        help="os.nice() in the SCADA host and city consumer children (elsewhere in the field)",
    )
    args = ap.parse_args(argv)
    if args.switch_interval_ms:
        sys.setswitchinterval(args.switch_interval_ms / 1000)
    work = Path(tempfile.mkdtemp(prefix="northbound-"))
    try:
        out = asyncio.run(run(args, work))
    finally:
        shutil.rmtree(work, ignore_errors=True)
    if args.json:
        print(json.dumps(out))
    else:
        print(json.dumps(out, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
