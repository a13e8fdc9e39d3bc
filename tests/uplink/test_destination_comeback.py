"""A destination removed from the config and added again (two real Mosquittos): the rows the other
destination acknowledged meanwhile were never sent to it; its platform is told of exactly them."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from citynerve.gateway.store import AsyncOutbox, Lane
from citynerve.gateway.uplink import Uplink
from citynerve.hil.platform import MosquittoBroker, PlatformConsumer
from tests.uplink.conftest import INVENTORY, alarm, readings, upstream, wait_for

GW = "gw-test"


async def run_until(
    ob: AsyncOutbox, brokers: dict[str, MosquittoBroker], done: Any, wants: dict[str, tuple[Lane, ...]]
) -> None:
    """The destinations `wants` set (as `register_destinations` does at a start), their uplinks run
    until `done()` holds and the outbox is empty, then stop."""
    await ob.set_destinations(wants)
    ups = [
        Uplink(upstream(brokers[d], id=d), gateway_id=GW, outbox=ob, inventory=lambda: INVENTORY)
        for d in wants
    ]
    for u in ups:
        await u.__aenter__()
    try:
        await wait_for(done, timeout_s=60)
        await wait_for(lambda: _empty(ob), timeout_s=30)
    finally:
        for u in ups:
            await u.__aexit__(None, None, None)


async def _empty(ob: AsyncOutbox) -> bool:
    return all(s.rows == 0 for s in (await ob.stats()).lanes)


async def test_a_destination_added_again_is_told_of_the_rows_that_left_while_it_was_out(
    tmp_path: Path,
) -> None:
    brokers = {d: MosquittoBroker(workdir=tmp_path / d) for d in ("city", "district")}
    for d, b in brokers.items():
        (tmp_path / d).mkdir()
        b.start()
    both = {"city": tuple(Lane), "district": tuple(Lane)}
    try:
        async with (
            AsyncOutbox(tmp_path / "outbox.sqlite", synchronous="normal") as ob,
            PlatformConsumer(host="127.0.0.1", port=brokers["city"].port, db_path=tmp_path / "c.db") as city,
            PlatformConsumer(
                host="127.0.0.1", port=brokers["district"].port, db_path=tmp_path / "d.db"
            ) as dist,
        ):
            await city.wait_connected()
            await dist.wait_connected()

            async def held(c: PlatformConsumer, n: int) -> bool:
                return len(await c.query(lambda s: s.reading_seqs(GW))) >= n

            await ob.append(readings(100), [alarm(1)])  # readings 1-100, alarm 101
            await run_until(ob, brokers, lambda: _both(held(city, 100), held(dist, 100)), both)
            first, last = await ob.append(readings(200, start=100), [alarm(2)])  # 102-301, alarm 302
            await run_until(ob, brokers, lambda: held(city, 300), {"city": tuple(Lane)})  # district left out
            await ob.append(readings(50, start=300), [])  # after the notices
            await run_until(ob, brokers, lambda: held(dist, 150), both)  # district added again

            got = set(await dist.query(lambda s: s.reading_seqs(GW)))
            missing = set(range(first, last)) - got
            assert missing == set(range(102, 302))
            notices = {
                e["attrs"]["lane"]: e["attrs"]
                for e in await dist.query(lambda s: s.events(GW))
                if e["kind"] == "outbox_dropped"
            }
            tele = notices["telemetry"]
            assert tele["reason"] == "destination_absent" and tele["count"] == len(missing) == 200
            covered = set(range(tele["first_seq"], tele["last_seq"] + 1))
            assert missing <= covered and not covered & got  # exactly the readings it lost
            assert (
                notices["event"]["count"] == 1
                and notices["event"]["first_seq"] <= 302 <= notices["event"]["last_seq"]
            )
            assert 302 not in await dist.query(lambda s: s.event_seqs(GW))
            assert not [e for e in await city.query(lambda s: s.events(GW)) if e["kind"] == "outbox_dropped"]
    finally:
        for b in brokers.values():
            b.close()


async def _both(a: Any, b: Any) -> bool:
    first, second = await a, await b  # (both awaited)
    return bool(first and second)


async def test_a_destination_put_back_beside_default_alone_is_told_its_loss_once(tmp_path: Path) -> None:
    """`default` (the first `[[upstream]]`, no id) alone while `fire` is out of the config, its
    broker down, the size cap trimming: those trims' notices carried no `destinations` and went
    whole to fire once it was back, beside its `destination_absent` notice for the same rows (its
    platform was told 138,400 lost of 69,200). Each platform is now told its own loss once."""
    brokers = {d: MosquittoBroker(workdir=tmp_path / d) for d in ("default", "fire")}
    for d, b in brokers.items():
        (tmp_path / d).mkdir()
        b.start()
    both = {"default": tuple(Lane), "fire": tuple(Lane)}
    db = tmp_path / "outbox.sqlite"
    try:
        async with (
            PlatformConsumer(
                host="127.0.0.1", port=brokers["default"].port, db_path=tmp_path / "d.db"
            ) as city,
            PlatformConsumer(host="127.0.0.1", port=brokers["fire"].port, db_path=tmp_path / "f.db") as fire,
        ):
            await city.wait_connected()
            await fire.wait_connected()

            async def told(c: PlatformConsumer) -> int:
                events = await c.query(lambda s: s.events(GW))
                return sum(e["attrs"]["count"] for e in events if e["kind"] == "outbox_dropped")

            async def held(c: PlatformConsumer, n: int) -> bool:
                return len(await c.query(lambda s: s.reading_seqs(GW))) >= n

            async with AsyncOutbox(db, synchronous="normal", max_bytes=120_000) as ob:
                await ob.append(readings(50), [])
                await run_until(ob, brokers, lambda: _both(held(city, 50), held(fire, 50)), both)
            brokers["default"].stop()
            async with AsyncOutbox(db, synchronous="normal", max_bytes=120_000) as ob:  # fire left out
                await ob.set_destinations({"default": tuple(Lane)})
                for i in range(800):  # default's broker is down: the cap trims
                    await ob.append(readings(100, start=100 + i * 100), [])
            await wait_for(lambda: _true(not city.connected.is_set()))
            brokers["default"].start()
            await city.wait_connected()  # subscribed again before default's uplink publishes
            async with AsyncOutbox(db, synchronous="normal", max_bytes=120_000) as ob:  # fire put back
                await ob.set_destinations(both)
                lost = (await ob.stats()).dropped_by["size_cap"]
                stats = await ob.destination_stats()

                async def told_both() -> bool:
                    return await told(fire) >= lost and await told(city) >= lost

                await run_until(ob, brokers, told_both, both)
            assert lost > 0 and stats["fire"]["dropped"]["telemetry"] == lost
            assert await told(fire) == lost  # once: its destination_absent notice, not the trims too
            assert await told(city) == lost
    finally:
        for b in brokers.values():
            b.close()


async def _true(value: bool) -> bool:
    return value
