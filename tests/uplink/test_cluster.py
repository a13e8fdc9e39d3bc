"""A clustered broker: three NATS servers (MQTT + JetStream, Debian's nats-server) on loopback ports.
The gateway's `brokers` list names all three nodes; while it drains a backlog, the node it is connected
to is killed (SIGKILL). The gateway fails over to another node, the platform consumer (connected to the
same node) too, and the platform ends with every row once after dedupe: no gap, duplicates counted.

Rows leave the gateway's outbox on the broker's PUBACK here (no end-to-end acks): what is checked is
the cluster's own QoS 1 guarantee across the failover, with nothing resent by the platform's acks.
"""

from __future__ import annotations

import asyncio
import json
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import jsonschema
import pytest

from citynerve.gateway.store import read_stats
from citynerve.hil.platform import PlatformConsumer
from citynerve.hil.platform.nats import NatsCluster, find_nats_server
from tests.uplink.conftest import validate_message, wait_for
from tests.uplink.test_faults import check_exactly_once

REPO = Path(__file__).resolve().parents[2]
GW = "gw-proc"
BACKLOG = 20_000  # readings queued while the uplink was down (plus an alarm every 500)


@pytest.fixture
def cluster(tmp_path: Path) -> Iterator[NatsCluster]:
    if find_nats_server() is None:
        pytest.fail("nats-server is not installed: `apt-get install nats-server` (.ci/run does this)")
    # ack_wait 5 s: what the killed node had delivered to the platform without its PUBACK is delivered
    # again 5 s later from the replicated stream (the default, 30 s, would only slow the test down)
    with NatsCluster(workdir=tmp_path / "nats", ack_wait_s=5) as c:
        yield c


def _spawn(outbox: Path, brokers: list[str], *args: str) -> subprocess.Popen[str]:
    cmd = [sys.executable, "-m", "tests.uplink.gateway_proc", "--outbox", str(outbox), "--gateway-id", GW]
    for url in brokers:
        cmd += ["--broker", url]
    return subprocess.Popen(
        [*cmd, "--protocol", "3.1.1", *args],
        cwd=REPO,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
    )


async def _rows(consumer: PlatformConsumer) -> int:
    lanes = await consumer.query(lambda s: [v for v in s.lanes() if v.gateway_id == GW])
    return sum(v.rows for v in lanes)


async def test_node_of_the_gateway_killed_mid_drain(cluster: NatsCluster, tmp_path: Path) -> None:
    path = tmp_path / "gw-outbox.sqlite"
    fill = _spawn(path, cluster.urls, "--generate", str(BACKLOG), "--rate", "1000000", "--offline")
    _, err = await asyncio.to_thread(fill.communicate, timeout=60)
    assert fill.returncode == 0, err[-2000:]
    last = read_stats(path).next_seq - 1

    errors: list[str] = []

    def check(kind: str, body: dict[str, Any]) -> None:
        try:
            validate_message(kind, body)
        except jsonschema.ValidationError as e:
            errors.append(f"{kind}: {e.message}")
            raise

    first, *others = cluster.nodes
    consumer = PlatformConsumer(
        host="127.0.0.1",
        port=first.mqtt_port,
        fallbacks=[("127.0.0.1", n.mqtt_port) for n in others],
        db_path=tmp_path / "platform.sqlite",
        consumer_id=f"platform-{tmp_path.name}",  # an id given: its session follows it to another node
        protocol="3.1.1",  # NATS speaks MQTT 3.1.1
        group=None,  # and has no shared subscriptions
        validate=check,
        e2e_ack=False,  # rows leave the gateway on the cluster's PUBACK: acks would go unheard
    )
    async with consumer:
        await consumer.wait_connected(timeout_s=30)
        # Replay paced at 100 messages/s of 50 readings: the drain takes ~4 s, the kill lands inside.
        proc = _spawn(path, cluster.urls, "--replay-rate", "100", "--stay")
        try:
            await wait_for(lambda: _has(consumer, 3000), timeout_s=60)
            node = await asyncio.to_thread(cluster.node_of_client, f"citynerve-{GW}")
            assert node is not None, "the gateway's connection is on no node"
            before = await _rows(consumer)
            t_kill = time.monotonic()
            await asyncio.to_thread(cluster.kill, node)
            await wait_for(lambda: _has(consumer, last), timeout_s=90)
            failover_s = time.monotonic() - t_kill
            assert before < last, "the drain was over before the kill"
            await wait_for(lambda: _on_a_live_node(cluster), timeout_s=30)  # the gateway moved
            await check_exactly_once(consumer, GW, last, f"cluster node {node} killed", arrival_order=False)
            print(f"[cluster] killed n{node} at {before}/{last} rows; rest arrived {failover_s:.1f} s later")
            # The gateway's outbox empties too: every row was PUBACKed by the cluster.
            async with asyncio.timeout(60):  # the finally's kill ends the reading thread
                line = await asyncio.to_thread(_line_with, proc, '"drained"')
            state = json.loads(line)["uplink"]
            assert state["reconnects"] >= 1
        finally:
            if proc.poll() is None:
                proc.send_signal(signal.SIGKILL)
                proc.wait()
    assert not errors, f"messages that break the contract: {errors[:5]}"
    assert sum(s.rows for s in read_stats(path).lanes) == 0


async def _has(consumer: PlatformConsumer, n: int) -> bool:
    return await _rows(consumer) >= n


async def _on_a_live_node(cluster: NatsCluster) -> bool:
    # node_of_client looks at running nodes only: the killed one is not among them
    return await asyncio.to_thread(cluster.node_of_client, f"citynerve-{GW}") is not None


def _line_with(proc: subprocess.Popen[str], needle: str) -> str:
    """The first line of the process's stdout containing `needle` (blocking; run in a thread)."""
    assert proc.stdout is not None and proc.stderr is not None
    for line in proc.stdout:
        if needle in line:
            return line
    raise AssertionError(f"the gateway ended without {needle}; stderr: {proc.stderr.read()[-2000:]}")


def test_the_bench_drains_do_not_share_an_epoch(tmp_path: Path) -> None:
    # hil/bench/cluster.py once copied one template outbox for each drain: one epoch for all, so the
    # third drain's consumer took the second drain's retained status (rows up to N settled in that
    # epoch) as its chain's start, acked rows it never got, and the e2e drain stalled at 85-90 %.
    from citynerve.hil.bench.cluster import fresh_backlog

    first = fresh_backlog(tmp_path / "run2.sqlite", 10)
    second = fresh_backlog(tmp_path / "run3.sqlite", 10)
    assert first and second and first != second
    stats = read_stats(tmp_path / "run3.sqlite")
    assert stats.epoch == second and stats.next_seq == 11
