"""End-to-end ack behaviour a platform relies on, against a real Mosquitto with a hand-written
platform (a plain MQTT client that signs its acks): a lost alarm is resent while the telemetry
lane's acks keep advancing (one resend timer per lane); a new platform starts its chain at the
status's `acked`; the death message says it is the will; the status schema is open."""

from __future__ import annotations

import asyncio
import contextlib
import json
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import aiomqtt

from citynerve.gateway.store import AsyncOutbox, Lane
from citynerve.gateway.uplink import JsonV1Encoding, Uplink
from citynerve.hil.platform import MosquittoBroker, PlatformConsumer
from tests.uplink.conftest import (
    INVENTORY,
    PLATFORM_SIGNER,
    alarm,
    readings,
    upstream,
    validate_message,
    wait_for,
)

GW = "gw-acks"
REPO = Path(__file__).resolve().parents[2]


class LossyPlatform:
    """Acks every telemetry message; drops the first events message it gets (a lost alarm) and acks
    the event lane's contiguous seq only, as docs/upstream-contract.md says."""

    def __init__(self, client: aiomqtt.Client) -> None:
        self.client = client
        self.contiguous = {"telemetry": 0, "event": 0}
        self.event_arrivals: list[tuple[float, list[int]]] = []
        self.telemetry_acks: list[tuple[float, int]] = []
        self.dropped_first = False
        self.event_arrived = asyncio.Event()

    async def ack(self, body: dict[str, Any], lane: str) -> None:
        ack = {
            "schema": "citynerve.ack/1",
            "gateway_id": GW,
            "epoch": body["epoch"],
            "lane": lane,
            "seq": self.contiguous[lane],
            "ts_ms": int(time.time() * 1000),
            "consumer": "lossy-test-platform",
        }
        signed = PLATFORM_SIGNER.sign_ack(ack)
        await self.client.publish(f"citynerve/{GW}/ack", json.dumps(signed).encode(), qos=1)

    async def run(self) -> None:
        async for msg in self.client.messages:
            assert isinstance(msg.payload, bytes)
            body = json.loads(msg.payload)
            lane = body["lane"]
            if lane == "event":
                seqs = [e["seq"] for e in body["events"]]
                if not self.dropped_first:
                    self.dropped_first = True
                    continue  # lost on the way
                self.event_arrivals.append((time.monotonic(), seqs))
                self.event_arrived.set()
            if body["prev_seq"] <= self.contiguous[lane]:
                self.contiguous[lane] = max(self.contiguous[lane], body["seq"])
            if lane == "telemetry":
                self.telemetry_acks.append((time.monotonic(), self.contiguous[lane]))
            await self.ack(body, lane)


async def test_lost_alarm_is_resent_while_telemetry_acks_advance(
    broker: MosquittoBroker, outbox: AsyncOutbox
) -> None:
    await outbox.append(readings(20), [alarm(1)])
    alarm_seq = 21
    cfg = upstream(broker, e2e_ack=True, e2e_resend_after_s=1.0, max_batch_readings=10)
    async with aiomqtt.Client(broker.host, broker.port) as sub:
        await sub.subscribe(f"citynerve/{GW}/telemetry", qos=1)
        await sub.subscribe(f"citynerve/{GW}/events", qos=1)
        platform = LossyPlatform(sub)
        listener = asyncio.create_task(platform.run())

        async def feed() -> None:  # live telemetry: the telemetry lane's acks advance all along
            i = 20
            while True:
                await outbox.append(readings(5, start=i), [])
                i += 5
                await asyncio.sleep(0.05)

        feeder = asyncio.create_task(feed())
        try:
            async with Uplink(cfg, gateway_id=GW, outbox=outbox, inventory=lambda: INVENTORY):
                start = time.monotonic()
                async with asyncio.timeout(30):
                    while not any(alarm_seq in seqs for _, seqs in platform.event_arrivals):
                        await platform.event_arrived.wait()
                        platform.event_arrived.clear()
                resent_at = next(t for t, seqs in platform.event_arrivals if alarm_seq in seqs)
        finally:
            feeder.cancel()
            listener.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await feeder
            with contextlib.suppress(asyncio.CancelledError):
                await listener
    assert platform.dropped_first
    # The telemetry lane's acks kept advancing while the event lane waited for its resend.
    advancing = [seq for t, seq in platform.telemetry_acks if start < t < resent_at]
    assert len(set(advancing)) >= 3, advancing
    assert platform.contiguous["event"] == alarm_seq
    print(f"lost alarm resent {resent_at - start:.1f} s after start (resend after 1 s without progress)")


