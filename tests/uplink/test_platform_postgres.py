"""The reference platform on PostgreSQL as an integrator runs it: two consumer processes
(`python -m citynerve.hil.platform consume --pg DSN`) share the rows through an MQTT shared
subscription on a real Mosquitto, store into one real PostgreSQL server (Debian's, started on a
loopback port) and ack end to end; every row is stored exactly once and both processes handled
messages."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import aiomqtt
import psycopg
import pytest

from citynerve.gateway.store import AsyncOutbox
from citynerve.gateway.uplink import Uplink
from citynerve.hil.platform import MosquittoBroker
from citynerve.hil.platform.postgres import PostgresServer
from tests.uplink.conftest import INVENTORY, alarm, platform_key_file, readings, upstream, wait_for

GW = "gw-pg"
pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def postgres() -> Iterator[PostgresServer]:
    with PostgresServer() as pg:
        yield pg


def _consumer_process(broker: MosquittoBroker, dsn: str, name: str, out: Path) -> subprocess.Popen[bytes]:
    cmd = [
        *(sys.executable, "-m", "citynerve.hil.platform", "consume"),
        *("--broker", broker.url, "--pg", dsn, "--group", "pg", "--client-id", name),
        *("--hmac-key-file", str(platform_key_file())),
    ]
    env = {**os.environ, "COLUMNS": "400"}  # one arrival, one line
    with out.open("wb") as f:
        # SIGINT back to its default first: a suite started in the background by a non-interactive
        # shell (`cmd &`) ignores SIGINT, the consumers would inherit that and ignore Ctrl-C.
        return subprocess.Popen(cmd, stdout=f, stderr=subprocess.STDOUT, env=env, preexec_fn=_default_sigint)


def _default_sigint() -> None:
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def _lines(out: Path, start: str) -> int:
    return sum(line.startswith(start) for line in out.read_text(errors="replace").splitlines())


async def test_two_consumer_processes_share_the_load_and_store_every_row_once(
    broker: MosquittoBroker, outbox: AsyncOutbox, postgres: PostgresServer, tmp_path: Path
) -> None:
    n_readings, n_events = 3000, 20
    outs = [tmp_path / f"consumer-{i}.out" for i in range(2)]
    cfg = upstream(broker, e2e_ack=True, e2e_resend_after_s=2.0, max_batch_readings=25)
    procs: list[subprocess.Popen[bytes]] = []
    try:
        async with Uplink(cfg, gateway_id=GW, outbox=outbox, inventory=lambda: INVENTORY):
            # The gateway's retained status reaches each process once it has subscribed (the
            # shared row topics are subscribed before the status topic).
            procs = [_consumer_process(broker, postgres.dsn, f"platform-pg-{i}", outs[i]) for i in range(2)]

            async def subscribed() -> bool:
                for p, out in zip(procs, outs, strict=True):
                    assert p.poll() is None, out.read_text(errors="replace")
                return all(_lines(out, f"status {GW} online") for out in outs)

            await wait_for(subscribed, timeout_s=30)
            for i in range(n_events):  # live traffic: readings and alarms interleaved
                await outbox.append(readings(n_readings // n_events, start=i * 150), [alarm(i)])

            with psycopg.connect(postgres.dsn, autocommit=True) as conn:

                async def all_stored() -> bool:
                    t = conn.execute("SELECT count(*) FROM readings WHERE gateway_id=%s", (GW,)).fetchone()
                    e = conn.execute("SELECT count(*) FROM events WHERE gateway_id=%s", (GW,)).fetchone()
                    return (t, e) == ((n_readings,), (n_events,))

                await wait_for(all_stored, timeout_s=90)
            await wait_for(lambda: _outbox_empty(outbox), timeout_s=30)  # acked end to end
    finally:
        for p in procs:
            p.send_signal(signal.SIGINT)
        deadline = time.monotonic() + 60  # a loaded machine: Ctrl-C is still a clean stop, only slower
        for p in procs:
            try:
                p.wait(timeout=max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait()
    with psycopg.connect(postgres.dsn) as conn:
        (rows, distinct) = conn.execute(
            "SELECT count(*), count(DISTINCT (epoch, seq)) FROM readings WHERE gateway_id=%s", (GW,)
        ).fetchone() or (0, 0)
        (events,) = conn.execute("SELECT count(*) FROM events WHERE gateway_id=%s", (GW,)).fetchone() or (0,)
        lanes = conn.execute(
            "SELECT lane, contiguous, rows, duplicates, gaps_seen FROM lanes WHERE gateway_id=%s "
            "ORDER BY lane",
            (GW,),
        ).fetchall()
        (links,) = conn.execute("SELECT count(*) FROM links WHERE gateway_id=%s", (GW,)).fetchone() or (0,)
    assert [p.returncode for p in procs] == [0, 0]  # Ctrl-C stops a consumer cleanly
    assert rows == distinct == n_readings and events == n_events
    last = n_readings + n_events
    assert {lane: contig for lane, contig, *_ in lanes} == {"event": last, "telemetry": last - 1}
    assert {lane: n for lane, _, n, *_ in lanes} == {"event": n_events, "telemetry": n_readings}
    assert links == 0  # no open gap
    # Both processes stored rows: the shared subscription split the messages between them.
    handled = {out.stem: (_lines(out, "data "), _lines(out, "ALARM ")) for out in outs}
    assert all(data + alarms > 0 for data, alarms in handled.values()), handled
    assert sum(data for data, _ in handled.values()) >= n_readings // 25  # every message, some twice
    assert sum(alarms for _, alarms in handled.values()) >= n_events
    print(f"messages handled per process (telemetry, alarms): {handled}; lanes {lanes}")


async def _outbox_empty(outbox: AsyncOutbox) -> bool:
    return all(s.rows == 0 for s in (await outbox.stats()).lanes)


def test_postgresql_refuses_what_sqlite_refuses(postgres: PostgresServer, tmp_path: Path) -> None:
    """Text with NUL or a lone surrogate, numbers past 2**63-1, a non-finite float: both stores
    refuse them alike (typed, before storing); SQLite used to keep what PostgreSQL raised on."""
    from citynerve.hil.platform.pgstore import PgPlatformStore
    from citynerve.hil.platform.store import InvalidMessage, PlatformStore
    from tests.uplink.test_platform_hostile import UNSTORABLE

    stores = [PlatformStore(tmp_path / "p.sqlite"), PgPlatformStore(postgres.dsn)]
    try:
        for st in stores:
            for body in UNSTORABLE:
                with pytest.raises(InvalidMessage):
                    st.ingest(json.loads(json.dumps(body)))
            assert st.lane("gw-1", "telemetry") is None and st.lane("gw-1", "event") is None
    finally:
        for st in stores:
            st.close()


async def test_a_postgresql_consumer_goes_on_after_a_message_it_refuses(
    broker: MosquittoBroker, postgres: PostgresServer
) -> None:
    from citynerve.hil.platform import PlatformConsumer
    from citynerve.hil.platform.pgstore import PgPlatformStore
    from tests.uplink.test_platform_hostile import tele

    c = PlatformConsumer(host=broker.host, port=broker.port, store=PgPlatformStore(postgres.dsn), group=None)
    async with c, aiomqtt.Client(broker.host, broker.port) as pub:
        await c.wait_connected()
        await pub.publish(
            "citynerve/gw-5/telemetry", json.dumps(tele("gw-5", 0, [1], value="ABC\u0000")), qos=1
        )
        await pub.publish("citynerve/gw-6/telemetry", json.dumps(tele("gw-6", 0, [1, 2])), qos=1)

        async def stored() -> bool:
            return await c.query(lambda s: s.reading_seqs("gw-6")) == [1, 2]  # type: ignore[no-any-return]

        await wait_for(stored, timeout_s=30)
        assert await c.query(lambda s: s.reading_seqs("gw-5")) == []
    assert c.invalid == 1


async def test_ctrl_c_ends_a_consumer_whose_store_call_waits_on_a_row_lock(
    broker: MosquittoBroker, postgres: PostgresServer, tmp_path: Path
) -> None:
    """Ctrl-C while the consumer's ingest waits on the lane's row lock, which another session holds:
    the process ends (exit 0) with the lock still held; the interrupted message is rolled back and
    not acked (the gateway sends it again). The stop used to wait on that call for as long as the
    lock was held (a stalled server: for ever)."""
    from tests.uplink.test_platform_hostile import status, tele

    gw, out = "gw-lock", tmp_path / "consumer.out"
    acked: list[int] = []
    async with aiomqtt.Client(broker.host, broker.port) as c:
        await c.subscribe(f"citynerve/{gw}/ack", qos=1)

        async def read_acks() -> None:
            async for m in c.messages:
                acked.append(json.loads(m.payload)["seq"])  # type: ignore[arg-type]

        reader = asyncio.create_task(read_acks())
        await c.publish(f"citynerve/{gw}/status", json.dumps(status(gw)), qos=1, retain=True)
        p = _consumer_process(broker, postgres.dsn, "platform-pg-lock", out)
        try:

            async def subscribed() -> bool:
                assert p.poll() is None, out.read_text(errors="replace")
                return _lines(out, f"status {gw} online") > 0

            await wait_for(subscribed, timeout_s=60)
            await c.publish(f"citynerve/{gw}/telemetry", json.dumps(tele(gw, 0, [1, 2])), qos=1)

            async def acked_2() -> bool:
                return 2 in acked

            await wait_for(acked_2, timeout_s=30)
            with psycopg.connect(postgres.dsn, autocommit=True) as conn:
                with conn.transaction():
                    conn.execute("SELECT 1 FROM lanes WHERE gateway_id=%s FOR UPDATE", (gw,))
                    await c.publish(f"citynerve/{gw}/telemetry", json.dumps(tele(gw, 2, [3, 4])), qos=1)

                    async def ingest_waits() -> bool:
                        row = conn.execute(
                            "SELECT count(*) FROM pg_stat_activity WHERE wait_event_type='Lock'"
                        ).fetchone()
                        return row == (1,)

                    await wait_for(ingest_waits, timeout_s=30)
                    p.send_signal(signal.SIGINT)
                    rc = await asyncio.to_thread(p.wait, 60)  # ~5 s: the bound before the interrupt
                    # the lock is released here, after the process ended
                seqs = conn.execute(
                    "SELECT seq FROM readings WHERE gateway_id=%s ORDER BY seq", (gw,)
                ).fetchall()
        finally:
            if p.poll() is None:
                p.kill()
                p.wait()
            reader.cancel()
    text = out.read_text(errors="replace")
    assert rc == 0, text
    assert "a store call still runs 5 s after stop; interrupting it" in text
    assert seqs == [(1,), (2,)]  # the interrupted ingest rolled back
    assert acked and max(acked) == 2  # and nothing of it was acked
