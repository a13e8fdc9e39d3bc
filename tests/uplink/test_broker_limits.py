"""What a broker refuses, against a real Mosquitto: an MQTT 5 PUBACK with a failure reason code (an
ACL that does not let the gateway write a topic) deletes no row and ends the session naming the
refusal; a row or an inventory over the broker's Maximum Packet Size (CONNACK) never blocks what
follows it: the row is dropped as `too_large` and announced, the inventory is not published.
Both encodings (JSON v1, Sparkplug B)."""

from __future__ import annotations

import asyncio
import signal
from collections.abc import Iterator
from pathlib import Path

import pytest

from citynerve.gateway.api import stop_task
from citynerve.gateway.store import AsyncOutbox, Lane, position_key
from citynerve.gateway.uplink import Uplink
from citynerve.gateway.uplink.sparkplug import SparkplugUplink
from citynerve.hil.platform import MosquittoBroker, PlatformConsumer
from tests.uplink.conftest import INVENTORY, alarm, readings, upstream, wait_for
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
