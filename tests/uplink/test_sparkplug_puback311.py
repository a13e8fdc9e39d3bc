"""A Sparkplug B destination on MQTT 3.1.1 settles a batch only once the broker sent another packet
after its PUBACK, as the JSON v1 uplink does (tests/uplink/test_puback311.py): Mosquitto 2.0
acknowledges a QoS 1 publish its ACL denies with a plain PUBACK, then closes the connection. The
Sparkplug session settled a batch on that PUBACK alone; in practice the connection's end mostly
cancelled the settling first (this test passed on that code too), so it guards the rule rather
than reproducing a loss. Real Mosquitto with an ACL, real outbox, a host subscribed to spBv1.0/#."""

from __future__ import annotations

import asyncio
from pathlib import Path

from citynerve.gateway.api import stop_task
from citynerve.gateway.store import AsyncOutbox, Lane
from citynerve.gateway.uplink.sparkplug import SparkplugUplink
from citynerve.hil.platform import MosquittoBroker
from tests.uplink.conftest import alarm, readings, upstream, wait_for
from tests.uplink.test_broker_limits import fix_acl
from tests.uplink.test_sparkplug_destination import Host

GW = "gw-311"
# The platform's provisioning mistake: the gateway may publish everything but smoke-3f's data.
NO_SMOKE_DATA = """\
topic read #
topic write spBv1.0/STATE/+
topic write spBv1.0/+/NBIRTH/+
topic write spBv1.0/+/NDEATH/+
topic write spBv1.0/+/NDATA/+
topic write spBv1.0/+/DBIRTH/+/+
topic write spBv1.0/+/DDEATH/+/+
topic write spBv1.0/+/DDATA/+/wm-1
"""


async def test_a_311_puback_for_a_denied_alarm_deletes_nothing(tmp_path: Path) -> None:
    (tmp_path / "acl").write_text(NO_SMOKE_DATA)
    broker = MosquittoBroker(workdir=tmp_path, extra_config=f"acl_file {tmp_path / 'acl'}")
    broker.start()
    try:
        async with AsyncOutbox(tmp_path / "outbox.sqlite", synchronous="normal") as ob, Host(broker) as host:
            await ob.set_destinations({"scada": tuple(Lane)})
            await ob.append(readings(5), [alarm(1)])  # seqs 1-5 readings, 6 the alarm
            cfg = upstream(
                broker,
                id="scada",
                encoding="sparkplug-b",
                protocol="3.1.1",
                keepalive_s=5,
                sparkplug={"group_id": "d7"},
            )
            up = SparkplugUplink(cfg, gateway_id=GW, outbox=ob, devices={}, state_dir=tmp_path)
            task = asyncio.create_task(up.run())
            try:
                # Every session ends at the alarm's DDATA: acknowledged, then cut by the broker.
                await wait_for(lambda: _true(up.session.sessions >= 3), timeout_s=30)
                stats = await ob.stats()
                assert stats.lane(Lane.EVENT).rows == 1, "the denied alarm left the outbox unsent"
                assert not [s for s in host.seqs() if s == 6]
                fix_acl(broker)  # the platform puts its ACL right: the alarm arrives
                await wait_for(lambda: _true(6 in host.seqs()), timeout_s=30)
                await wait_for(lambda: _rows_gone(ob), timeout_s=30)
            finally:
                await stop_task(task)
    finally:
        broker.close()


async def _true(value: bool) -> bool:
    return value


async def _rows_gone(ob: AsyncOutbox) -> bool:
    stats = await ob.stats()
    return stats.lane(Lane.EVENT).rows == 0
