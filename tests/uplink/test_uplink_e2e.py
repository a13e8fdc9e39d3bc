"""The uplink against a real Mosquitto and the reference consumer: delivery, order, acks, schemas."""

from __future__ import annotations

import asyncio
import contextlib
import sqlite3
from pathlib import Path

import pytest

from citynerve.gateway.api import Reading
from citynerve.gateway.store import AsyncOutbox, Lane
from citynerve.gateway.uplink import Uplink
from citynerve.hil.platform import MosquittoBroker, PlatformConsumer
from tests.uplink.conftest import INVENTORY, alarm, readings, upstream, wait_for

GW = "gw-test"


async def stored(consumer: PlatformConsumer, n_readings: int, n_events: int = 0) -> bool:
    lanes = await consumer.query(lambda s: {v.lane: v for v in s.lanes() if v.gateway_id == GW})
    r = lanes.get("telemetry")
    e = lanes.get("event")
    return (r.rows if r else 0) >= n_readings and (e.rows if e else 0) >= n_events


@pytest.mark.parametrize("protocol", ["5", "3.1.1"])
async def test_delivers_everything_in_order_and_deletes_after_puback(
    broker: MosquittoBroker, outbox: AsyncOutbox, consumer: PlatformConsumer, protocol: str
) -> None:
    await outbox.append(readings(1000), [alarm(1), alarm(2)])
    # 3.1.1: the last PUBACK settles at the next packet, the keepalive's PINGRESP (test_puback311.py).
    cfg = upstream(broker, protocol=protocol, max_batch_readings=64, keepalive_s=5)
    async with Uplink(cfg, gateway_id=GW, outbox=outbox, inventory=lambda: INVENTORY) as up:
        await wait_for(lambda: stored(consumer, 1000, 2))
        await outbox.append(readings(10, start=1000), [alarm(3)])
        await wait_for(lambda: stored(consumer, 1010, 3))
        await wait_for(lambda: _empty(outbox))
        snap = up.snapshot()
    assert snap.published_rows == {"event": 3, "telemetry": 1010}
    assert snap.acked_rows == {"event": 3, "telemetry": 1010}
    seqs = await consumer.query(lambda s: s.reading_seqs(GW))
    assert seqs == sorted(seqs) and len(seqs) == 1010
    values = await consumer.query(lambda s: [r["value"] for r in s.readings(GW)])
    assert values == [float(i) for i in range(1010)]
    lane = await consumer.query(lambda s: s.lane(GW, "telemetry"))
    assert lane.duplicates == 0 and lane.gaps_seen == 0 and lane.open_gap is None
    inv = await consumer.query(lambda s: s.document(GW, "inventory"))
    assert inv["devices"][0]["component_code"] == "3205080101000001"
    # a clean stop says goodbye (retained offline status)
    await wait_for(lambda: _status_is(consumer, "offline"))


async def _status_is(consumer: PlatformConsumer, state: str) -> bool:
    status = await consumer.query(lambda s: s.document(GW, "status"))
    return status is not None and status["state"] == state


async def _empty(outbox: AsyncOutbox) -> bool:
    stats = await outbox.stats()
    return all(s.rows == 0 for s in stats.lanes)


async def test_an_event_backlog_stored_before_start_is_all_sent(
    broker: MosquittoBroker, outbox: AsyncOutbox, consumer: PlatformConsumer
) -> None:
    """A restart after an outage: more events wait than one read of the events lane takes (500).
    Every one is sent with nothing committed since the start (the lane was taken as clear after
    the first read, and the rest waited for the next event to be committed)."""
    await outbox.append(readings(100), [alarm(i) for i in range(1200)])
    async with Uplink(upstream(broker), gateway_id=GW, outbox=outbox, inventory=lambda: INVENTORY):
        await wait_for(lambda: stored(consumer, 100, 1200), timeout_s=60)
        await wait_for(lambda: _empty(outbox))
    lane = await consumer.query(lambda s: s.lane(GW, "event"))
    assert lane.duplicates == 0 and lane.gaps_seen == 0 and lane.open_gap is None


async def test_e2e_mode_keeps_rows_until_platform_acks(
    broker: MosquittoBroker, outbox: AsyncOutbox, consumer: PlatformConsumer
) -> None:
    await outbox.append(readings(300), [alarm(1)])
    cfg = upstream(broker, e2e_ack=True, max_batch_readings=50)
    async with Uplink(cfg, gateway_id=GW, outbox=outbox, inventory=lambda: INVENTORY) as up:
        await wait_for(lambda: stored(consumer, 300, 1))
        await wait_for(lambda: _empty(outbox))
        snap = up.snapshot()
    assert snap.ack_seq == {"event": 301, "telemetry": 300}  # readings got 1..300, the alarm 301
    assert await outbox.get("uplink.ack_seq.telemetry") == str(snap.ack_seq["telemetry"])


