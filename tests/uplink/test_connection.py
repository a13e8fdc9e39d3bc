"""Connection: TLS with verification on by default, mTLS, username/password from a file, failover
across brokers, capped jittered backoff, replay rate limit, alarms never stuck behind a replay."""

from __future__ import annotations

import asyncio
import json
import random
import socket
import subprocess
import time
from pathlib import Path

import aiomqtt
import pytest

from citynerve.gateway.backoff import Backoff
from citynerve.gateway.store import AsyncOutbox
from citynerve.gateway.uplink import Uplink, UpstreamConfig
from citynerve.gateway.uplink import _uplink as uplink_module
from citynerve.gateway.uplink._connection import RateLimiter, make_client, quiet_closed_socket
from citynerve.gateway.uplink.config import parse_broker_url
from citynerve.hil.platform import MosquittoBroker, PlatformConsumer, free_port
from tests.uplink.certs import make_pki
from tests.uplink.conftest import INVENTORY, alarm, readings, upstream, wait_for

GW = "gw-conn"


async def _connected(up: Uplink) -> bool:
    return up.snapshot().connected


async def _failed(up: Uplink) -> bool:
    return up.snapshot().last_error is not None


@pytest.fixture
def tls_broker(tmp_path: Path):  # type: ignore[no-untyped-def]
    pki = make_pki(tmp_path / "pki")
    pw = tmp_path / "passwd"
    pw.write_text("")
    subprocess.run(
        ["mosquitto_passwd", "-b", str(pw), "gw-tls", "right-password"], check=True, capture_output=True
    )
    port = free_port()
    b = MosquittoBroker(
        port=port,
        workdir=tmp_path,
        extra_config="\n".join(
            [
                f"cafile {pki.ca}",
                f"certfile {pki.server_cert}",
                f"keyfile {pki.server_key}",
                "require_certificate true",
                f"password_file {pw}",
                "allow_anonymous false",
            ]
        ),
    )
    b.start()
    try:
        yield b, pki
    finally:
        b.close()


def _tls_cfg(broker: MosquittoBroker, pki, tmp_path: Path, **tls: object) -> UpstreamConfig:  # type: ignore[no-untyped-def]
    pwf = tmp_path / "gw.password"
    pwf.write_text(tls.pop("password", "right-password"))  # type: ignore[arg-type]
    t = {"ca_file": str(pki.ca), "cert_file": str(pki.client_cert), "key_file": str(pki.client_key)}
    t.update({k: str(v) if isinstance(v, Path) else v for k, v in tls.items()})  # type: ignore[misc]
    return UpstreamConfig.model_validate(
        {
            "brokers": [f"mqtts://127.0.0.1:{broker.port}"],
            "username": "gw-tls",
            "password_file": str(pwf),
            "tls": t,
            "backoff": {"initial_s": 0.1, "max_s": 0.3},
        }
    )


