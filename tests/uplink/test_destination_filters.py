"""What a filtered destination receives on the wire (issue 16 D1): a real Mosquitto, the reference
platform consumer as each centre. A district filtered to one device and to events of severity >=
major gets exactly those rows, a fire centre filtered to one event kind gets exactly those, and
both chains have no gap and no duplicate: `prev_seq` links over the rows a filter leaves out, also
across a restart of the uplink and when the left-out rows end a read. The unfiltered city gets
everything; rows leave the outbox once every destination that wants them has acknowledged them."""

from __future__ import annotations

import dataclasses
from collections.abc import AsyncIterator, Iterable
from contextlib import AsyncExitStack, asynccontextmanager
from pathlib import Path
from typing import Any

import jsonschema

from citynerve.gateway.api import Event, EventState, Reading, Severity
from citynerve.gateway.store import AsyncOutbox, Lane, OutboxRow, ReadingBlock, ReadingMark
from citynerve.gateway.uplink import Uplink
from citynerve.gateway.uplink.destinations import DestinationFilter, register_destinations
from citynerve.hil.platform import MosquittoBroker, PlatformConsumer
from tests.uplink.conftest import INVENTORY, PLATFORM_SIGNER, upstream, validate_message, wait_for

GW = "gw-filter"
FILTERS: dict[str, dict[str, Any]] = {
    "city": {},
    "district": {"devices": ["wm-2"], "min_severity": "major"},
    "fire": {"lanes": ["event"], "event_kinds": ["smoke"]},
}


def _readings(devices: Iterable[str], start: int) -> list[Reading]:
    return [
        Reading(d, "flow", float(start + k), "m3/h", 1_780_000_000.0 + start + k)
        for k, d in enumerate(devices)
    ]


def _event(device: str, kind: str, severity: Severity, i: int) -> Event:
    return Event(device, kind, EventState.RAISED, severity, 1_780_000_000.0 + i, rule=kind, message=f"#{i}")


# (readings' devices, events): each batch one append; several left-out runs inside and at the end
BATCHES: list[tuple[list[str], list[Event]]] = [
    (
        ["wm-1", "wm-2", "wm-2", "wm-1", "wm-1", "wm-2"],
        [
            _event("wm-2", "leak", Severity.INFO, 1),
            _event("wm-2", "leak", Severity.MAJOR, 2),
            _event("smoke-3f", "smoke", Severity.CRITICAL, 3),  # another device: not the district's
            _event("", "uplink_test", Severity.MAJOR, 4),  # the gateway itself: every device filter
            _event("wm-2", "leak", Severity.CRITICAL, 5),
            _event("smoke-3f", "smoke", Severity.WARNING, 6),
        ],
    ),
    (["wm-1"] * 5, [_event("wm-2", "leak", Severity.MINOR, 7)]),  # all left out by the district
    (["wm-2"] * 3 + ["wm-1"] * 2, [_event("", "uplink_test", Severity.WARNING, 8)]),  # left-out tails
]
LIVE = (
    ["wm-1", "wm-2"],
    [_event("wm-2", "leak", Severity.MAJOR, 9), _event("wm-1", "leak", Severity.MAJOR, 10)],
)


@asynccontextmanager
async def _consumer(
    broker: MosquittoBroker, prefix: str, db: Path, *, signed: bool = False
) -> AsyncIterator[PlatformConsumer]:
    errors: list[str] = []

    def check(kind: str, body: dict[str, Any]) -> None:
        try:
            validate_message(kind, body)
        except jsonschema.ValidationError as err:
            errors.append(f"{kind}: {err.message}")
            raise

    async with PlatformConsumer(
        host=broker.host,
        port=broker.port,
        db_path=db,
        topic_prefix=prefix,
        group=prefix,
        validate=check,
        ack_signer=PLATFORM_SIGNER if signed else None,
    ) as c:
        await c.wait_connected()
        yield c
    assert not errors and c.invalid == 0, errors[:5]