async def test_a_new_platform_starts_its_chain_at_the_status_acked(
    broker: MosquittoBroker, outbox: AsyncOutbox, tmp_path: Path
) -> None:
    """Platform A gets rows 1..100 and acks them (the gateway deletes them); a new platform B with
    an empty database then starts at the status's `acked`, not at 0: no gap stays open."""
    cfg = upstream(broker, e2e_ack=True, e2e_resend_after_s=1.0, max_batch_readings=25)
    await outbox.append(readings(100), [])
    async with PlatformConsumer(
        host=broker.host, port=broker.port, db_path=tmp_path / "a.db", group="a", ack_signer=PLATFORM_SIGNER
    ) as a:
        await a.wait_connected()
        async with Uplink(cfg, gateway_id=GW, outbox=outbox, inventory=lambda: INVENTORY):
            await wait_for(lambda: _outbox_empty(outbox))
    await outbox.append(readings(50, start=100), [])
    async with PlatformConsumer(
        host=broker.host,
        port=broker.port,
        db_path=tmp_path / "b.db",
        group="b",
        ack_signer=PLATFORM_SIGNER,
        validate=validate_message,
    ) as b:
        await b.wait_connected()
        async with Uplink(cfg, gateway_id=GW, outbox=outbox, inventory=lambda: INVENTORY):
            await wait_for(lambda: _outbox_empty(outbox))
            await wait_for(lambda: _contiguous(b, 150))
        lane = await b.query(lambda s: s.lane(GW, "telemetry"))
        status = await b.query(lambda s: s.document(GW, "status"))
    assert lane.rows == 50 and lane.open_gap is None and lane.contiguous == 150
    assert status["acked"]["telemetry"] >= 100
    assert b.invalid == 0


async def test_a_platform_acking_below_the_settled_position_gets_a_status_and_catches_up(
    broker: MosquittoBroker, outbox: AsyncOutbox, tmp_path: Path
) -> None:
    """A platform that started at 0 although rows up to 100 are settled (it missed the status):
    its low ack brings a fresh (not retained) status naming `acked`, where its chain starts."""
    cfg = upstream(broker, e2e_ack=True, e2e_resend_after_s=1.0, max_batch_readings=25)
    await outbox.append(readings(100), [])
    # Settle 1..100 with a first platform, then forget it.
    async with PlatformConsumer(
        host=broker.host, port=broker.port, db_path=tmp_path / "a.db", group="a", ack_signer=PLATFORM_SIGNER
    ) as a:
        await a.wait_connected()
        async with Uplink(cfg, gateway_id=GW, outbox=outbox, inventory=lambda: INVENTORY):
            await wait_for(lambda: _outbox_empty(outbox))
    # The new platform subscribes to rows only, so it never sees the birth status: it acks 0 (a gap
    # (0, 100] it thinks is open).
    async with (
        Uplink(cfg, gateway_id=GW, outbox=outbox, inventory=lambda: INVENTORY),
        aiomqtt.Client(broker.host, broker.port) as sub,
    ):
        await sub.subscribe(f"citynerve/{GW}/telemetry", qos=1)
        await outbox.append(readings(10, start=100), [])
        body: dict[str, Any] = {}
        async with asyncio.timeout(20):
            async for msg in sub.messages:
                assert isinstance(msg.payload, bytes)
                body = json.loads(msg.payload)
                break
        assert body["prev_seq"] == 100
        await sub.subscribe(f"citynerve/{GW}/status", qos=1)
        platform = LossyPlatform(sub)
        platform.dropped_first = True
        await platform.ack(body, "telemetry")  # contiguous 0: below what is settled
        async with asyncio.timeout(20):
            async for msg in sub.messages:
                assert isinstance(msg.payload, bytes)
                status = json.loads(msg.payload)
                if str(msg.topic).endswith("/status") and not msg.retain:
                    break
    assert status["acked"]["telemetry"] >= 100


