"""Several destinations on one outbox: a row leaves once every destination that wants it acked it;
drops are accounted per destination (issue 16 D1)."""

from __future__ import annotations

from pathlib import Path

import pytest

from citynerve.gateway.api import Event, EventState, Reading, Severity
from citynerve.gateway.store import Lane, Outbox, read_stats


def reading(i: int) -> Reading:
    # values that do not compress away: the size cap must be reached by a few thousand readings
    return Reading(f"meter-{i % 97}", f"p{i % 13}", i * 1.000_123_7, "kWh", 1_700_000_000.0 + i)


def event(i: int) -> Event:
    return Event("smoke-1", "smoke", EventState.RAISED, Severity.CRITICAL, 1_700_000_000.0 + i)


def test_a_row_leaves_once_every_destination_that_wants_it_acked(tmp_path: Path) -> None:
    db = tmp_path / "d.db"
    with Outbox(db, block_readings=5) as ob:
        ob.set_destinations({"city": tuple(Lane), "district": tuple(Lane), "fire": (Lane.EVENT,)})
        ob.append([reading(i) for i in range(10)], [event(0), event(1)])  # readings 1-10, events 11-12
        assert ob.ack(Lane.TELEMETRY, 10, destination="city") == 0  # district has not got them
        assert ob.ack(Lane.TELEMETRY, 7, destination="district") == 7  # 1-7 acked by both
        assert [r.seq for r in ob.peek(Lane.TELEMETRY)] == [8, 9, 10]
        assert ob.ack(Lane.EVENT, 12, destination="fire") == 0
        assert ob.ack(Lane.EVENT, 12, destination="city") == 0
        assert ob.ack(Lane.EVENT, 11, destination="district") == 1
        with pytest.raises(ValueError):
            ob.ack(Lane.TELEMETRY, 10, destination="fire")  # it does not take telemetry
        stats = ob.destination_stats()
        assert stats["district"]["backlog"] == {"event": 1, "telemetry": 3}
        assert stats["city"]["backlog"] == {"event": 0, "telemetry": 0}
        assert stats["fire"] == {"acked": {"event": 12}, "backlog": {"event": 0}, "dropped": {"event": 0}}
    with Outbox(db, block_readings=5) as ob:  # positions are durable
        ob.set_destinations({"city": tuple(Lane), "district": tuple(Lane), "fire": (Lane.EVENT,)})
        assert ob.position("district", Lane.TELEMETRY) == 7 and ob.position("fire", Lane.EVENT) == 12
        assert ob.ack(Lane.TELEMETRY, 10, destination="district") == 3
        assert ob.peek(Lane.TELEMETRY) == []


def test_size_cap_accounts_drops_per_destination(tmp_path: Path) -> None:
    """A destination that was up to date loses nothing to the cap; the one that was down sees the
    rows it never got as dropped, in its counter and in the notice's `destinations`."""
    with Outbox(tmp_path / "c.db", max_bytes=64 * 1024, synchronous="normal") as ob:
        ob.set_destinations({"city": tuple(Lane), "street": tuple(Lane)})
        for batch in range(40):
            _, last = ob.append([reading(batch * 500 + i) for i in range(500)], [])
            ob.ack(Lane.TELEMETRY, last, destination="city")  # city keeps up; street is down
        stats = ob.destination_stats()
        assert stats["city"]["dropped"]["telemetry"] == 0
        assert stats["street"]["dropped"]["telemetry"] > 0
        assert stats["street"]["backlog"]["telemetry"] + stats["street"]["dropped"]["telemetry"] == 40 * 500
    with Outbox(tmp_path / "c.db", max_bytes=64 * 1024, synchronous="normal") as ob:  # notices announced
        notices = [r.record for r in ob.peek(Lane.EVENT) if r.record.kind == "outbox_dropped"]
        assert notices
        street = sum(n.attrs["destinations"]["street"] for n in notices)
        assert street == stats["street"]["dropped"]["telemetry"]
        assert all(n.attrs["destinations"]["city"] == 0 for n in notices)