async def _rows(c: PlatformConsumer) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    return await c.query(lambda s: (s.readings(GW), s.events(GW)))


async def _seqs(c: PlatformConsumer) -> set[int]:
    readings, events = await _rows(c)
    return {r["seq"] for r in readings} | {e["seq"] for e in events}


async def _append(ob: AsyncOutbox, batch: tuple[list[str], list[Event]], start: int) -> int:
    devices, events = batch
    await ob.append(_readings(devices, start), events)
    return len(devices) + len(events)


async def test_filtered_destinations_get_exactly_their_rows_with_no_gap(
    broker: MosquittoBroker, tmp_path: Path
) -> None:
    async with AsyncExitStack() as stack:
        ob = await stack.enter_async_context(AsyncOutbox(tmp_path / "outbox.sqlite", synchronous="normal"))
        cfgs = {
            name: upstream(broker, id=name, topic_prefix=name, filter=f, max_batch_readings=4)
            for name, f in FILTERS.items()
        }
        await register_destinations(ob, list(cfgs.values()))
        consumers = {
            n: await stack.enter_async_context(_consumer(broker, n, tmp_path / f"{n}.db")) for n in FILTERS
        }
        total = 0
        for batch in BATCHES:  # a backlog before the uplinks start
            total += await _append(ob, batch, total)

        def uplink(name: str) -> Uplink:
            return Uplink(cfgs[name], gateway_id=GW, outbox=ob, inventory=lambda: INVENTORY)

        ups = {n: uplink(n) for n in FILTERS}
        for u in ups.values():
            await u.__aenter__()
        try:
            city = consumers["city"]

            async def city_has(n: int) -> bool:
                return len(await _seqs(city)) >= n

            await wait_for(lambda: city_has(total), timeout_s=20)
            await wait_for(lambda: _outbox_empty(ob), timeout_s=20)  # every destination got past them
            # New rows in the same sessions: the district's chain went on from its last carried row.
            total += await _append(ob, LIVE, total)
            await wait_for(lambda: city_has(total), timeout_s=20)
            await wait_for(lambda: _outbox_empty(ob), timeout_s=20)
            # The district's chain ends with rows it left out: restart its uplink (the next session
            # starts its chain from the stored link, not from its position) and stop the fire
            # centre's, then new rows arrive.
            await ups["district"].stop()
            await ups["fire"].stop()
            ups["district"] = uplink("district")
            await ups["district"].__aenter__()
            total += await _append(ob, LIVE, total)
            await wait_for(lambda: city_has(total), timeout_s=20)
            want_district = await _wanted(city, FILTERS["district"])
            await wait_for(lambda: _has(consumers["district"], want_district), timeout_s=20)
            # Telemetry is gone (city and district have it, the fire centre does not take it); the
            # live events wait for the fire centre, which wants that lane.
            await wait_for(lambda: _lane_rows(ob, Lane.TELEMETRY, 0), timeout_s=20)
            assert await _lane_rows(ob, Lane.EVENT, len(LIVE[1]))
            ups["fire"] = uplink("fire")
            await ups["fire"].__aenter__()
            await wait_for(lambda: _outbox_empty(ob), timeout_s=20)
            want_fire = await _wanted(city, FILTERS["fire"])
            await wait_for(lambda: _has(consumers["fire"], want_fire), timeout_s=20)
        finally:
            for u in ups.values():
                await u.stop()

        assert await _seqs(city) == set(range(1, total + 1))  # everything, once
        for name, c in consumers.items():
            want = await _wanted(city, FILTERS[name])
            assert await _seqs(c) == want, name  # exactly the wanted rows
            lanes = await c.query(lambda s: {v.lane: v for v in s.lanes() if v.gateway_id == GW})
            for lane, v in lanes.items():
                assert (v.gaps_seen, v.open_gap, v.duplicates) == (0, None, 0), (name, lane, v)
                readings, events = await _rows(c)
                carried = [r["seq"] for r in (readings if lane == "telemetry" else events)]
                # (the goodbye status's `acked` may settle the lane past its last carried row)
                assert v.contiguous >= max(carried) and v.rows == len(carried), (name, lane)
        district_readings, district_events = await _rows(consumers["district"])
        assert {r["device_id"] for r in district_readings} == {"wm-2"}
        assert {(e["device_id"], e["severity"]) for e in district_events} == {
            ("wm-2", "major"),
            ("wm-2", "critical"),
            ("", "major"),
        }
        fire_readings, fire_events = await _rows(consumers["fire"])
        assert fire_readings == [] and {e["kind"] for e in fire_events} == {"smoke"} and len(fire_events) == 2


