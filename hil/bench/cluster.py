"""Benchmark: drain a backlog through a three-node NATS cluster (MQTT + JetStream) while the node the
gateway is connected to is killed, against the same drain through a single Mosquitto in the same run.

For each broker kind: the Uplink drains N queued readings from a real outbox file (rows leave on the
broker's PUBACK), the reference platform consumer (same process, SQLite store) receives them. Through
the cluster, the gateway's node is SIGKILLed once the gateway has published `--kill-at` of the
readings; the gateway and the consumer fail over to the other nodes. Printed per kind:

- rows: distinct readings at the platform (must be N), gaps: lanes with a hole left (must be 0),
  duplicates: rows received again (the price of at-least-once across a failover);
- readings_per_s: N / (start of the drain until the platform holds every reading);
- failover_s (cluster): from the last PUBACK (with --e2e: platform ack) before the kill to the first
  one from another node: the longest pause in the uplink's acked rows from the kill on (its own
  counters, polled every 10 ms: that is the timing's grain); platform_failover_s: the same for the
  rows arriving at the platform (polled every 100 ms), whose consumer fails over too;
- ratio: the cluster's readings_per_s over Mosquitto's; the same drain through the cluster with no
  node killed (`cluster_no_kill`, same cluster, before the kill) separates the failover's cost from
  the cost of a replicated PUBACK.

    python -m citynerve.hil.bench.cluster [--readings 100000] [--kill-at 0.3] [--e2e] [--json]

`--e2e`: rows leave the gateway on the platform's signed end-to-end acks instead of the PUBACK (the
acks go back through the same broker or cluster).

Both sides use MQTT 3.1.1 (NATS speaks no MQTT 5) and no shared subscription (NATS has none).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import secrets
import shutil
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from citynerve.gateway.store import AsyncOutbox, Outbox
from citynerve.gateway.uplink import Uplink, UpstreamConfig
from citynerve.hil.bench.uplink import GW, make_backlog, remove_outbox
from citynerve.hil.platform import CommandSigner, MosquittoBroker, PlatformConsumer
from citynerve.hil.platform.nats import NatsCluster


def config(urls: list[str], args: argparse.Namespace) -> UpstreamConfig:
    e2e = {"e2e_ack": True, "commands": {"hmac_key_file": str(args.key_file)}} if args.e2e else {}
    return UpstreamConfig.model_validate(
        {
            **e2e,
            "brokers": urls,
            "protocol": "3.1.1",
            "max_batch_readings": args.batch,
            "max_inflight": args.inflight,
            "replay_max_msgs_per_s": 1e9,  # paces fleets; out of the way here
            "replay_burst": 1_000_000,
            "connect_timeout_s": 5.0,
            "backoff": {"initial_s": 0.2, "max_s": 1.0, "jitter": 0.2},
        }
    )


async def drain(
    urls: list[str],
    endpoints: list[tuple[str, int]],
    path: Path,
    db: Path,
    args: argparse.Namespace,
    cluster: NatsCluster | None,
) -> dict[str, Any]:
    """One drain of the backlog at `path`; with `cluster`, kill the gateway's node on the way."""
    n = args.readings
    host, port = endpoints[0]
    consumer = PlatformConsumer(
        host=host,
        port=port,
        fallbacks=endpoints[1:],
        db_path=db,
        consumer_id=f"platform-{secrets.token_hex(4)}",  # given: its session follows it to another node
        protocol="3.1.1",
        group=None,
        e2e_ack=args.e2e,
        ack_signer=CommandSigner(hmac_key=args.key) if args.e2e else None,
    )
    acks: list[float] = []  # monotonic times at which the uplink's acked rows advanced
    arrivals: list[float] = []  # monotonic times at which the platform's row count advanced
    killed_at: float | None = None
    async with consumer:
        await consumer.wait_connected(timeout_s=60)
        async with AsyncOutbox(path, synchronous="normal", max_bytes=8 << 30) as ob:
            t0 = time.monotonic()
            async with Uplink(config(urls, args), gateway_id=GW, outbox=ob, inventory=lambda: []) as up:
                last_acked = 0
                rows = 0
                tick = 0
                deadline = t0 + args.timeout
                while rows < n:
                    await asyncio.sleep(0.01)
                    tick += 1
                    now = time.monotonic()
                    snap = up.snapshot()
                    acked = snap.acked_rows["telemetry"]
                    if acked != last_acked:
                        acks.append(now)
                        last_acked = acked
                    sent = snap.published_rows["telemetry"]
                    if cluster is not None and killed_at is None and sent >= args.kill_at * n:
                        node = await asyncio.to_thread(cluster.node_of_client, f"citynerve-{GW}")
                        if node is None:
                            raise RuntimeError("the gateway's connection is on no node of the cluster")
                        await asyncio.to_thread(cluster.kill, node)
                        killed_at = time.monotonic()
                    if tick % 10 == 0:  # the platform's count every 100 ms: its store has work to do
                        lanes = await consumer.query(lambda s: [v for v in s.lanes() if v.gateway_id == GW])
                        now_rows = sum(v.rows for v in lanes if v.lane == "telemetry")
                        if now_rows != rows:
                            arrivals.append(time.monotonic())
                            rows = now_rows
                    if now > deadline:
                        raise TimeoutError(f"{rows} of {n} readings at the platform after {args.timeout} s")
                elapsed = time.monotonic() - t0
                reconnects = up.snapshot().reconnects
        lanes = await consumer.query(lambda s: [v for v in s.lanes() if v.gateway_id == GW])
    out: dict[str, Any] = {
        "rows": sum(v.rows for v in lanes if v.lane == "telemetry"),
        "gaps": sum(1 for v in lanes if v.open_gap is not None),
        "gaps_seen": sum(v.gaps_seen for v in lanes),
        "duplicates": sum(v.duplicates for v in lanes),
        "readings_per_s": round(n / elapsed),
        "seconds": round(elapsed, 2),
        "reconnects": reconnects,
    }
    if killed_at is not None:
        out["killed_after_s"] = round(killed_at - t0, 2)
        out["failover_s"] = _longest_pause(acks, killed_at)
        out["platform_failover_s"] = _longest_pause(arrivals, killed_at)
    return out