async def test_mtls_with_password(tls_broker, outbox: AsyncOutbox, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    broker, pki = tls_broker
    await outbox.append(readings(20), [alarm()])
    cfg = _tls_cfg(broker, pki, tmp_path)
    async with Uplink(cfg, gateway_id=GW, outbox=outbox, inventory=lambda: INVENTORY) as up:
        await wait_for(lambda: _connected(up), timeout_s=10)
        await wait_for(lambda: _drained(outbox))
    assert "right-password" not in repr(cfg)


@pytest.mark.parametrize(
    "change",
    [
        {"ca_file": "OTHER"},  # server cert not signed by the CA we trust
        {"server_hostname": "wrong.name.test"},  # name mismatch
        {"password": "wrong-password"},
    ],
    ids=["untrusted-ca", "wrong-hostname", "bad-password"],
)
async def test_tls_and_auth_failures_do_not_connect(  # type: ignore[no-untyped-def]
    tls_broker, outbox: AsyncOutbox, tmp_path: Path, change: dict[str, str], caplog: pytest.LogCaptureFixture
) -> None:
    broker, pki = tls_broker
    if change.get("ca_file") == "OTHER":
        change = {"ca_file": str(pki.other_ca)}
    cfg = _tls_cfg(broker, pki, tmp_path, **change)
    async with Uplink(cfg, gateway_id=GW, outbox=outbox, inventory=lambda: INVENTORY) as up:
        await wait_for(lambda: _failed(up), timeout_s=10)
        await asyncio.sleep(0.3)
        snap = up.snapshot()
    assert not snap.connected and snap.connect_failures >= 1
    assert "right-password" not in caplog.text and "wrong-password" not in caplog.text


async def test_server_hostname_override_verifies(tls_broker, outbox: AsyncOutbox, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    broker, pki = tls_broker
    cfg = _tls_cfg(broker, pki, tmp_path, server_hostname="broker.city.test")
    async with Uplink(cfg, gateway_id=GW, outbox=outbox, inventory=lambda: INVENTORY) as up:
        await wait_for(lambda: _connected(up), timeout_s=10)


async def _drained(outbox: AsyncOutbox) -> bool:
    return all(s.rows == 0 for s in (await outbox.stats()).lanes)


async def test_failover_to_second_broker_and_back(
    broker: MosquittoBroker, outbox: AsyncOutbox, consumer: PlatformConsumer, tmp_path: Path
) -> None:
    dead = f"mqtt://127.0.0.1:{free_port()}"  # nothing listens here
    cfg = upstream(broker, brokers=[dead, broker.url])
    await outbox.append(readings(100), [alarm()])
    async with Uplink(cfg, gateway_id=GW, outbox=outbox, inventory=lambda: INVENTORY) as up:
        await wait_for(lambda: _connected(up))
        assert up.snapshot().broker == broker.url
        assert up.snapshot().connect_failures >= 1
        await wait_for(lambda: _drained(outbox))


async def test_a_hung_primary_fails_over_after_a_stable_session(
    broker: MosquittoBroker, outbox: AsyncOutbox, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """After a stable session on the primary, the primary hangs (TCP accepted, nothing answered:
    SIGSTOP) and each connect to it times out after connect_timeout_s, longer than a stable
    session: that failed connect is not a session, so the next one goes to the secondary.
    (Counted as stable, it reset the backoff and went back to the primary for ever.)"""
    monkeypatch.setattr(uplink_module, "STABLE_SESSION_S", 1.0)  # 5 s in service
    (tmp_path / "second").mkdir()
    second = MosquittoBroker(workdir=tmp_path / "second")
    second.start()
    try:
        cfg = upstream(broker, brokers=[broker.url, second.url], connect_timeout_s=2.0)
        async with Uplink(cfg, gateway_id=GW, outbox=outbox, inventory=lambda: INVENTORY) as up:
            await wait_for(lambda: _connected(up))
            assert up.snapshot().broker == broker.url
            await asyncio.sleep(1.5)  # at least STABLE_SESSION_S connected: a stable session
            broker.freeze()
            try:
                up.reconnect("test: the primary hangs")
                await wait_for(lambda: _on(up, second.url), timeout_s=60)
            finally:
                broker.thaw()
    finally:
        second.close()


async def _on(up: Uplink, url: str) -> bool:
    snap = up.snapshot()
    return snap.connected and snap.broker == url


async def test_alarm_not_stuck_behind_rate_limited_replay(
    broker: MosquittoBroker, outbox: AsyncOutbox, consumer: PlatformConsumer
) -> None:
    await outbox.append(readings(5000), [])
    # 5 msgs/s of 10 readings: the backlog would take 100 s to replay.
    cfg = upstream(broker, max_batch_readings=10, replay_max_msgs_per_s=5, replay_burst=2)
    async with Uplink(cfg, gateway_id=GW, outbox=outbox, inventory=lambda: INVENTORY) as up:
        await wait_for(lambda: _connected(up))
        await asyncio.sleep(1.0)
        t0 = time.monotonic()
        await outbox.append([], [alarm(99)])
        await wait_for(lambda: _events(consumer, 1), timeout_s=5)
        latency = time.monotonic() - t0
        sent = up.snapshot().published_rows["telemetry"]
        assert up.snapshot().replaying
    assert latency < 1.0, f"alarm took {latency:.2f} s behind the replay"
    # The limiter held: ~1.x s at 5 msg/s + burst 2 -> far below the backlog.
    assert sent <= 10 * (2 + 5 * 3), sent


async def _events(consumer: PlatformConsumer, n: int) -> bool:
    lane = await consumer.query(lambda s: s.lane(GW, "event"))
    return lane is not None and lane.rows >= n


async def test_will_marks_gateway_offline_when_connection_dies(
    broker: MosquittoBroker, outbox: AsyncOutbox
) -> None:
    cfg = upstream(broker, keepalive_s=5)
    statuses: list[str] = []
    async with aiomqtt.Client(broker.host, broker.port) as sub:
        await sub.subscribe(f"citynerve/{GW}/status", qos=1)
        async with Uplink(cfg, gateway_id=GW, outbox=outbox, inventory=lambda: INVENTORY) as up:
            await wait_for(lambda: _connected(up))
            # Abrupt end: the TCP connection ends without an MQTT DISCONNECT, as when a cable is cut.
            # shutdown, not close: the fd stays valid for paho; the broker publishes the will.
            client = up._client
            assert client is not None
            client._client.socket().shutdown(socket.SHUT_RDWR)  # type: ignore[union-attr]
            async with asyncio.timeout(10):
                async for m in sub.messages:
                    statuses.append(json.loads(m.payload)["state"])  # type: ignore[arg-type]
                    if statuses[-1] == "offline":
                        break
    assert statuses[0] == "online" and statuses[-1] == "offline"


def test_backoff_is_capped_and_jittered() -> None:
    b = Backoff(1.0, 8.0, 0.5, rng=random.Random(1))
    delays = [b.next_delay() for _ in range(8)]
    assert all(0 < d <= 8.0 for d in delays)
    assert delays[0] <= 1.0 and max(delays[4:]) > 4.0  # grows, then stays under the cap
    assert len(set(delays)) == len(delays)  # jittered
    b.reset()
    assert b.next_delay() <= 1.0


def test_rate_limiter() -> None:
    now = [0.0]
    rl = RateLimiter(10.0, 3, clock=lambda: now[0])
    assert [rl.delay() for _ in range(3)] == [0.0, 0.0, 0.0]
    assert rl.delay() == pytest.approx(0.1)
    now[0] += 1.0
    assert rl.delay() == 0.0


async def test_an_unreachable_broker_logs_a_few_lines_not_one_per_try(
    outbox: AsyncOutbox, caplog: pytest.LogCaptureFixture
) -> None:
    """The uplink logged every retry ("no broker reachable") for as long as an outage lasted: ~2,000
    lines a day into the journal on the SD card. Now the 1st, 2nd, 4th, 8th, ... round only."""
    dead = f"mqtt://127.0.0.1:{free_port()}"  # nothing listens here
    cfg = upstream(dead, backoff={"initial_s": 0.01, "max_s": 0.01, "jitter": 0})
    caplog.set_level("INFO", logger="citynerve.gateway.uplink")
    async with Uplink(cfg, gateway_id=GW, outbox=outbox, inventory=lambda: INVENTORY) as up:
        await wait_for(lambda: _failures(up, 40), timeout_s=30)
    tries = [r.getMessage() for r in caplog.records if "no broker reachable" in r.getMessage()]
    assert 6 <= len(tries) <= 7, tries  # rounds 1, 2, 4, 8, 16, 32 (and 64 on a fast machine)
    assert "(1 tries)" in tries[0] and "(32 tries)" in tries[5], tries


async def test_a_missing_password_file_is_not_called_an_unreachable_broker(
    broker: MosquittoBroker, outbox: AsyncOutbox, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """The broker is up but the password file is missing: the uplink logged the ConfigError once
    and then 'no broker reachable' at every retry round, sending the installer after the network."""
    cfg = upstream(
        broker,
        username="gw",
        password_file=str(tmp_path / "missing.pw"),
        backoff={"initial_s": 0.01, "max_s": 0.01, "jitter": 0},
    )
    caplog.set_level("INFO", logger="citynerve.gateway.uplink")
    async with Uplink(cfg, gateway_id=GW, outbox=outbox, inventory=lambda: INVENTORY) as up:

        async def rounds() -> bool:
            return sum("tries)" in r.getMessage() for r in caplog.records) >= 3  # rounds 1, 2 and 4

        await wait_for(rounds, timeout_s=30)
        assert up.snapshot().last_error is not None
    lines = [r.getMessage() for r in caplog.records]
    assert not [m for m in lines if "no broker reachable" in m], lines
    assert any("not connecting: the upstream config is incomplete" in m for m in lines), lines
    assert sum("missing.pw" in m for m in lines) == 1, lines  # the error itself, once


async def _failures(up: Uplink, n: int) -> bool:
    return up.snapshot().connect_failures >= n


async def test_a_socket_closed_before_the_loop_watches_it_is_no_error_but_others_are(
    caplog: pytest.LogCaptureFixture,
) -> None:
    # aiomqtt schedules loop.add_writer(fd) when paho asks to write; a keepalive timeout after the
    # gateway was frozen (SIGSTOP, then SIGCONT) closes the socket first, and the scheduled call
    # failed with EBADF: asyncio logged a traceback at ERROR for a session already being redialled.
    loop = asyncio.get_running_loop()
    make_client(
        upstream("mqtt://127.0.0.1:1"), parse_broker_url("mqtt://127.0.0.1:1"), client_id="c", will=None
    )
    assert loop.get_exception_handler() is quiet_closed_socket  # set by the first uplink client
    a, b = socket.socketpair()
    fd = a.fileno()
    a.close()
    b.close()
    loop.call_soon(loop.add_writer, fd, lambda: None)  # the call aiomqtt schedules, on a closed fd
    await asyncio.sleep(0.05)
    assert not [r for r in caplog.records if r.levelname == "ERROR"], caplog.text

    def fails() -> None:
        raise ValueError("a real bug")

    loop.call_soon(fails)  # any other error in a callback is still reported as asyncio does
    await asyncio.sleep(0.05)
    assert any(
        r.levelname == "ERROR" and "a real bug" in r.getMessage() + str(r.exc_info) for r in caplog.records
    )
