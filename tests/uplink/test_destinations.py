"""Several destinations on one outbox (issue 16 D1): two real Mosquittos, one stopped; a filtered
events-only destination; rows leave the outbox once every destination that wants them has them."""

from __future__ import annotations

from pathlib import Path

from citynerve.gateway.store import AsyncOutbox, Lane
from citynerve.gateway.uplink import Uplink
from citynerve.hil.platform import MosquittoBroker, PlatformConsumer
from tests.uplink.conftest import INVENTORY, alarm, readings, upstream, wait_for

GW = "gw-test"


async def lane_rows(consumer: PlatformConsumer, lane: str) -> int:
    lanes = await consumer.query(lambda s: {v.lane: v for v in s.lanes() if v.gateway_id == GW})
    v = lanes.get(lane)
    return v.rows if v else 0


async def test_one_destination_down_never_delays_another(tmp_path: Path) -> None:
    city, street = MosquittoBroker(workdir=tmp_path / "a"), MosquittoBroker(workdir=tmp_path / "b")
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    city.start()
    street.start()
    street_port = street.port
    street.stop()  # the street centre is down from the start
    try:
        async with (
            AsyncOutbox(tmp_path / "outbox.sqlite", synchronous="normal") as ob,
            PlatformConsumer(host=city.host, port=city.port, db_path=tmp_path / "city.db") as c_city,
        ):
            await c_city.wait_connected()
            await ob.set_destinations({"city": tuple(Lane), "street": tuple(Lane), "fire": (Lane.EVENT,)})
            await ob.append(readings(500), [alarm(1)])
            cfg_city = upstream(city, id="city", max_batch_readings=50)
            cfg_street = upstream(f"mqtt://127.0.0.1:{street_port}", id="street")
            cfg_fire = upstream(
                city, id="fire", topic_prefix="fire", filter={"lanes": ["event"], "min_severity": "critical"}
            )
            ups = [
                Uplink(cfg, gateway_id=GW, outbox=ob, inventory=lambda: INVENTORY)
                for cfg in (cfg_city, cfg_street, cfg_fire)
            ]
            for u in ups:
                await u.__aenter__()
            try:
                # The city gets everything while the street broker is down.
                await wait_for(lambda: _at_least(c_city, "telemetry", 500), timeout_s=30)
                await wait_for(lambda: _at_least(c_city, "event", 1), timeout_s=30)
                lane = await c_city.query(lambda s: s.lane(GW, "telemetry"))
                assert lane.gaps_seen == 0 and lane.open_gap is None
                # ... but nothing leaves the outbox: the street has not got it.
                stats = await ob.destination_stats()
                assert stats["city"]["backlog"] == {"event": 0, "telemetry": 0}
                assert stats["street"]["backlog"] == {"event": 1, "telemetry": 500}
                assert (await ob.stats()).lane(Lane.TELEMETRY).rows == 500
                assert ups[1].snapshot().connected is False and ups[0].snapshot().connected
                # The street centre comes back: it gets its backlog, then the rows leave.
                street.start()
                async with PlatformConsumer(
                    host=street.host, port=street.port, db_path=tmp_path / "street.db"
                ) as c_street:
                    await c_street.wait_connected()
                    await ob.append(readings(10, start=500), [])
                    await wait_for(lambda: _at_least(c_street, "telemetry", 510), timeout_s=60)
                    await wait_for(lambda: _outbox_empty(ob), timeout_s=30)
                    lane = await c_street.query(lambda s: s.lane(GW, "telemetry"))
                    assert lane.gaps_seen == 0 and lane.open_gap is None
                # The fire centre got the critical alarm only, on its own topics.
                assert ups[2].snapshot().published_rows == {"event": 1, "telemetry": 0}
            finally:
                for u in ups:
                    await u.__aexit__(None, None, None)
    finally:
        city.close()
        street.close()


async def _at_least(consumer: PlatformConsumer, lane: str, n: int) -> bool:
    return await lane_rows(consumer, lane) >= n


async def _outbox_empty(ob: AsyncOutbox) -> bool:
    return all(s.rows == 0 for s in (await ob.stats()).lanes)