def test_a_filtered_destination_counts_only_the_dropped_rows_it_wanted(tmp_path: Path) -> None:
    """A fire centre that takes smoke events only: when the cap drops events it had not got, its
    loss counts the smoke events among them (and the outbox's own notices, which always go), not
    the leak events its filter leaves out."""
    from citynerve.gateway.uplink import UpstreamConfig
    from citynerve.gateway.uplink.destinations import DestinationFilter

    fire = DestinationFilter.of(
        UpstreamConfig.model_validate(
            {
                "id": "fire",
                "brokers": ["mqtt://127.0.0.1:1"],
                "filter": {"lanes": ["event"], "event_kinds": ["smoke"]},
            }
        )
    )
    kinds: dict[int, str] = {}
    with Outbox(tmp_path / "f.db", max_bytes=64 * 1024, synchronous="normal") as ob:
        ob.set_destinations({"city": tuple(Lane), "fire": (Lane.EVENT,)}, keeps={"fire": fire})
        for batch in range(40):
            events = [
                Event("d-1", "smoke" if i % 3 == 0 else "leak", EventState.RAISED, Severity.MAJOR, 1.7e9 + i,
                      message=f"event {batch * 50 + i} " + "x" * 40)
                for i in range(50)
            ]  # fmt: skip
            first, last = ob.append([], events)
            kinds.update(zip(range(first, last + 1), (e.kind for e in events), strict=True))
            ob.ack(Lane.EVENT, last, destination="city")  # the city keeps up; the fire centre is down
        stats = ob.destination_stats()
        dropped = ob.stats().lane(Lane.EVENT).dropped
        left = {r.seq for r in ob.peek(Lane.EVENT, limit=100_000)}
    gone = [kinds[s] for s in kinds if s not in left]
    assert dropped > 0 and "leak" in gone and "smoke" in gone
    # every dropped row that is not one of ours was an outbox notice: wanted too
    assert stats["fire"]["dropped"] == {"event": dropped - gone.count("leak")}
    assert stats["city"]["dropped"] == {"event": 0, "telemetry": 0}


def dropped_notices(ob: Outbox) -> list[Event]:
    rows = ob.peek(Lane.EVENT, limit=10_000)
    return [r.record for r in rows if isinstance(r.record, Event) and r.record.kind == "outbox_dropped"]


def test_a_destination_left_out_is_told_what_left_the_outbox_meanwhile(tmp_path: Path) -> None:
    """A destination removed from the config (or disabled) and later added again resumes at its old
    position: the rows the others acknowledged meanwhile are gone and were never sent to it. It
    gets an `outbox_dropped` notice (reason `destination_absent`) for exactly them, per lane; its
    chain went on as if nothing were missing (4,112 readings lost silently at a real platform)."""
    db = tmp_path / "d.db"
    both = {"city": tuple(Lane), "street": tuple(Lane)}
    with Outbox(db, block_readings=5) as ob:
        ob.set_destinations(both)
        ob.append([reading(i) for i in range(10)], [event(0)])  # readings 1-10, event 11
        for d in both:
            ob.ack(Lane.TELEMETRY, 10, destination=d)
            ob.ack(Lane.EVENT, 11, destination=d)
    with Outbox(db, block_readings=5) as ob:  # the street centre is left out of the config
        ob.set_destinations({"city": tuple(Lane)})
        ob.append([reading(i) for i in range(10, 30)], [event(1), event(2)])  # 12-31, events 32-33
        ob.ack(Lane.TELEMETRY, 26, destination="city")  # 12-26 go; 27-31 stay
        ob.ack(Lane.EVENT, 33, destination="city")
        assert dropped_notices(ob) == []
    with Outbox(db, block_readings=5) as ob:  # ... and put back
        ob.set_destinations(both)
        notices = {n.attrs["lane"]: n.attrs for n in dropped_notices(ob)}
        assert notices["telemetry"] == {
            "lane": "telemetry", "first_seq": 11, "last_seq": 26, "count": 15, "reason": "destination_absent",
            "epoch": ob.epoch, "destinations": {"street": 15},
        }  # fmt: skip
        assert notices["event"] == {
            "lane": "event", "first_seq": 12, "last_seq": 33, "count": 2,
            "reason": "destination_absent", "epoch": ob.epoch, "destinations": {"street": 2},
        }  # fmt: skip
        assert ob.destination_stats()["street"]["dropped"] == {"event": 2, "telemetry": 15}
        assert [r.seq for r in ob.peek(Lane.TELEMETRY, after_seq=ob.position("street", Lane.TELEMETRY))] == [
            27, 28, 29, 30, 31,
        ]  # fmt: skip
    with Outbox(db, block_readings=5) as ob:  # told once
        ob.set_destinations(both)
        assert len(dropped_notices(ob)) == 2


