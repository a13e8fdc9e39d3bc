"""Each destination's own figures on the wire (issue 16 D1): real Mosquittos, the reference platform
consumer. The status message of each destination names it and carries *its* `backlog` and
`dropped`; when the size cap drops rows one destination had not got, only that destination counts
them and receives an `outbox_dropped` notice, with `count` rewritten to its own loss."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import AsyncExitStack, asynccontextmanager
from pathlib import Path
from typing import Any

import jsonschema

from citynerve.gateway.api import Reading
from citynerve.gateway.store import AsyncOutbox, Lane
from citynerve.gateway.uplink import Uplink, UpstreamConfig
from citynerve.gateway.uplink.destinations import register_destinations
from citynerve.hil.platform import MosquittoBroker, PlatformConsumer
from citynerve.hil.platform.consumer import Arrival
from tests.uplink.conftest import INVENTORY, alarm, upstream, validate_message, wait_for

GW = "gw-status"
BATCHES, PER_BATCH = 12, 500


def _reading(i: int) -> Reading:
    # values that do not compress away: a 64 KiB outbox overflows within a few thousand readings
    return Reading(f"meter-{i % 97}", f"p{i % 13}", i * 1.000_123_7, "kWh", 1_780_000_000.0 + i)


class Centre:
    """A platform: the reference consumer on one broker and topic prefix, and the statuses it got."""

    def __init__(self, consumer: PlatformConsumer) -> None:
        self.consumer = consumer
        self.statuses: list[dict[str, Any]] = []

    async def events(self, kind: str) -> list[dict[str, Any]]:
        return [e for e in await self.consumer.query(lambda s: s.events(GW)) if e["kind"] == kind]

    def last_status(self) -> dict[str, Any]:
        return self.statuses[-1] if self.statuses else {}


@asynccontextmanager
async def _centre(broker: MosquittoBroker, prefix: str, db: Path) -> AsyncIterator[Centre]:
    errors: list[str] = []
    centre: Centre

    def check(kind: str, body: dict[str, Any]) -> None:
        try:
            validate_message(kind, body)
        except jsonschema.ValidationError as err:
            errors.append(f"{kind}: {err.message}")
            raise

    def arrived(a: Arrival) -> None:
        if a.kind == "status" and a.gateway_id == GW:
            centre.statuses.append(a.body)

    consumer = PlatformConsumer(
        host=broker.host, port=broker.port, db_path=db, topic_prefix=prefix, group=prefix,
        validate=check, on_arrival=arrived,
    )  # fmt: skip
    centre = Centre(consumer)
    async with consumer:
        await consumer.wait_connected()
        yield centre
    assert not errors and consumer.invalid == 0, errors[:5]


def _figures(status: dict[str, Any]) -> tuple[Any, Any, Any]:
    return status.get("destination"), status.get("backlog"), status.get("dropped")


async def test_each_destination_reports_its_own_backlog_and_losses(tmp_path: Path) -> None:
    city_broker = MosquittoBroker(workdir=tmp_path / "city")
    street_broker = MosquittoBroker(workdir=tmp_path / "street")
    for b in (city_broker, street_broker):
        b.workdir.mkdir()
        b.start()
    street_broker.stop()  # the street centre is down from the start
    async with AsyncExitStack() as stack:
        stack.callback(city_broker.close)
        stack.callback(street_broker.close)
        ob = await stack.enter_async_context(
            AsyncOutbox(tmp_path / "outbox.sqlite", max_bytes=64 * 1024, synchronous="normal")
        )
        cfgs: dict[str, UpstreamConfig] = {
            "city": upstream(city_broker, id="city", status_interval_s=0.3),
            "street": upstream(street_broker, id="street", status_interval_s=0.3),
            # the district centre shares the street's broker (down) and wants one meter only
            "district": upstream(
                street_broker,
                id="district",
                topic_prefix="district",
                filter={"devices": ["meter-1"]},
                status_interval_s=0.3,
            ),
            "fire": upstream(
                city_broker,
                id="fire",
                topic_prefix="fire",
                filter={"lanes": ["event"]},
                status_interval_s=0.3,
            ),
        }
        await register_destinations(ob, list(cfgs.values()))
        city = await stack.enter_async_context(_centre(city_broker, "citynerve", tmp_path / "city.db"))
        fire = await stack.enter_async_context(_centre(city_broker, "fire", tmp_path / "fire.db"))
        ups = {n: Uplink(c, gateway_id=GW, outbox=ob, inventory=lambda: INVENTORY) for n, c in cfgs.items()}
        for u in ups.values():
            await stack.enter_async_context(u)

        await ob.append([], [alarm(0)])
        for batch in range(BATCHES):  # the city keeps up; the street centre is down
            _, last = await ob.append([_reading(batch * PER_BATCH + i) for i in range(PER_BATCH)], [])
            await wait_for(lambda last=last: _acked(ob, "city", last), timeout_s=20)
        before = await ob.destination_stats()
        lost = before["street"]["dropped"]["telemetry"]
        assert lost > 0 and before["street"]["dropped"]["event"] == 0
        assert before["street"]["backlog"]["telemetry"] + lost == BATCHES * PER_BATCH
        # The cap dropped the oldest readings, i = 0..lost-1; the district wanted meter-1's only.
        meter_1 = [i for i in range(BATCHES * PER_BATCH) if i % 97 == 1]
        district_lost = sum(i < lost for i in meter_1)
        assert before["district"]["dropped"] == {"event": 0, "telemetry": district_lost}
        assert before["district"]["backlog"] == before["street"]["backlog"]  # (every row of its lanes)
        assert before["city"]["dropped"] == {"event": 0, "telemetry": 0}
        assert before["fire"]["dropped"] == {"event": 0}
        assert ups["street"].snapshot().connected is False
        # What the outbox announced: how many rows of each drop every destination had not got.
        notices = [r.record for r in await ob.peek(Lane.EVENT, after_seq=0, limit=500)]
        notices = [e for e in notices if e.kind == "outbox_dropped"]
        assert notices and all(
            set(n.attrs["destinations"]) == {"city", "street", "district"} for n in notices
        )
        assert all(n.attrs["destinations"]["city"] == 0 for n in notices)
        counts = {d: sorted(n.attrs["destinations"][d] for n in notices) for d in ("street", "district")}
        print(f"street lost {lost}, district {district_lost}, notices {counts}")
        assert 0 < sum(counts["street"]) <= lost  # (later drops wait, merged, for the next notice)
        assert 0 < sum(counts["district"]) <= district_lost

        # The city and the fire centre: their own figures, nothing queued, nothing lost, no notice.
        async def settled(centre: Centre, name: str, lanes: tuple[str, ...]) -> bool:
            zero = dict.fromkeys(lanes, 0)
            return _figures(centre.last_status()) == (name, zero, zero)

        await wait_for(lambda: settled(city, "city", ("event", "telemetry")), timeout_s=20)
        await wait_for(lambda: settled(fire, "fire", ("event",)), timeout_s=20)
        assert await city.events("outbox_dropped") == [] and await fire.events("outbox_dropped") == []
        assert len(await fire.events("smoke")) == 1

        # The street and district centres come back (the gateway restarts their uplinks): the birth
        # status says what was queued for each and what each lost; then they drain, and their
        # status says nothing is queued.
        await ups["street"].stop()
        await ups["district"].stop()
        street_broker.start()
        wanted = {"street": lost, "district": district_lost}
        for name in ("street", "district"):
            prefix = "citynerve" if name == "street" else name
            centre = await stack.enter_async_context(_centre(street_broker, prefix, tmp_path / f"{name}.db"))
            ups[name] = await stack.enter_async_context(
                Uplink(cfgs[name], gateway_id=GW, outbox=ob, inventory=lambda: INVENTORY)
            )
            await wait_for(lambda c=centre: _any(c.statuses), timeout_s=20)
            birth = centre.statuses[0]
            assert birth["state"] == "online"
            assert _figures(birth) == (name, before[name]["backlog"], {"event": 0, "telemetry": wanted[name]})
            await wait_for(lambda c=centre, n=name: settled_dropped(c, n, wanted[n]), timeout_s=30)
            got = await centre.events("outbox_dropped")
            assert sorted(e["attrs"]["count"] for e in got) == counts[name]  # its own loss, per notice
            assert all("destinations" not in e["attrs"] for e in got)
            lanes = await centre.consumer.query(
                lambda s: {v.lane: v for v in s.lanes() if v.gateway_id == GW}
            )
            assert all(v.gaps_seen == 0 and v.open_gap is None for v in lanes.values())
            readings = await centre.consumer.query(lambda s: s.readings(GW))
            if name == "street":
                assert len(readings) == before["street"]["backlog"]["telemetry"]
            else:  # meter-1's readings the cap left
                assert len(readings) == len(meter_1) - district_lost
                assert {r["device_id"] for r in readings} == {"meter-1"}
        await wait_for(lambda: _outbox_empty(ob), timeout_s=20)


async def settled_dropped(centre: Centre, name: str, lost: int) -> bool:
    return _figures(centre.last_status()) == (
        name,
        {"event": 0, "telemetry": 0},
        {"event": 0, "telemetry": lost},
    )


async def _any(items: list[Any]) -> bool:
    return bool(items)


async def _acked(ob: AsyncOutbox, destination: str, seq: int) -> bool:
    return (await ob.destination_stats())[destination]["acked"]["telemetry"] >= seq


async def _outbox_empty(ob: AsyncOutbox) -> bool:
    return all(s.rows == 0 for s in (await ob.stats()).lanes)
