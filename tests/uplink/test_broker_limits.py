"""What a broker refuses, against a real Mosquitto: an MQTT 5 PUBACK with a failure reason code (an
ACL that does not let the gateway write a topic) deletes no row and ends the session naming the
refusal; a row or an inventory over the broker's Maximum Packet Size (CONNACK) never blocks what
follows it: the row is dropped as `too_large` and announced, the inventory is not published (and
the `resend_inventory` command that asked for it fails with `too_large`). Both encodings (JSON v1,
Sparkplug B)."""

from __future__ import annotations

import asyncio
import json
import signal
from collections.abc import Iterator
from pathlib import Path

import aiomqtt
import pytest

from citynerve.gateway.api import Event, EventState, Reading, Severity, stop_task
from citynerve.gateway.store import AsyncOutbox, Lane, position_key
from citynerve.gateway.uplink import Uplink, UplinkState
from citynerve.gateway.uplink.sparkplug import SparkplugUplink
from citynerve.hil.platform import CommandSigner, MosquittoBroker, PlatformConsumer
from tests.uplink.conftest import (
    INVENTORY,
    PLATFORM_SIGNER,
    alarm,
    platform_key_file,
    readings,
    upstream,
    validate_message,
    wait_for,
)
from tests.uplink.test_commands import BuildingTarget
from tests.uplink.test_sparkplug_destination import Host

GW = "gw-limits"
# Anonymous clients may read everything and write every gateway topic but telemetry (JSON v1)
# or device data (Sparkplug): a platform's provisioning mistake.
NO_TELEMETRY = """\
topic read #
topic write citynerve/+/status
topic write citynerve/+/inventory
topic write citynerve/+/events
topic write spBv1.0/+/NBIRTH/+
topic write spBv1.0/+/NDEATH/+
topic write spBv1.0/+/DBIRTH/+/+
topic write spBv1.0/+/NDATA/+
"""
EVERYTHING = "topic readwrite #\n"


@pytest.fixture
def broker_config() -> str:
    """Extra Mosquitto config lines (a test parametrizes it)."""
    return ""


@pytest.fixture
def acl_rules() -> str | None:
    """The broker's ACL file (None: no ACL)."""
    return None


@pytest.fixture
def broker(tmp_path: Path, broker_config: str, acl_rules: str | None) -> Iterator[MosquittoBroker]:
    extra = broker_config
    if acl_rules is not None:
        (tmp_path / "acl").write_text(acl_rules)
        extra += f"\nacl_file {tmp_path / 'acl'}"
    b = MosquittoBroker(workdir=tmp_path, extra_config=extra)
    b.start()
    try:
        yield b
    finally:
        b.close()


def fix_acl(broker: MosquittoBroker) -> None:
    """The platform corrects its ACL: Mosquitto reloads the file on SIGHUP (connections stay)."""
    (broker.workdir / "acl").write_text(EVERYTHING)
    assert broker.proc is not None
    broker.proc.send_signal(signal.SIGHUP)


async def _error_says(up: Uplink | SparkplugUplink, text: str) -> bool:
    return text in (up.snapshot().last_error or "")


async def _got(consumer: PlatformConsumer, readings_: int, events: int) -> bool:
    r = await consumer.query(lambda s: s.reading_seqs(GW))
    e = await consumer.query(lambda s: s.event_seqs(GW))
    return len(r) >= readings_ and len(e) >= events


async def _position(ob: AsyncOutbox, destination: str, lane: Lane, seq: int) -> bool:
    return int(await ob.get(position_key(destination, lane)) or 0) >= seq