async def _outbox_empty(outbox: AsyncOutbox) -> bool:
    return all(s.rows == 0 for s in (await outbox.stats()).lanes)


async def _contiguous(consumer: PlatformConsumer, seq: int) -> bool:
    lane = await consumer.query(lambda s: s.lane(GW, "telemetry"))
    return lane is not None and lane.contiguous >= seq


def test_status_schema_accepts_fields_a_platform_ignores() -> None:
    status = json.loads(
        JsonV1Encoding(topic_prefix="citynerve", gateway_id=GW, epoch="5e3a09c1d2b4e6f7")
        .status(online=True, seq=3, details={"acked": {"event": 0, "telemetry": 3}})
        .payload
    )
    validate_message("status", {**status, "something_new": {"detail": 1}})


async def test_the_will_says_it_is_the_will_and_validates(broker: MosquittoBroker, tmp_path: Path) -> None:
    """SIGKILL the gateway process: the broker publishes the death message set at connect."""
    proc = _spawn_gateway(tmp_path / "o.sqlite", broker)
    try:
        async with aiomqtt.Client(broker.host, broker.port) as sub:
            await sub.subscribe(f"citynerve/{GW}/status", qos=1)
            seen: list[dict[str, Any]] = []
            async with asyncio.timeout(30):
                async for msg in sub.messages:
                    assert isinstance(msg.payload, bytes)
                    seen.append(json.loads(msg.payload))
                    if seen[-1]["state"] == "online" and proc.poll() is None:
                        proc.kill()
                    if seen[-1]["state"] == "offline":
                        break
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.wait()
    will = seen[-1]
    validate_message("status", will)
    assert will["will"] is True and will["reason"] == "connection_lost"
    assert "will" not in seen[-2]


def _spawn_gateway(outbox: Path, broker: MosquittoBroker) -> subprocess.Popen[str]:
    args = ["--outbox", str(outbox), "--broker", broker.url, "--generate", "10", "--stay", "--gateway-id", GW]
    return subprocess.Popen(
        [sys.executable, "-m", "tests.uplink.gateway_proc", *args],
        cwd=REPO,
        stdout=subprocess.DEVNULL,
        text=True,
        start_new_session=True,
    )


async def test_a_signed_ack_for_a_seq_never_given_deletes_nothing(
    broker: MosquittoBroker, outbox: AsyncOutbox
) -> None:
    """A platform fault (or a copy of this outbox in another gateway) acks seq 10**9 while nobody
    received the rows sent: they stay in the outbox, and a true ack after it settles exactly its
    own rows. It used to count as "the platform has all", deleting every row sent (100 here)."""
    await outbox.append(readings(100), [alarm(1)])
    cfg = upstream(broker, e2e_ack=True, e2e_resend_after_s=600.0, max_batch_readings=25)

    async def ack(seq: int) -> None:
        body = {
            "schema": "citynerve.ack/1", "gateway_id": GW, "epoch": outbox.epoch, "lane": "telemetry",
            "seq": seq, "ts_ms": int(time.time() * 1000), "consumer": "faulty-platform",
        }  # fmt: skip
        await c.publish(f"citynerve/{GW}/ack", json.dumps(PLATFORM_SIGNER.sign_ack(body)).encode(), qos=1)

    async with (
        aiomqtt.Client(broker.host, broker.port) as c,
        Uplink(cfg, gateway_id=GW, outbox=outbox, inventory=lambda: INVENTORY) as up,
    ):

        async def published() -> bool:
            return up.snapshot().published_rows.get("telemetry") == 100

        async def acked() -> bool:
            return up.snapshot().acked_rows.get("telemetry", 0) > 0

        await wait_for(published)
        await ack(10**9)  # in order on one connection: handled before the next one
        await ack(50)
        await wait_for(acked)
        snap = up.snapshot()
    assert snap.acked_rows["telemetry"] == 50
    rows = {lane.lane: lane.rows for lane in (await outbox.stats()).lanes}
    assert rows == {Lane.TELEMETRY: 50, Lane.EVENT: 1}