async def _wanted(city: PlatformConsumer, f: dict[str, Any]) -> set[int]:
    """The seqs a destination with filter `f` wants, from everything the city holds."""
    readings, events = await _rows(city)
    lanes = f.get("lanes", ["event", "telemetry"])
    devices = set(f.get("devices", ())) or None
    kinds = set(f.get("event_kinds", ())) or None
    floor = Severity[f.get("min_severity", "info").upper()]
    out: set[int] = set()
    if "telemetry" in lanes:
        out |= {r["seq"] for r in readings if devices is None or r["device_id"] in devices}
    if "event" in lanes:
        out |= {
            e["seq"]
            for e in events
            if (devices is None or e["device_id"] in devices or e["device_id"] == "")
            and (kinds is None or e["kind"] in kinds)
            and e["severity_level"] >= floor
        }
    return out


async def _has(c: PlatformConsumer, seqs: set[int]) -> bool:
    return seqs <= await _seqs(c)


async def _lane_rows(ob: AsyncOutbox, lane: Lane, n: int) -> bool:
    return (await ob.stats()).lane(lane).rows == n


async def _outbox_empty(ob: AsyncOutbox) -> bool:
    return all(s.rows == 0 for s in (await ob.stats()).lanes)


async def test_end_to_end_destination_settles_the_rows_it_leaves_out(
    broker: MosquittoBroker, tmp_path: Path
) -> None:
    """End-to-end acks name the last row a platform got; rows its filter left out after that row
    are settled with it, not held until the next wanted row (nor sent again on every resend)."""
    cfg = upstream(
        broker,
        id="fire",
        topic_prefix="fire",
        filter={"devices": ["wm-2", "smoke-3f"], "event_kinds": ["smoke"]},
        e2e_ack=True,
        e2e_resend_after_s=0.5,
    )
    async with AsyncOutbox(tmp_path / "outbox.sqlite", synchronous="normal") as ob, AsyncExitStack() as stack:
        await register_destinations(ob, [cfg])
        fire = await stack.enter_async_context(_consumer(broker, "fire", tmp_path / "fire.db", signed=True))
        up = await stack.enter_async_context(
            Uplink(cfg, gateway_id=GW, outbox=ob, inventory=lambda: INVENTORY)
        )
        for i in range(3):  # each time: wanted rows, then rows left out (the last rows of each lane)
            smoke, leak = (
                _event("smoke-3f", "smoke", Severity.CRITICAL, i),
                _event("wm-2", "leak", Severity.MAJOR, i),
            )
            await ob.append(_readings(["wm-2", "wm-1", "wm-1"], 10 * i), [smoke, leak])
            await wait_for(lambda: _outbox_empty(ob), timeout_s=10)
        readings, events = await _rows(fire)
        assert [e["kind"] for e in events] == ["smoke"] * 3
        assert [r["device_id"] for r in readings] == ["wm-2"] * 3
        assert up.snapshot().extra["e2e_rewinds"] == 0  # nothing was outstanding: nothing resent
        lanes = await fire.query(lambda s: {v.lane: v for v in s.lanes() if v.gateway_id == GW})
        for v in lanes.values():
            assert (v.gaps_seen, v.open_gap, v.duplicates) == (0, None, 0), v


def _row(seq: int, e: Event) -> OutboxRow:
    return OutboxRow(seq, Lane.EVENT, e.ts, e)


