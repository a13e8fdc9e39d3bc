"""The reference platform consumer against bad and hostile messages (docs/reliability.md, the
reference platform): one bad message is refused, counted and logged, never the end of the consumer;
a message under one gateway's topic never moves another gateway's chain; the SQLite store commits
durably before the end-to-end ack."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

import aiomqtt
import pytest

from citynerve.hil.platform import Arrival, MosquittoBroker, PlatformConsumer, PlatformStore, format_arrival
from citynerve.hil.platform.store import InvalidMessage
from tests.uplink.conftest import wait_for

EPOCH = "5e3a09c1d2b4e6f7"


def tele(gw: str, prev: int, seqs: list[int], **row: Any) -> dict[str, Any]:
    """A schema-valid telemetry message; `row` overrides fields of every reading."""
    rows = [
        {"seq": s, "device_id": "wm-1", "point": "flow", "value": 0.5, "unit": "m3/h",
         "ts_ms": 1_795_867_200_000 + s, "quality": "good", **row}
        for s in seqs
    ]  # fmt: skip
    return {
        "schema": "citynerve.telemetry/1", "gateway_id": gw, "epoch": EPOCH, "lane": "telemetry",
        "seq": seqs[-1], "first_seq": seqs[0], "prev_seq": prev, "count": len(seqs),
        "ts": "2026-11-28T12:00:01.250Z", "ts_ms": 1_795_867_201_250, "readings": rows,
    }  # fmt: skip


def event(gw: str, prev: int, seq: int, **over: Any) -> dict[str, Any]:
    """A schema-valid events message of one alarm; `over` overrides fields of the event."""
    e = {
        "seq": seq, "id": f"ev-{seq}", "device_id": "smoke-3f", "kind": "smoke", "state": "raised",
        "severity": "critical", "severity_level": 4, "ts": "2026-11-28T12:00:01.250Z",
        "ts_ms": 1_795_867_201_250, "rule": "smoke", "value": True, "message": "smoke", "attrs": {}, **over,
    }  # fmt: skip
    return {
        "schema": "citynerve.events/1", "gateway_id": gw, "epoch": EPOCH, "lane": "event", "seq": seq,
        "first_seq": seq, "prev_seq": prev, "count": 1, "ts": "2026-11-28T12:00:01.250Z",
        "ts_ms": 1_795_867_201_250, "events": [e],
    }  # fmt: skip


def status(gw: str | None, **over: Any) -> dict[str, Any]:
    body = {
        "schema": "citynerve.status/1",
        "seq": 1,
        "ts": "2026-11-28T12:00:01.250Z",
        "ts_ms": 1,
        "state": "online",
    }
    return {**body, **({} if gw is None else {"gateway_id": gw}), **over}


# (kind, body) published on citynerve/gw-1/<kind>; each one used to end the consumer task for good.
POISON: dict[str, tuple[str, dict[str, Any]]] = {
    "status without gateway_id": ("status", status(None)),
    "inventory without gateway_id": ("inventory", {}),
    "result without gateway_id": ("cmd/result", {"command_id": "x"}),
    "reading seq 2**64": ("telemetry", tele("gw-1", 0, [2**64])),
    "reading ts_ms 2**63": ("telemetry", tele("gw-1", 0, [1], ts_ms=2**63)),
    "reading device_id an object": ("telemetry", tele("gw-1", 0, [1], device_id={"a": 1})),
    "status acked 2**64": ("status", status("gw-1", epoch=EPOCH, acked={"telemetry": 2**64})),
    "reading value with NUL": ("telemetry", tele("gw-1", 0, [1], value="ABC\u0000")),
    "event message with a lone surrogate": ("events", event("gw-1", 0, 2, message="panel \ud800")),
    "body of another gateway": ("telemetry", tele("gw-2", 0, [10**9])),
}


async def _publish(port: int, items: list[tuple[str, dict[str, Any]]], retain: bool = False) -> None:
    async with aiomqtt.Client("127.0.0.1", port, protocol=aiomqtt.ProtocolVersion.V5) as c:
        for topic, body in items:
            await c.publish(topic, json.dumps(body), qos=1, retain=retain)


async def _stored(c: PlatformConsumer, gw: str) -> list[int]:
    return await c.query(lambda s: s.reading_seqs(gw))  # type: ignore[no-any-return]


def _consumer(broker: MosquittoBroker, tmp_path: Path, **kw: Any) -> PlatformConsumer:
    return PlatformConsumer(
        host=broker.host, port=broker.port, db_path=tmp_path / "p.sqlite", group=None, **kw
    )


@pytest.mark.parametrize("case", list(POISON))
async def test_one_bad_message_is_refused_and_the_next_is_stored_and_acked(
    broker: MosquittoBroker, tmp_path: Path, case: str
) -> None:
    kind, body = POISON[case]
    acks: list[dict[str, Any]] = []
    async with aiomqtt.Client(broker.host, broker.port) as watcher, _consumer(broker, tmp_path) as c:
        await watcher.subscribe("citynerve/+/ack", qos=1)
        await c.wait_connected()
        await _publish(broker.port, [(f"citynerve/gw-1/{kind}", body)])
        await wait_for(lambda: _true(c.invalid == 1))
        await _publish(broker.port, [("citynerve/gw-2/telemetry", tele("gw-2", 0, [1, 2, 3]))])
        async with asyncio.timeout(20):
            async for m in watcher.messages:
                acks.append(json.loads(m.payload))  # type: ignore[arg-type]
                if acks[-1]["gateway_id"] == "gw-2" and acks[-1]["seq"] == 3:
                    break
        assert await _stored(c, "gw-2") == [1, 2, 3]
        assert c._task is not None and not c._task.done()
        assert await c.query(lambda s: s.lane("gw-1", "telemetry")) is None  # nothing of it stored
    assert c.invalid == 1 and c.messages >= 1


async def _true(value: bool) -> bool:
    return value


async def test_a_retained_bad_status_does_not_make_a_restarted_consumer_deaf(
    broker: MosquittoBroker, tmp_path: Path
) -> None:
    await _publish(broker.port, [("citynerve/gw-9/status", status(None))], retain=True)
    async with _consumer(broker, tmp_path) as c:
        await c.wait_connected()
        await wait_for(lambda: _true(c.invalid == 1))
        await _publish(broker.port, [("citynerve/gw-3/telemetry", tele("gw-3", 0, [5]))])
        await wait_for(lambda: _has(c, "gw-3", [5]))


async def _has(c: PlatformConsumer, gw: str, seqs: list[int]) -> bool:
    return await _stored(c, gw) == seqs


async def test_a_far_future_alarm_is_shown_and_the_consumer_goes_on(
    broker: MosquittoBroker, tmp_path: Path
) -> None:
    """A schema-valid event with ts_ms 10**17 (year 3,170,843): the live view shows the number (its
    time of day raised "year out of range" and ended the CLI consumer)."""
    lines: list[str] = []
    async with _consumer(broker, tmp_path, on_arrival=lambda a: lines.extend(format_arrival(a))) as c:
        await c.wait_connected()
        await _publish(
            broker.port,
            [
                ("citynerve/gw-1/events", event("gw-1", 0, 5, ts_ms=10**17)),
                ("citynerve/gw-1/telemetry", tele("gw-1", 0, [6, 7])),
            ],
        )
        await wait_for(lambda: _has(c, "gw-1", [6, 7]))
        assert await c.query(lambda s: s.event_seqs("gw-1")) == [5]
    assert c.invalid == 0
    assert any("100000000000000000 gw-1/smoke-3f smoke raised" in line for line in lines), lines


def test_format_arrival_shows_a_time_out_of_range_as_sent() -> None:
    e = event("gw-1", 0, 5, ts_ms=10**17)["events"][0]
    (line,) = format_arrival(Arrival("events", "gw-1", {"events": [e]}, None))
    assert "100000000000000000" in line


async def test_a_message_under_one_gateways_topic_never_moves_anothers_chain(
    broker: MosquittoBroker, tmp_path: Path
) -> None:
    """gw-B's 11..20 are lost in transit; a message on gw-A's topic naming gw-B with seq 10**9 used
    to close that gap (stored by the body's gateway_id) and have gw-B's ack published to gw-A."""
    acks: list[tuple[str, int]] = []
    async with aiomqtt.Client(broker.host, broker.port) as watcher, _consumer(broker, tmp_path) as c:
        await watcher.subscribe("citynerve/+/ack", qos=1)
        await c.wait_connected()
        await _publish(broker.port, [("citynerve/gw-B/telemetry", tele("gw-B", 0, list(range(1, 11))))])
        await wait_for(lambda: _has(c, "gw-B", list(range(1, 11))))
        await _publish(broker.port, [("citynerve/gw-A/telemetry", tele("gw-B", 0, [10**9]))])
        await wait_for(lambda: _true(c.invalid == 1))
        await _publish(broker.port, [("citynerve/gw-B/telemetry", tele("gw-B", 20, list(range(21, 31))))])
        async with asyncio.timeout(20):
            async for m in watcher.messages:
                acks.append((str(m.topic), json.loads(m.payload)["seq"]))  # type: ignore[arg-type]
                if len(acks) == 2:
                    break
        lane = await c.query(lambda s: s.lane("gw-B", "telemetry"))
    assert lane is not None and (lane.contiguous, lane.open_gap, lane.rows) == (10, (10, 20), 20)
    assert acks == [("citynerve/gw-B/ack", 10), ("citynerve/gw-B/ack", 10)]


def test_the_sqlite_store_refuses_what_postgresql_cannot_keep(tmp_path: Path) -> None:
    """Text with NUL or a lone surrogate, numbers past 2**63-1, a non-finite float: refused before
    storing, typed (test_platform_postgres.py checks PostgreSQL refuses the same)."""
    st = PlatformStore(tmp_path / "p.sqlite")
    try:
        for body in UNSTORABLE:
            with pytest.raises(InvalidMessage):
                st.ingest(json.loads(json.dumps(body)))
        assert st.lanes() == []  # nothing half stored
        with pytest.raises(InvalidMessage):
            st.put_document("status", status("gw-1", state="on\u0000line"))
        assert st.document("gw-1", "status") is None
    finally:
        st.close()


UNSTORABLE = [
    tele("gw-1", 0, [1], value="ABC\u0000\u0000"),
    tele("gw-1", 0, [1], value=float("inf")),
    event("gw-1", 0, 2, message="panel text\u0000"),
    event("gw-1", 0, 3, attrs={"raw": "\u0000"}),
    event("gw-1", 0, 4, attrs={"\ud800": 1}),
    tele("gw-1", 0, [2**63]),
]


def test_the_sqlite_store_syncs_every_commit(tmp_path: Path) -> None:
    """The end-to-end ack goes right after the commit: WAL with synchronous=NORMAL left that commit
    unsynced (a power cut lost rows the gateway had deleted); FULL (2) fsyncs it."""
    st = PlatformStore(tmp_path / "p.sqlite")
    try:
        assert st._conn.execute("PRAGMA synchronous").fetchone() == (2,)
    finally:
        st.close()
