"""MQTT 3.1.1 has no refusal in a PUBACK, and Mosquitto 2.0.11 acknowledges a QoS 1 publish its ACL
denies with a plain PUBACK, then closes the connection (/tmp/rev-north/puback311.py showed it). The
uplink took that PUBACK for a delivery: every alarm of a 3.1.1 destination whose ACL lacked its
events topic was deleted unsent, and the retained status's `acked` moved on over them. Now a 3.1.1
PUBACK settles its message only once the broker sent another packet on the same connection (a
later PUBACK, a PINGRESP). Also: every uplink log line names its destination, and a round that
ended at a refusal says so instead of "no broker reachable". Real Mosquitto, real outbox.
(`config check`'s warning for 3.1.1 without e2e acks: tests/config/test_secrets.py.)"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import aiomqtt
import pytest

from citynerve.gateway.logs import JsonFormatter
from citynerve.gateway.store import AsyncOutbox, Lane
from citynerve.gateway.uplink import Uplink
from citynerve.hil.platform import MosquittoBroker, PlatformConsumer
from tests.uplink.conftest import INVENTORY, alarm, readings, upstream, wait_for
from tests.uplink.test_broker_limits import EVERYTHING, NO_TELEMETRY, fix_acl

GW = "gw-311"
# The platform's provisioning mistake: the gateway may write every topic but its events.
NO_EVENTS = """\
topic read #
topic write citynerve/+/status
topic write citynerve/+/inventory
topic write citynerve/+/telemetry
"""
UPLINK_LOG = "citynerve.gateway.uplink._uplink"


@pytest.fixture
def acl_rules() -> str:
    return EVERYTHING


@pytest.fixture
def broker(tmp_path: Path, acl_rules: str) -> Iterator[MosquittoBroker]:
    (tmp_path / "acl").write_text(acl_rules)
    b = MosquittoBroker(workdir=tmp_path, extra_config=f"acl_file {tmp_path / 'acl'}")
    b.start()
    try:
        yield b
    finally:
        b.close()


async def _rows(ob: AsyncOutbox, lane: Lane) -> int:
    return (await ob.stats()).lane(lane).rows


@pytest.mark.parametrize("acl_rules", [NO_EVENTS])
async def test_a_311_puback_for_a_publish_the_acl_denies_deletes_nothing(
    broker: MosquittoBroker, outbox: AsyncOutbox, consumer: PlatformConsumer
) -> None:
    await outbox.append(readings(20), [alarm(1), alarm(2), alarm(3)])
    cfg = upstream(broker, protocol="3.1.1", keepalive_s=5)
    statuses: list[dict[str, Any]] = []
    async with aiomqtt.Client(broker.host, broker.port) as watcher:
        await watcher.subscribe(f"citynerve/{GW}/status", qos=1)

        async def watch() -> None:
            async for msg in watcher.messages:
                statuses.append(json.loads(bytes(msg.payload)))  # type: ignore[arg-type]

        watching = asyncio.create_task(watch())
        async with Uplink(cfg, gateway_id=GW, outbox=outbox, inventory=lambda: INVENTORY) as up:
            # Every session ends at the first alarm message: acknowledged, then cut.
            await wait_for(lambda: _true(bool(_wills(statuses))))
            assert await _rows(outbox, Lane.EVENT) == 3  # the alarms were deleted unsent here
            await wait_for(lambda: _true(up.snapshot().reconnects >= 3 and len(_wills(statuses)) >= 2))
            snap = up.snapshot()
            assert await _rows(outbox, Lane.EVENT) == 3  # not one alarm deleted unsent
            assert snap.acked_rows["event"] == 0 and snap.ack_seq["event"] == 0
            assert "rows PUBACKed just before it are sent again" in (snap.last_error or "")
            births = [b for b in statuses if b["state"] == "online"]
            assert births and all(b["acked"]["event"] == 0 for b in births)  # no gap hidden
            assert await consumer.query(lambda s: s.event_seqs(GW)) == []
            fix_acl(broker)  # the platform puts its ACL right: every alarm arrives
            await wait_for(lambda: _got_all(consumer, outbox))
        watching.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await watching
    assert await consumer.query(lambda s: s.event_seqs(GW)) == [21, 22, 23]
    assert await consumer.query(lambda s: s.reading_seqs(GW)) == list(range(1, 21))
    # The will (the broker's offline status for the cut connection) names its destination too.
    assert [(w["destination"], w["state"]) for w in _wills(statuses)[:2]] == [("default", "offline")] * 2


def _wills(statuses: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [s for s in statuses if s.get("will")]


async def _true(value: bool) -> bool:
    return value


async def _got_all(consumer: PlatformConsumer, outbox: AsyncOutbox) -> bool:
    events = await consumer.query(lambda s: s.event_seqs(GW))
    empty = await _rows(outbox, Lane.EVENT) == 0 and await _rows(outbox, Lane.TELEMETRY) == 0
    return len(events) == 3 and empty


async def test_a_healthy_311_destination_settles_its_last_message_before_a_quiet_spell(
    broker: MosquittoBroker, outbox: AsyncOutbox, consumer: PlatformConsumer
) -> None:
    # No status refresh in the test's time: only the keepalive's PINGRESP follows the last PUBACK.
    cfg = upstream(broker, protocol="3.1.1", keepalive_s=5, status_interval_s=3600)
    async with Uplink(cfg, gateway_id=GW, outbox=outbox, inventory=lambda: INVENTORY) as up:
        await outbox.append(readings(5), [alarm(1)])
        await wait_for(lambda: _rows_left(outbox, 0), timeout_s=20)  # keepalive 5 s + a pass
        snap = up.snapshot()
    assert snap.acked_rows == {"event": 1, "telemetry": 5} and snap.reconnects == 0
    assert await consumer.query(lambda s: s.reading_seqs(GW)) == [1, 2, 3, 4, 5]


async def test_a_311_stop_settles_what_the_broker_acknowledged_before_its_goodbye(
    broker: MosquittoBroker, outbox: AsyncOutbox
) -> None:
    # A minute's keepalive: nothing follows the last PUBACK but the goodbye (offline status).
    cfg = upstream(broker, protocol="3.1.1", keepalive_s=60, status_interval_s=3600)
    await outbox.append(readings(5), [])
    async with Uplink(cfg, gateway_id=GW, outbox=outbox, inventory=lambda: INVENTORY) as up:
        await wait_for(lambda: _true(up.snapshot().published_msgs >= 1))
        assert await _rows(outbox, Lane.TELEMETRY) == 5  # PUBACKed, not yet followed by anything
    assert await _rows(outbox, Lane.TELEMETRY) == 0  # no duplicate after a restart


async def _rows_left(ob: AsyncOutbox, n: int) -> bool:
    return await _rows(ob, Lane.EVENT) + await _rows(ob, Lane.TELEMETRY) == n


async def test_every_uplink_log_line_names_its_destination(
    broker: MosquittoBroker, outbox: AsyncOutbox, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger=UPLINK_LOG)
    city = upstream(broker, id="city")
    fire = upstream(broker, id="fire", topic_prefix="fire")
    async with (
        Uplink(city, gateway_id=GW, outbox=outbox, inventory=lambda: INVENTORY),
        Uplink(fire, gateway_id=GW, outbox=outbox, inventory=lambda: INVENTORY),
    ):
        await wait_for(lambda: _true(len(_lines(caplog, "connected to")) == 2))
        broker.kill()
        await wait_for(lambda: _true(len(_lines(caplog, "next attempt")) >= 2))
    records = [r for r in caplog.records if r.name == UPLINK_LOG]
    assert sorted(r.getMessage() for r in _lines(caplog, "connected to")) == [
        f"uplink[city]: connected to {broker.url}",
        f"uplink[fire]: connected to {broker.url}",
    ]
    for r in records:
        dest = getattr(r, "destination", None)
        assert dest in ("city", "fire") and r.getMessage().startswith(f"uplink[{dest}]: "), r.getMessage()
        assert json.loads(JsonFormatter().format(r))["destination"] == dest


def _lines(caplog: pytest.LogCaptureFixture, text: str) -> list[logging.LogRecord]:
    return [r for r in caplog.records if r.name == UPLINK_LOG and text in r.getMessage()]


@pytest.mark.parametrize("acl_rules", [NO_TELEMETRY])
async def test_a_round_ended_by_a_refusal_is_not_called_unreachable(
    broker: MosquittoBroker, outbox: AsyncOutbox, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger=UPLINK_LOG)
    await outbox.append(readings(10), [])
    cfg = upstream(broker, protocol="5", max_inflight=1)  # one in flight: the refusal is read
    async with Uplink(cfg, gateway_id=GW, outbox=outbox, inventory=lambda: INVENTORY):
        await wait_for(lambda: _true(bool(_lines(caplog, "broker refused a publish (see the error above)"))))
    rounds = [r.getMessage() for r in _lines(caplog, "next attempt")]
    assert not [m for m in rounds if "no broker reachable" in m], rounds