def _filter(**f: Any) -> DestinationFilter:
    return DestinationFilter.of(upstream("mqtt://127.0.0.1:1", id="x", filter=f))


def test_outbox_notices_reach_every_filter_each_with_its_own_count() -> None:
    """The outbox's own notices pass every device, kind and severity filter; a dropped-rows notice
    goes with `count` set to that destination's loss, to no destination that lost nothing, and
    unchanged with a single destination (no `destinations` attr)."""
    dropped = Event(
        "", "outbox_dropped", EventState.RAISED, Severity.WARNING, 1.0, rule="", message="dropped",
        attrs={"lane": "telemetry", "count": 300, "destinations": {"city": 0, "fire": 120}},
    )  # fmt: skip
    single = dataclasses.replace(dropped, attrs={"lane": "telemetry", "count": 300})
    epoch = Event("", "outbox_new_epoch", EventState.RAISED, Severity.MAJOR, 2.0, rule="", message="new")
    rows = [
        _row(1, dropped),
        _row(2, single),
        _row(3, epoch),
        _row(4, _event("wm-2", "leak", Severity.MAJOR, 4)),
    ]
    strict = _filter(devices=["sd-1"], event_kinds=["smoke"], min_severity="critical")
    got = strict.events(rows, "fire")
    assert [r.seq for r in got] == [1, 2, 3]
    assert got[0].record.attrs == {"lane": "telemetry", "count": 120}  # type: ignore[union-attr]
    assert got[1].record is single
    assert [r.seq for r in strict.events(rows, "city")] == [2, 3]  # it had every dropped row


def test_event_filters_by_device_kind_and_severity() -> None:
    rows = [
        _row(1, _event("wm-2", "leak", Severity.MINOR, 1)),
        _row(2, _event("wm-2", "leak", Severity.MAJOR, 2)),
        _row(3, _event("wm-1", "leak", Severity.CRITICAL, 3)),
        _row(4, _event("", "uplink_test", Severity.MAJOR, 4)),  # the gateway itself: any device filter
        _row(5, _event("wm-2", "smoke", Severity.CRITICAL, 5)),
    ]
    seqs = lambda f, d="x": [r.seq for r in f.events(rows, d)]  # noqa: E731
    assert seqs(_filter()) == [1, 2, 3, 4, 5]
    assert seqs(_filter(devices=["wm-2"], min_severity="major")) == [2, 4, 5]
    assert seqs(_filter(event_kinds=["leak"], min_severity="critical")) == [3]
    assert seqs(_filter(devices=["wm-2"], event_kinds=["smoke", "uplink_test"])) == [4, 5]


def test_telemetry_blocks_are_cut_to_runs_of_the_wanted_devices() -> None:
    devices = ["wm-1", "wm-2", "wm-2", "wm-1", "wm-2", "wm-1", "wm-1"]
    series = [("wm-1", "flow", "m3/h"), ("wm-2", "flow", "m3/h")]
    mark = ReadingMark(capture_mono=5.0, boot_id="b")
    block = ReadingBlock(
        first_seq=11, last_seq=17, series=series, sidx=[0 if d == "wm-1" else 1 for d in devices],
        ts=[float(k) for k in range(7)], quality=[0] * 7, values=[float(k) for k in range(7)],
        marks={4: mark},
    )  # fmt: skip
    assert _filter().blocks([block]) == [block]
    runs = _filter(devices=["wm-2"]).blocks([block])
    assert [(b.first_seq, b.last_seq) for b in runs] == [(12, 13), (15, 15)]
    assert [(s, r.device_id, r.value) for b in runs for s, r in b.readings()] == [
        (12, "wm-2", 1.0),
        (13, "wm-2", 2.0),
        (15, "wm-2", 4.0),
    ]
    assert runs[1].mark_of(15) == mark
    assert _filter(devices=["wm-3"]).blocks([block]) == []
    assert [(b.first_seq, b.last_seq) for b in _filter(devices=["wm-1"]).blocks([block])] == [
        (11, 11),
        (14, 14),
        (16, 17),
    ]