@pytest.mark.parametrize("acl_rules", [NO_TELEMETRY])
async def test_a_refused_publish_deletes_no_row_and_ends_the_session_naming_the_refusal(
    broker: MosquittoBroker, outbox: AsyncOutbox, consumer: PlatformConsumer
) -> None:
    await outbox.append(readings(30), [alarm(1)])
    # One message in flight: Mosquitto 2.0.11 closes the connection right after a refusing PUBACK,
    # and a publish written meanwhile can make the PUBACK be lost in the reset (then the session
    # ends as a lost link: nothing deleted either, but the refusal is not named).
    cfg = upstream(broker, protocol="5", max_batch_readings=10, max_inflight=1)
    async with Uplink(cfg, gateway_id=GW, outbox=outbox, inventory=lambda: INVENTORY) as up:
        await wait_for(lambda: _sessions_at_least(up, 3))  # refused again in each new session
        stats = await outbox.stats()
        # Nothing deleted as acknowledged (aiomqtt resolves a refused publish like a taken one).
        assert stats.lane(Lane.TELEMETRY).rows == 30 and stats.lane(Lane.TELEMETRY).dropped == 0
        assert up.snapshot().acked_rows["telemetry"] == 0
        refusal = f"broker refused a publish: Not authorized (0x87) on citynerve/{GW}/telemetry"
        await wait_for(lambda: _error_says(up, refusal))
        assert await consumer.query(lambda s: s.reading_seqs(GW)) == []
        fix_acl(broker)
        await wait_for(lambda: _got(consumer, 30, 1))
    assert await consumer.query(lambda s: s.reading_seqs(GW)) == list(range(1, 31))
    assert (await outbox.stats()).lane(Lane.TELEMETRY).rows == 0


async def _sessions_at_least(up: Uplink, n: int) -> bool:
    return up.snapshot().reconnects + 1 >= n


def _long_alarm(i: int, chars: int) -> Event:
    return Event(
        "smoke-3f", "smoke", EventState.RAISED, Severity.CRITICAL, 1_780_000_000.0 + i, message="x" * chars
    )


@pytest.mark.parametrize("broker_config", ["max_packet_size 8192"])
async def test_a_row_too_large_for_the_broker_is_dropped_announced_and_the_rest_arrives(
    broker: MosquittoBroker, outbox: AsyncOutbox, consumer: PlatformConsumer
) -> None:
    # Events 1-3 (2: 8,000 characters, storable, over 8,192 bytes as a message), readings 4-104 in
    # one block (54: a text of 8,000 characters), event 105.
    await outbox.append([], [alarm(1), _long_alarm(2, 8000), alarm(3)])
    text = Reading("panel-1", "display", "y" * 8000, "", 1_780_000_100.0)
    await outbox.append([*readings(50), text, *readings(50, start=50)], [alarm(4)])
    cfg = upstream(broker, max_batch_bytes=4096)
    async with Uplink(cfg, gateway_id=GW, outbox=outbox, inventory=lambda: INVENTORY) as up:
        await wait_for(lambda: _got(consumer, 100, 5))  # 3 alarms and 2 notices
        snap: UplinkState = up.snapshot()
    assert snap.reconnects == 0 and snap.last_error is None  # the broker never cut the session
    assert await consumer.query(lambda s: s.reading_seqs(GW)) == [*range(4, 54), *range(55, 105)]
    events = await consumer.query(lambda s: s.events(GW))
    assert [e["seq"] for e in events if e["kind"] == "smoke"] == [1, 3, 105]
    notices = [e["attrs"] for e in events if e["kind"] == "outbox_dropped"]
    assert sorted((a["lane"], a["first_seq"], a["last_seq"], a["count"], a["reason"]) for a in notices) == [
        ("event", 2, 2, 1, "too_large"),
        ("telemetry", 54, 54, 1, "too_large"),
    ]
    # The chains link over the dropped rows: no gap for the platform to wait on.
    lanes = await consumer.query(lambda s: [v for v in s.lanes() if v.gateway_id == GW])
    assert {v.lane: (v.open_gap, v.contiguous) for v in lanes} == {
        "event": (None, max(e["seq"] for e in events)),
        "telemetry": (None, 104),
    }
    stats = await outbox.stats()
    assert stats.dropped_by == {"too_large": 2}


@pytest.mark.parametrize("broker_config", ["max_packet_size 8192"])
async def test_an_inventory_over_the_brokers_limit_is_not_published_and_rows_flow(
    broker: MosquittoBroker, outbox: AsyncOutbox, consumer: PlatformConsumer
) -> None:
    devices = [{**INVENTORY[0], "device_id": f"wm-{i}"} for i in range(40)]  # about 14 kB
    await outbox.append(readings(20), [alarm(1)])
    cfg = upstream(broker)
    async with Uplink(cfg, gateway_id=GW, outbox=outbox, inventory=lambda: devices) as up:
        await wait_for(lambda: _got(consumer, 20, 1))
        snap = up.snapshot()
    assert snap.reconnects == 0
    assert snap.last_error is not None and snap.last_error.startswith("inventory not published: ")
    assert "over the broker's maximum packet size of 8192" in snap.last_error
    assert await consumer.query(lambda s: s.document(GW, "inventory")) is None