def _longest_pause(times: list[float], killed_at: float) -> float | None:
    """The longest pause in `times` (when a count advanced) from the last advance before the kill on:
    the failover as the counter saw it (PUBACKs still in the socket at the kill count as before)."""
    start = max((i for i, t in enumerate(times) if t <= killed_at), default=None)
    if start is None or start + 1 >= len(times):
        return None
    return round(max(b - a for a, b in zip(times[start:], times[start + 1 :], strict=False)), 2)


def fresh_backlog(path: Path, n: int) -> str:
    """A new outbox file of `n` readings, with an epoch of its own (returned): the drains share
    one cluster, where the last one's retained status says its rows up to n are settled. A copy of
    one template file kept one epoch for every drain: the next drain's consumer took that stale
    status as where its chain starts (rows up to n settled), acked rows it never got, the gateway
    deleted them as it sent them, and the rows lost with the killed node were never sent again (the
    e2e stall at 85-90 %). A real outbox never goes back within an epoch (gateway/store/_epoch.py)."""
    make_backlog(path, n)
    with Outbox(path) as ob:
        return ob.epoch


async def main(args: argparse.Namespace) -> dict[str, Any]:
    tmp = Path(tempfile.mkdtemp(prefix="citynerve-bench-cluster-"))
    try:
        if args.e2e:  # the platform signs its acks with the gateway's command key
            args.key = secrets.token_bytes(32)
            args.key_file = tmp / "platform.key"
            args.key_file.write_text(args.key.hex())
            args.key_file.chmod(0o600)
        path = tmp / "run1.sqlite"
        fresh_backlog(path, args.readings)
        with MosquittoBroker(workdir=tmp) as broker:
            single = await drain(
                [broker.url], [(broker.host, broker.port)], path, tmp / "p1.sqlite", args, None
            )
        remove_outbox(path)

        with NatsCluster(workdir=tmp / "nats", ack_wait_s=args.ack_wait) as cluster:
            endpoints = [("127.0.0.1", node.mqtt_port) for node in cluster.nodes]
            path = tmp / "run2.sqlite"
            fresh_backlog(path, args.readings)
            steady = await drain(cluster.urls, endpoints, path, tmp / "p2.sqlite", args, None)
            remove_outbox(path)
            path = tmp / "run3.sqlite"
            fresh_backlog(path, args.readings)
            clustered = await drain(cluster.urls, endpoints, path, tmp / "p3.sqlite", args, cluster)
            remove_outbox(path)
        return {
            "readings": args.readings,
            "batch_readings": args.batch,
            "inflight": args.inflight,
            "kill_at": args.kill_at,
            "nats_ack_wait_s": args.ack_wait,
            "e2e_ack": args.e2e,
            "mosquitto": single,
            "cluster_no_kill": steady,
            "cluster": clustered,
            "ratio": round(clustered["readings_per_s"] / single["readings_per_s"], 3),
            "ratio_no_kill": round(steady["readings_per_s"] / single["readings_per_s"], 3),
            "cpu_count": os.cpu_count(),
        }
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def cli() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--readings", type=int, default=100_000)
    p.add_argument("--kill-at", type=float, default=0.3, help="share of readings published at the kill")
    p.add_argument("--batch", type=int, default=200, help="max readings per message (default of the config)")
    p.add_argument("--inflight", type=int, default=32, help="QoS 1 window (default of the config)")
    p.add_argument("--ack-wait", type=float, default=5.0, help="NATS mqtt.ack_wait (s): redelivery after it")
    p.add_argument("--timeout", type=float, default=300.0, help="give up on a drain after this long (s)")
    p.add_argument("--e2e", action="store_true", help="rows leave on the platform's signed acks")
    p.add_argument("--json", action="store_true", help="print one JSON object")
    args = p.parse_args()
    res = asyncio.run(main(args))
    if args.json:
        print(json.dumps(res))
    else:
        for kind in ("mosquitto", "cluster_no_kill", "cluster"):
            r = res[kind]
            extra = (
                f", failover {r['failover_s']} s (gateway), {r['platform_failover_s']} s (platform)"
                if kind == "cluster"
                else ""
            )
            print(
                f"{kind:<15} rows {r['rows']:,}, gaps {r['gaps']}, duplicates {r['duplicates']}, "
                f"{r['readings_per_s']:,} readings/s{extra}"
            )
        print(f"ratio (cluster with a node killed / single Mosquitto) {res['ratio']}")
        print(f"ratio (cluster, no kill / single Mosquitto) {res['ratio_no_kill']}")
    kinds = ("mosquitto", "cluster_no_kill", "cluster")
    ok = all(res[k]["rows"] == args.readings and res[k]["gaps"] == 0 for k in kinds)
    sys.exit(0 if ok else 1)


if __name__ == "__main__":
    cli()
