"""A disabled Sparkplug destination in a real gateway (issue 16 D1): `enabled = false` starts
nothing, whatever the encoding; the JSON v1 destination next to it runs and rows leave the outbox
once it has them (the disabled destination holds none back)."""

from __future__ import annotations

import asyncio
import textwrap
from pathlib import Path

import aiomqtt

from citynerve.gateway.config import load_config
from citynerve.gateway.store import Lane
from citynerve.gateway.uplink.state import LinkState
from citynerve.hil.platform import MosquittoBroker, PlatformConsumer
from citynerve.hil.sim.modbus import ModbusBuilding
from tests.fieldtools.conftest import gateway_toml, run_gateway, wait_for

GW = "gw-test-0001"


async def test_a_disabled_sparkplug_destination_starts_nothing(short_dir: Path) -> None:
    broker = MosquittoBroker(workdir=short_dir)
    broker.start()
    spb: list[str] = []
    try:
        async with ModbusBuilding() as building, aiomqtt.Client(broker.host, broker.port) as watcher:
            await watcher.subscribe("spBv1.0/#", qos=1)
            watch = asyncio.create_task(_collect(watcher, spb))
            host, port = building.endpoint
            extra = textwrap.dedent(
                f"""
                [[upstream]]
                id = "city"
                brokers = ["{broker.url}"]

                [[upstream]]
                id = "scada"
                enabled = false
                encoding = "sparkplug-b"
                brokers = ["{broker.url}"]
                """
            )
            path = short_dir / "gateway.toml"
            text = gateway_toml(host, port, extra=extra)  # readings committed within 0.2 s
            path.write_text(
                text.replace('synchronous = "normal"', 'synchronous = "normal"\ncommit_interval_ms = 200')
            )
            async with (
                PlatformConsumer(host=broker.host, port=broker.port, db_path=short_dir / "city.db") as city,
                run_gateway(load_config(path)) as gw,
            ):
                await city.wait_connected()

                async def city_has_rows() -> bool:
                    lane = await city.query(lambda s: s.lane(GW, "telemetry"))
                    return lane is not None and lane.rows >= 1

                await wait_for(city_has_rows, timeout_s=30)
                assert gw.outbox is not None
                stats = await gw.outbox.destination_stats()
                assert set(stats) == {"city"}  # the outbox waits for no disabled destination
                scada = next(u for u in gw.uplinks if u.destination == "scada")
                assert scada.snapshot().state is LinkState.STOPPED
                city_task, scada_task = gw._uplink_tasks
                assert scada_task.done() and scada_task.exception() is None
                assert not city_task.done()

                # Rows leave the outbox once the city has them.
                async def deleted() -> bool:
                    assert gw.outbox is not None
                    s = await gw.outbox.stats()
                    return s.lane(Lane.TELEMETRY).rows + s.lane(Lane.EVENT).rows < s.next_seq - 1

                await wait_for(deleted, timeout_s=30)
            watch.cancel()
            assert spb == []  # no Sparkplug message ever
    finally:
        broker.close()


async def _collect(client: aiomqtt.Client, out: list[str]) -> None:
    async for m in client.messages:
        out.append(str(m.topic))
