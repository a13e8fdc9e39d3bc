"""Uplinks and the outbox's on_commit (issue 16): a stopped uplink leaves nothing registered on the
outbox (the runtime replaces uplinks on reload: the old ones must not stay reachable from it), and
the Sparkplug destination learns of new rows from the commit, without polling: a row committed
while it is idle goes out."""

from __future__ import annotations

import asyncio
import gc
import weakref
from pathlib import Path

from citynerve.gateway.api import stop_task
from citynerve.gateway.store import AsyncOutbox, Lane, position_key
from citynerve.gateway.uplink import Uplink
from citynerve.gateway.uplink.sparkplug import SparkplugUplink
from citynerve.hil.platform import MosquittoBroker
from tests.uplink.conftest import alarm, readings, upstream, wait_for

GW = "gw-test"


async def _acked(ob: AsyncOutbox, destination: str, lane: Lane, seq: int) -> bool:
    raw = await ob.get(position_key(destination, lane))
    return raw is not None and int(raw) >= seq


async def test_a_stopped_uplink_is_released_by_the_outbox(tmp_path: Path, broker: MosquittoBroker) -> None:
    async with AsyncOutbox(tmp_path / "outbox.sqlite", synchronous="normal") as ob:
        await ob.set_destinations({"city": tuple(Lane), "scada": tuple(Lane)})
        await ob.append(readings(10), [])
        json_up = Uplink(upstream(broker, id="city"), gateway_id=GW, outbox=ob, inventory=lambda: [])
        spark = SparkplugUplink(
            upstream(broker, id="scada", encoding="sparkplug-b"),
            gateway_id=GW,
            outbox=ob,
            devices={},
            state_dir=tmp_path,
        )
        stask = asyncio.create_task(spark.run())
        async with json_up:
            await wait_for(lambda: _acked(ob, "city", Lane.TELEMETRY, 10), timeout_s=30)
            await wait_for(lambda: _acked(ob, "scada", Lane.TELEMETRY, 10), timeout_s=30)
        await stop_task(stask)
        refs = [weakref.ref(json_up), weakref.ref(spark)]
        del json_up, spark, stask
        gc.collect()
        assert [r() for r in refs] == [None, None]
        await ob.append(readings(1, 10), [])  # no callback of a stopped uplink runs


async def test_sparkplug_destination_sends_a_row_committed_while_idle(
    tmp_path: Path, broker: MosquittoBroker
) -> None:
    async with AsyncOutbox(tmp_path / "outbox.sqlite", synchronous="normal") as ob:
        await ob.set_destinations({"scada": tuple(Lane)})
        await ob.append(readings(5), [])
        spark = SparkplugUplink(
            upstream(broker, id="scada", encoding="sparkplug-b"),
            gateway_id=GW,
            outbox=ob,
            devices={},
            state_dir=tmp_path,
        )
        task = asyncio.create_task(spark.run())
        try:
            await wait_for(lambda: _acked(ob, "scada", Lane.TELEMETRY, 5), timeout_s=30)
            # Idle now: the feeder waits for a commit (it no longer polls). The alarm must go out.
            await ob.append([], [alarm(1)])
            await wait_for(lambda: _acked(ob, "scada", Lane.EVENT, 6), timeout_s=30)
        finally:
            await stop_task(task)
