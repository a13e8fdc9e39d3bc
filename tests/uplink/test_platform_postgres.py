"""The reference platform on PostgreSQL: two consumer processes' worth of consumers (each with its own
connection) share the rows through an MQTT shared subscription on a real Mosquitto, store into one
real PostgreSQL server (Debian's, started on a loopback port), ack end to end; every row is stored
exactly once and both consumers did part of the work."""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Iterator

import psycopg
import pytest

from citynerve.gateway.store import AsyncOutbox
from citynerve.gateway.uplink import Uplink
from citynerve.hil.platform import MosquittoBroker, PlatformConsumer
from citynerve.hil.platform.consumer import Arrival
from citynerve.hil.platform.pgstore import PgPlatformStore
from citynerve.hil.platform.postgres import PostgresServer
from tests.uplink.conftest import INVENTORY, PLATFORM_SIGNER, alarm, readings, upstream, wait_for

GW = "gw-pg"
pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def postgres() -> Iterator[PostgresServer]:
    with PostgresServer() as pg:
        yield pg


async def test_two_consumers_share_the_load_and_store_every_row_once(
    broker: MosquittoBroker, outbox: AsyncOutbox, postgres: PostgresServer
) -> None:
    n_readings, n_events = 3000, 20
    handled: Counter[str] = Counter()

    def counter(name: str) -> Callable[[Arrival], None]:
        def on_arrival(a: Arrival) -> None:
            if a.kind in ("telemetry", "events"):
                handled[name] += 1

        return on_arrival

    consumers = [
        PlatformConsumer(
            host=broker.host,
            port=broker.port,
            group="pg",
            consumer_id=f"platform-pg-{i}",
            ack_signer=PLATFORM_SIGNER,
            store=PgPlatformStore(postgres.dsn),
            on_arrival=counter(f"c{i}"),
        )
        for i in range(2)
    ]
    for c in consumers:
        await c.__aenter__()
    try:
        for c in consumers:
            await c.wait_connected()
        cfg = upstream(broker, e2e_ack=True, e2e_resend_after_s=2.0, max_batch_readings=25)
        async with Uplink(cfg, gateway_id=GW, outbox=outbox, inventory=lambda: INVENTORY):
            for i in range(n_events):  # live traffic: readings and alarms interleaved
                await outbox.append(readings(n_readings // n_events, start=i * 150), [alarm(i)])

            async def all_stored() -> bool:
                lanes = await consumers[0].query(
                    lambda s: {v.lane: v for v in s.lanes() if v.gateway_id == GW}
                )
                t, e = lanes.get("telemetry"), lanes.get("event")
                return bool(t and e and t.rows == n_readings and e.rows == n_events)

            await wait_for(all_stored, timeout_s=90)
            await wait_for(lambda: _outbox_empty(outbox), timeout_s=30)
    finally:
        for c in consumers:
            await c.__aexit__(None, None, None)
    with psycopg.connect(postgres.dsn) as conn:
        (rows, distinct) = conn.execute(
            "SELECT count(*), count(DISTINCT (epoch, seq)) FROM readings WHERE gateway_id=%s", (GW,)
        ).fetchone() or (0, 0)
        (events,) = conn.execute("SELECT count(*) FROM events WHERE gateway_id=%s", (GW,)).fetchone() or (0,)
        lanes = conn.execute(
            "SELECT lane, contiguous, rows, duplicates FROM lanes WHERE gateway_id=%s ORDER BY lane", (GW,)
        ).fetchall()
        (links,) = conn.execute("SELECT count(*) FROM links WHERE gateway_id=%s", (GW,)).fetchone() or (0,)
    assert rows == distinct == n_readings and events == n_events
    last = n_readings + n_events
    assert {lane: contig for lane, contig, _, _ in lanes} == {"event": last, "telemetry": last - 1}
    assert links == 0  # no open gap
    assert handled["c0"] > 0 and handled["c1"] > 0, handled  # the shared subscription split the rows
    print(f"messages handled per consumer: {dict(handled)}; duplicates {[d for *_, d in lanes]}")


async def _outbox_empty(outbox: AsyncOutbox) -> bool:
    return all(s.rows == 0 for s in (await outbox.stats()).lanes)