async def test_e2e_without_platform_acks_deletes_nothing(
    broker: MosquittoBroker, outbox: AsyncOutbox
) -> None:
    await outbox.append(readings(100), [])
    cfg = upstream(broker, e2e_ack=True)
    async with Uplink(cfg, gateway_id=GW, outbox=outbox, inventory=lambda: INVENTORY) as up:
        await wait_for(lambda: _published(up, 100))
        await asyncio.sleep(0.3)
    stats = await outbox.stats()
    assert stats.lane(Lane.TELEMETRY).rows == 100


async def _published(up: Uplink, n: int) -> bool:
    return up.snapshot().published_rows["telemetry"] >= n


async def test_cancelled_run_task_says_offline(
    broker: MosquittoBroker, outbox: AsyncOutbox, consumer: PlatformConsumer
) -> None:
    """The runtime runs `uplink.run()` as a task and cancels it on shutdown: the retained status must
    end "offline" (a clean disconnect suppresses the will)."""
    up = Uplink(
        upstream(broker),
        gateway_id=GW,
        outbox=outbox,
        inventory=lambda: INVENTORY,
        status=lambda: {"devices_online": 3},
    )
    task = asyncio.create_task(up.run())
    await wait_for(lambda: _status_is(consumer, "online"))
    status = await consumer.query(lambda s: s.document(GW, "status"))
    assert status["gateway"] == {"devices_online": 3} and status["dropped"] == {"event": 0, "telemetry": 0}
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await task
    await wait_for(lambda: _status_is(consumer, "offline"))
    status = await consumer.query(lambda s: s.document(GW, "status"))
    assert status["reason"] == "shutdown"


async def test_disabled_uplink_returns_and_keeps_rows(broker: MosquittoBroker, outbox: AsyncOutbox) -> None:
    await outbox.append(readings(5), [])
    up = Uplink(upstream(broker, enabled=False), gateway_id=GW, outbox=outbox, inventory=lambda: INVENTORY)
    async with asyncio.timeout(5):
        await up.run()
    assert (await outbox.stats()).lane(Lane.TELEMETRY).rows == 5


async def test_blocks_split_for_message_limits_and_damaged_blocks_are_skipped(
    broker: MosquittoBroker, outbox: AsyncOutbox, consumer: PlatformConsumer, tmp_path: Path
) -> None:
    """Stored blocks bigger than max_batch_readings or max_batch_bytes are split between messages;
    a damaged block is skipped (a gap), never stops the drain; every message still validates (the
    consumer fixture checks schemas)."""
    big = [Reading("wm-big", "flow", float(i), "u" * 300, 1_780_000_000.0 + i) for i in range(40)]
    for part in (readings(50), readings(50, start=50), big, readings(60, start=100)):
        await outbox.append(part, [])  # blocks 1-50, 51-100, 101-140, 141-200
    raw = sqlite3.connect(tmp_path / "outbox.sqlite", isolation_level=None)
    raw.execute("UPDATE reading_blocks SET body = zeroblob(40) WHERE first_seq = 1")  # damaged storage
    raw.close()
    cfg = upstream(broker, max_batch_readings=30, max_batch_bytes=4096)
    async with Uplink(cfg, gateway_id=GW, outbox=outbox, inventory=lambda: INVENTORY) as up:
        await wait_for(lambda: stored(consumer, 150))
        snap = up.snapshot()
    seqs = await consumer.query(lambda s: s.reading_seqs(GW))
    assert seqs == list(range(51, 201))
    units = await consumer.query(lambda s: [r["unit"] for r in s.readings(GW)])
    assert units.count("u" * 300) == 40
    assert snap.published_rows["telemetry"] == 150
    assert snap.published_msgs > 150 // 30 + 2  # the big readings went in several messages
    lane = await consumer.query(lambda s: s.lane(GW, "telemetry"))
    assert lane.duplicates == 0


async def test_an_ack_of_another_store_epoch_is_ignored(outbox: AsyncOutbox) -> None:
    """A late ack for the old epoch's seqs must not delete rows of the new epoch."""
    from citynerve.gateway.uplink.encoding import PlatformAck

    await outbox.append(readings(45), [alarm(1)])
    up = Uplink(upstream("mqtt://127.0.0.1:1"), gateway_id=GW, outbox=outbox, inventory=lambda: INVENTORY)
    up._on_platform_ack(PlatformAck(GW, Lane.TELEMETRY, 40, "0000000000000000"))
    assert up._platform_seq[Lane.TELEMETRY] == 0
    up._on_platform_ack(PlatformAck(GW, Lane.TELEMETRY, 40, outbox.epoch))
    up._on_platform_ack(PlatformAck(GW, Lane.EVENT, 46))  # no epoch: an older platform, the current one
    assert (up._platform_seq[Lane.TELEMETRY], up._platform_seq[Lane.EVENT]) == (40, 46)
    # A seq this outbox never gave (it gave 1..46) cannot be acked: ignored.
    up._on_platform_ack(PlatformAck(GW, Lane.TELEMETRY, 47, outbox.epoch))
    assert up._platform_seq[Lane.TELEMETRY] == 40
