"""Northbound benchmark (issue 16 D8): one outbox, three destinations, one broker stopped for a while.

    python -m citynerve.hil.bench.northbound [--readings N] [--outage-s S] [--json]

- `city`: JSON v1 to broker A, every lane (the reference platform consumer stores it);
- `scada`: Sparkplug B to broker B, every lane (a subscriber decodes the payloads and counts the
  outbox seqs of the backlog's readings carried in the metric properties);
- `fire`: JSON v1 to broker A under the topic prefix `fire`, events of severity critical only.

A backlog of N readings is queued; alarms are written every 50 ms while it drains. Broker B is
stopped when the drain starts and started again `--outage-s` later: `city` and `fire` must not wait
for it. Prints per destination the rows delivered, gaps, duplicates and drain readings/s, the bare
aiomqtt loop publishing the same JSON messages to broker A (the baseline, same run) and the alarm
latency at the city's consumer (p50/p99). Nothing here is a test verdict: docs/benchmarks.md.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import shutil
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import aiomqtt

from citynerve.gateway.api import Event, EventState, Severity, stop_task
from citynerve.gateway.store import AsyncOutbox, Lane, OutboxWriter, position_key
from citynerve.gateway.uplink import Uplink, UpstreamConfig
from citynerve.gateway.uplink.sparkplug import Payload, SparkplugUplink
from citynerve.hil.bench.uplink import GW, bare_run, make_backlog, payloads, pct
from citynerve.hil.platform import PlatformConsumer
from citynerve.hil.platform.broker import MosquittoBroker


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


class SparkplugHost:
    """Counts the outbox seqs of the readings a Sparkplug host receives (distinct and again)."""

    def __init__(self, broker: MosquittoBroker) -> None:
        self.broker = broker
        self.seqs: dict[int, int] = {}
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        self._task = asyncio.create_task(self._run())

    async def stop(self) -> None:
        if self._task is not None:
            await stop_task(self._task)

    async def _run(self) -> None:
        while True:
            with contextlib.suppress(aiomqtt.MqttError):
                async with aiomqtt.Client(
                    self.broker.host, self.broker.port, identifier="scada-host", clean_session=False
                ) as client:
                    await client.subscribe("spBv1.0/+/DDATA/#", qos=1)
                    async for m in client.messages:
                        assert isinstance(m.payload, bytes)
                        seen = set()  # an alarm is several metrics with one seq
                        for metric in Payload.FromString(m.payload).metrics:
                            props = dict(zip(metric.properties.keys, metric.properties.values, strict=True))
                            if "seq" in props:
                                seen.add(props["seq"].long_value)
                        for seq in seen:
                            self.seqs[seq] = self.seqs.get(seq, 0) + 1
            await asyncio.sleep(0.2)


async def position(ob: AsyncOutbox, dest: str, lane: Lane) -> int:
    raw = await ob.get(position_key(dest, lane))
    return int(raw) if raw else 0


async def run(args: argparse.Namespace, work: Path) -> dict[str, Any]:
    a, b = MosquittoBroker(workdir=work / "a"), MosquittoBroker(workdir=work / "b")
    (work / "a").mkdir()
    (work / "b").mkdir()
    a.start()
    b.start()
    n = args.readings
    path = work / "outbox.sqlite"
    make_backlog(path, n)
    msgs, _ = payloads(path, n, argparse.Namespace(batch=200))
    bare = await bare_run(a.host, a.port, msgs, n, 32)
    latencies: list[float] = []
    sent_alarms = 0

    def arrived(arrival: Any) -> None:
        if arrival.kind != "events":
            return
        for rec in arrival.body.get("events", ()):
            t0 = rec.get("attrs", {}).get("t0") if isinstance(rec, dict) else None
            if isinstance(t0, float):
                latencies.append((time.time() - t0) * 1000)

    host = SparkplugHost(b)
    host.start()
    done_at: dict[str, float] = {}
    try:
        async with (
            AsyncOutbox(path, synchronous="normal", max_bytes=8 << 30) as ob,
            PlatformConsumer(
                host=a.host, port=a.port, db_path=work / "city.db", e2e_ack=False, on_arrival=arrived
            ) as city,
            PlatformConsumer(
                host=a.host, port=a.port, db_path=work / "fire.db", topic_prefix="fire", e2e_ack=False
            ) as fire,
        ):
            await city.wait_connected()
            await fire.wait_connected()
            await ob.set_destinations({"city": tuple(Lane), "scada": tuple(Lane), "fire": (Lane.EVENT,)})
            writer = OutboxWriter(ob, max_latency_s=0.05)
            wtask = asyncio.create_task(writer.run())
            ups: list[Any] = [
                Uplink(destination(a.url, "city"), gateway_id=GW, outbox=ob, inventory=lambda: []),
                Uplink(
                    destination(
                        a.url,
                        "fire",
                        topic_prefix="fire",
                        filter={"lanes": ["event"], "min_severity": "critical"},
                    ),
                    gateway_id=GW,
                    outbox=ob,
                    inventory=lambda: [],
                ),
            ]
            spark = SparkplugUplink(
                destination(b.url, "scada", encoding="sparkplug-b"),
                gateway_id=GW,
                outbox=ob,
                devices={},
                state_dir=work,
            )
            b.stop()  # the SCADA centre's broker is down as the drain starts
            t0 = time.perf_counter()
            for u in ups:
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
                    for dest, lane in (
                        ("city", Lane.TELEMETRY),
                        ("scada", Lane.TELEMETRY),
                        ("fire", Lane.EVENT),
                    ):
                        if dest not in done_at and tick % 10 == 0:
                            target = n if lane is Lane.TELEMETRY else 1
                            if await position(ob, dest, lane) >= target:
                                done_at[dest] = now
            finally:
                await stop_task(stask)
                for u in ups:
                    await u.__aexit__(None, None, None)
                wtask.cancel()
            await asyncio.sleep(1.0)
            c_lane = await city.query(lambda s: s.lane(GW, "telemetry"))
            f_lane = await fire.query(lambda s: s.lane(GW, "event"))
            await asyncio.sleep(0)
    finally:
        await host.stop()
        a.close()
        b.close()
    distinct = len([s for s in host.seqs if 1 <= s <= n])  # the backlog's readings are seqs 1..n
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
                "drain_s": round(done_at.get("city", float("nan")), 2),
                "readings_per_s": round(n / done_at["city"]) if "city" in done_at else None,
            },
            "scada": {
                "encoding": "sparkplug-b",
                "rows": distinct,
                "gaps": n - len([s for s in host.seqs if 1 <= s <= n]),
                "duplicates": sum(c - 1 for s, c in host.seqs.items() if 1 <= s <= n),
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
            "p50": round(pct(latencies, 50), 1) if latencies else None,
            "p99": round(pct(latencies, 99), 1) if latencies else None,
            "n": len(latencies),
        },
    }
    out["city_ratio_to_bare"] = (
        round(out["destinations"]["city"]["readings_per_s"] / bare, 3)
        if out["destinations"]["city"]["readings_per_s"]
        else None
    )
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--readings", type=int, default=100_000)
    ap.add_argument("--outage-s", type=float, default=5.0, help="how long broker B is down at the start")
    ap.add_argument("--timeout-s", type=float, default=300.0)
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args(argv)
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