def test_a_destination_left_out_that_missed_nothing_gets_no_notice(tmp_path: Path) -> None:
    db = tmp_path / "d.db"
    with Outbox(db) as ob:
        ob.set_destinations({"city": tuple(Lane), "street": tuple(Lane)})
        ob.append([reading(i) for i in range(10)], [])
        ob.set_destinations({"city": tuple(Lane)})
        ob.append([reading(i) for i in range(10, 20)], [])  # the city does not ack: nothing leaves
        ob.set_destinations({"city": tuple(Lane), "street": tuple(Lane)})
        assert dropped_notices(ob) == []
        assert len(ob.peek(Lane.TELEMETRY, limit=100)) == 20


def test_rows_only_a_removed_destination_waited_for_leave_when_the_destinations_change(
    tmp_path: Path,
) -> None:
    """They stayed until another destination's next ack: months on a quiet site, with the lane's
    oldest age growing all the while."""
    db = tmp_path / "d.db"
    with Outbox(db) as ob:
        ob.set_destinations({"city": tuple(Lane), "street": tuple(Lane), "fire": (Lane.EVENT,)})
        ob.append([reading(i) for i in range(10)], [event(0)])  # 1-10, event 11
        ob.ack(Lane.TELEMETRY, 10, destination="city")
        ob.ack(Lane.EVENT, 11, destination="city")
        ob.ack(Lane.EVENT, 11, destination="fire")
    with Outbox(db) as ob:
        ob.set_destinations({"city": tuple(Lane), "fire": (Lane.EVENT,)})  # the street centre is gone
        stats = ob.stats()
        assert [(s.rows, s.oldest_ts) for s in stats.lanes] == [(0, None), (0, None)]
        assert stats.lanes == read_stats(db).lanes
        ob.set_destinations({"fire": (Lane.EVENT,)})  # telemetry: nobody wants it any more
        ob.append([reading(i) for i in range(3)], [])
        ob.set_destinations({"fire": (Lane.EVENT,)})
        assert ob.peek(Lane.TELEMETRY) == []


def test_a_destination_put_back_beside_default_alone_is_told_its_loss_once(tmp_path: Path) -> None:
    """While `default` (a single `[upstream]`) was the only destination, the size cap's notices
    carried no `destinations`, so they went whole to every destination, also to one put back later
    while they were still queued; its `destination_absent` notice counted the same rows again (a
    fire centre was told 138,400 lost of 69,200). Each destination's notices, as its uplink's
    filter hands them to it, now add up to its loss exactly."""
    from citynerve.gateway.uplink import UpstreamConfig
    from citynerve.gateway.uplink.destinations import DestinationFilter

    def told(ob: Outbox, destination: str) -> int:
        f = DestinationFilter.of(
            UpstreamConfig.model_validate({"id": destination, "brokers": ["mqtt://h:1"]})
        )
        rows = f.events(ob.peek(Lane.EVENT, limit=10_000), destination)
        return sum(r.record.attrs["count"] for r in rows if r.record.kind == "outbox_dropped")

    db, both = tmp_path / "d.db", tuple(Lane)
    with Outbox(db, max_bytes=64 * 1024, synchronous="normal") as ob:
        ob.set_destinations({"default": both, "fire": both})
        ob.append([reading(i) for i in range(10)], [])
        for d in ("default", "fire"):
            ob.ack(Lane.TELEMETRY, 10, destination=d)
    with Outbox(db, max_bytes=64 * 1024, synchronous="normal") as ob:  # fire left out of the config
        ob.set_destinations({"default": both})
        for batch in range(40):  # default's broker is down: the cap trims
            ob.append([reading(10 + batch * 500 + i) for i in range(500)], [])
    with Outbox(db, max_bytes=64 * 1024, synchronous="normal") as ob:  # fire put back
        ob.set_destinations({"default": both, "fire": both})
        dropped = ob.stats().lane(Lane.TELEMETRY).dropped
        stats = ob.destination_stats()
        assert dropped > 0
        assert told(ob, "fire") == dropped  # once: destination_absent, not the trims too
        assert told(ob, "default") == dropped
        # and its losses while it was alone stay counted as its own beside another destination
        assert stats["fire"]["dropped"]["telemetry"] == stats["default"]["dropped"]["telemetry"] == dropped