@pytest.mark.parametrize("broker_config", ["max_packet_size 8192"])
async def test_resend_inventory_over_the_brokers_limit_fails_saying_why(
    broker: MosquittoBroker, outbox: AsyncOutbox
) -> None:
    devices = [{**INVENTORY[0], "device_id": f"wm-{i}"} for i in range(40)]  # about 14 kB
    cfg = upstream(broker, commands={"enabled": True, "hmac_key_file": str(platform_key_file())})
    target = BuildingTarget()
    async with (
        Uplink(cfg, gateway_id=GW, outbox=outbox, inventory=lambda: devices, commands=target) as up,
        aiomqtt.Client(broker.host, broker.port) as platform,
    ):
        await wait_for(lambda: _connected(up))
        await platform.subscribe(f"citynerve/{GW}/cmd/result", qos=1)
        command = PLATFORM_SIGNER.command(GW, "resend_inventory")
        await platform.publish(f"citynerve/{GW}/cmd", CommandSigner.payload(command), qos=1)
        async with asyncio.timeout(20):
            async for msg in platform.messages:
                result = json.loads(bytes(msg.payload))  # type: ignore[arg-type]
                if result["command_id"] == command["id"]:
                    break
        snap = up.snapshot()
    validate_message("cmd/result", result)
    assert (result["outcome"], result["reason"], result["result"]) == ("failed", "too_large", None)
    assert result["detail"].startswith("inventory not published: ")
    assert "over the broker's maximum packet size of 8192" in result["detail"]
    assert snap.reconnects == 0 and snap.connected  # the session goes on


async def _connected(up: Uplink) -> bool:
    return up.snapshot().connected


@pytest.mark.parametrize("broker_config", ["max_packet_size 6000"])
async def test_sparkplug_drops_a_record_too_large_for_the_broker_and_sends_the_rest(
    broker: MosquittoBroker, outbox: AsyncOutbox, tmp_path: Path
) -> None:
    await outbox.set_destinations({"scada": tuple(Lane)})
    await outbox.append(readings(5), [])
    await outbox.append([Reading("panel-1", "display", "x" * 8000, "", 1_780_000_100.0)], [])  # seq 6
    await outbox.append(readings(5, start=5), [alarm(1)])  # 7-11, 12
    cfg = upstream(broker, id="scada", encoding="sparkplug-b")
    async with Host(broker) as host:
        up = SparkplugUplink(cfg, gateway_id=GW, outbox=outbox, devices={}, state_dir=tmp_path)
        task = asyncio.create_task(up.run())
        try:
            await wait_for(lambda: _position(outbox, "scada", Lane.TELEMETRY, 11))
            await wait_for(lambda: _position(outbox, "scada", Lane.EVENT, 13))  # 13: the notice
        finally:
            await stop_task(task)
    assert up.session.sessions == 1 and up.snapshot().last_error is None
    assert sorted(set(host.seqs())) == [*range(1, 6), *range(7, 14)]
    stats = await outbox.stats()
    assert stats.dropped_by == {"too_large": 1} and all(s.rows == 0 for s in stats.lanes)


@pytest.mark.parametrize("acl_rules", [NO_TELEMETRY])
async def test_sparkplug_a_refused_ddata_advances_no_position(
    broker: MosquittoBroker, outbox: AsyncOutbox, tmp_path: Path
) -> None:
    await outbox.set_destinations({"scada": tuple(Lane)})
    await outbox.append(readings(5), [])
    cfg = upstream(broker, id="scada", encoding="sparkplug-b")
    async with Host(broker) as host:
        up = SparkplugUplink(cfg, gateway_id=GW, outbox=outbox, devices={}, state_dir=tmp_path)
        task = asyncio.create_task(up.run())
        try:
            refusal = f"broker refused a publish: Not authorized (0x87) on spBv1.0/citynerve/DDATA/{GW}/wm-1"
            await wait_for(lambda: _error_says(up, refusal))
            assert not await _position(outbox, "scada", Lane.TELEMETRY, 1)
            assert (await outbox.stats()).lane(Lane.TELEMETRY).rows == 5
            fix_acl(broker)
            await wait_for(lambda: _position(outbox, "scada", Lane.TELEMETRY, 5))
        finally:
            await stop_task(task)
    assert sorted(set(host.seqs())) == [1, 2, 3, 4, 5]
