"""The Sparkplug B session against a real Mosquitto on loopback, watched by a host-side subscriber:
births once the primary host is online, data, device death, rebirth on NCMD, STATE gating, and the
NDEATH the broker sends when the gateway's process dies."""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import signal
import sys
import textwrap
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiomqtt
import pytest

from citynerve.gateway.api import Event, EventState, Reading, Severity, stop_task
from citynerve.gateway.backoff import Backoff
from citynerve.gateway.uplink.sparkplug import (
    REBIRTH_METRIC,
    BdSeqFile,
    DataType,
    DeviceSpec,
    EdgeNode,
    Payload,
    PointSpec,
    SparkplugSession,
    StoredRecord,
    _session,
)
from citynerve.gateway.uplink.sparkplug._session import PART_RECORDS, by_device
from citynerve.hil.platform import MosquittoBroker
from tests.uplink.conftest import wait_for as wait_until

HOST_ID = "scada"
STATE_TOPIC = f"spBv1.0/STATE/{HOST_ID}"
METER = DeviceSpec("meter-1", (PointSpec("voltage", DataType.DOUBLE, "V"),))


@dataclass
class Seen:
    topic: str
    payload: bytes

    @property
    def verb(self) -> str:
        return self.topic.split("/")[2]

    def decoded(self) -> Any:
        return Payload.FromString(self.payload)


class Host:
    """A Sparkplug host application's view of the broker: every spBv1.0 message, in order; it also
    publishes STATE and NCMD."""

    def __init__(self, broker: MosquittoBroker) -> None:
        self.client = aiomqtt.Client(broker.host, broker.port, identifier="test-host")
        self.seen: list[Seen] = []
        self._changed = asyncio.Event()
        self._task: asyncio.Task[None] | None = None

    async def __aenter__(self) -> Host:
        await self.client.__aenter__()
        await self.client.subscribe("spBv1.0/city/#", qos=1)
        self._task = asyncio.create_task(self._read(), name="test-host.read")
        return self

    async def __aexit__(self, *exc: object) -> None:
        if self._task is not None:
            await stop_task(self._task)
        with contextlib.suppress(aiomqtt.MqttError):
            await self.client.__aexit__(None, None, None)

    async def _read(self) -> None:
        async for m in self.client.messages:
            assert isinstance(m.payload, bytes)
            if str(m.topic).split("/")[2] == "NCMD":
                continue  # our own commands
            self.seen.append(Seen(str(m.topic), m.payload))
            self._changed.set()

    async def state(self, online: bool, ts: int, *, retain: bool = True) -> None:
        body = json.dumps({"online": online, "timestamp": ts}).encode()
        await self.client.publish(STATE_TOPIC, body, qos=1, retain=retain)

    async def wait_for(self, pred: Callable[[Seen], bool], *, after: int = 0, timeout_s: float = 20.0) -> int:
        """Index of the first message from `after` on that matches `pred` (waiting for it)."""
        async with asyncio.timeout(timeout_s):
            while True:
                for i in range(after, len(self.seen)):
                    if pred(self.seen[i]):
                        return i
                self._changed.clear()
                await self._changed.wait()

    def verbs(self, start: int = 0, end: int | None = None) -> list[str]:
        return [s.verb for s in self.seen[start:end]]


async def eventually(pred: Callable[[], bool]) -> None:
    """Until the session's counters say so (they change inside its tasks; there is no event)."""

    async def check() -> bool:
        return pred()

    await wait_until(check)


def verb(v: str, device: str | None = None) -> Callable[[Seen], bool]:
    return lambda s: s.verb == v and (device is None or s.topic.endswith(f"/{device}"))


@pytest.fixture
async def host(broker: MosquittoBroker) -> AsyncIterator[Host]:
    async with Host(broker) as h:
        yield h


def edge_node() -> EdgeNode:
    return EdgeNode(group_id="city", edge_node_id="gw-1", devices=[METER])


def reading(seq: int, value: float, ts: float) -> StoredRecord:
    return StoredRecord("ep-1", seq, Reading("meter-1", "voltage", value, "V", ts))


def bd_seq_of(seen: Seen) -> int:
    return int(next(m.long_value for m in seen.decoded().metrics if m.name == "bdSeq"))


async def test_births_data_device_death_and_rebirth(
    broker: MosquittoBroker, host: Host, tmp_path: Path
) -> None:
    await host.state(True, 1000)
    queue: asyncio.Queue[StoredRecord] = asyncio.Queue()
    sent: list[int] = []
    bd_file = BdSeqFile(tmp_path / "sparkplug.bdseq")
    bd_file.save(7)
    session = SparkplugSession(
        edge_node(),
        queue,
        brokers=[broker.url],
        primary_host_id=HOST_ID,
        bd_seq_file=bd_file,
        on_sent=lambda recs: sent.extend(r.seq for r in recs),
    )
    async with session:
        nbirth = await host.wait_for(verb("NBIRTH"))
        assert bd_seq_of(host.seen[nbirth]) == 7 and bd_file.load() == 8  # persisted before connecting
        dbirth = await host.wait_for(verb("DBIRTH", "meter-1"), after=nbirth)
        birth = host.seen[dbirth].decoded()
        assert (birth.metrics[0].name, birth.metrics[0].datatype) == ("voltage", DataType.DOUBLE)
        alias = birth.metrics[0].alias

        now = time.time() + 3600  # after the session began: live data
        for i in range(3):
            queue.put_nowait(reading(i + 1, 230.0 + i, now + i))
        queue.put_nowait(
            StoredRecord(
                "ep-1",
                4,
                Event("meter-1", "device_offline", EventState.RAISED, Severity.MAJOR, now + 5, rule="bus"),
            )
        )
        ddeath = await host.wait_for(verb("DDEATH", "meter-1"), after=dbirth)
        data = [host.seen[i].decoded() for i in range(dbirth + 1, ddeath) if host.seen[i].verb == "DDATA"]
        values = [m.double_value for p in data for m in p.metrics if m.alias == alias]
        assert values == [230.0, 231.0, 232.0]
        seqs = [host.seen[i].decoded().seq for i in range(nbirth, ddeath + 1)]
        assert seqs == list(range(len(seqs)))  # NBIRTH 0, then one more per message
        # on_sent runs when the PUBACKs are back, which may be after the host saw the messages
        await eventually(lambda: sent == [1, 2, 3, 4])

        # rebirth on NCMD: NBIRTH again, same bdSeq (same MQTT session), seq from 0; the dead device
        # stays dead
        cmd = Payload(timestamp=1)
        cmd.metrics.add(name=REBIRTH_METRIC, datatype=DataType.BOOLEAN, boolean_value=True)
        await host.client.publish("spBv1.0/city/NCMD/gw-1", cmd.SerializeToString(), qos=1)
        again = await host.wait_for(verb("NBIRTH"), after=ddeath)
        assert bd_seq_of(host.seen[again]) == 7 and host.seen[again].decoded().seq == 0
        # a malformed NCMD is ignored, the session goes on
        await host.client.publish("spBv1.0/city/NCMD/gw-1", b"\xff\x00garbage", qos=1)
        queue.put_nowait(reading(5, 240.0, now + 10))
        back = await host.wait_for(verb("DBIRTH", "meter-1"), after=again)
        ddata = await host.wait_for(verb("DDATA", "meter-1"), after=back)
        assert [m.double_value for m in host.seen[ddata].decoded().metrics] == [240.0]
        assert host.verbs(again, ddata + 1) == ["NBIRTH", "DBIRTH", "DDATA"]
        await eventually(lambda: session.bad_inputs == 1)
        assert session.sessions == 1
        last = len(host.seen)
    # stopped: a clean disconnect drops the will, so the session published NDEATH itself
    ndeath = await host.wait_for(verb("NDEATH"), after=last)
    assert bd_seq_of(host.seen[ndeath]) == 7


async def test_publishes_only_while_the_primary_host_is_online(broker: MosquittoBroker, host: Host) -> None:
    queue: asyncio.Queue[StoredRecord] = asyncio.Queue()
    queue.put_nowait(reading(1, 1.0, time.time() - 3600))  # queued after the outbox's mark: live
    node = edge_node()
    mark = ["ep-1", 1]  # the outbox's (epoch, next seq) a session's first birth takes
    session = SparkplugSession(
        node, queue, brokers=[broker.url], primary_host_id=HOST_ID, live_from=lambda: (mark[0], mark[1])
    )
    async with session as s:
        # The host is not online (no STATE yet): the session is connected but births nothing. Its
        # subscriptions are in place once a retained offline STATE reaches it and is acted on:
        # then the online STATE is the first thing that can let it publish.
        await host.state(False, 500)
        await eventually(lambda: s.sessions >= 1 and s.host_state_ts == 500)
        assert host.seen == []
        await host.state(True, 1000)
        first = await host.wait_for(verb("NBIRTH"))
        assert first == 0
        ddata = await host.wait_for(verb("DDATA"), after=first)
        (m,) = host.seen[ddata].decoded().metrics
        assert m.double_value == 1.0 and not m.is_historical
        bd_first = bd_seq_of(host.seen[first])

        # An older STATE (timestamp below the one acted on) is ignored: a rebirth asked after it is
        # answered and nothing died.
        await host.state(False, 900, retain=False)
        cmd = Payload(timestamp=1)
        cmd.metrics.add(name=REBIRTH_METRIC, datatype=DataType.BOOLEAN, boolean_value=True)
        await host.client.publish("spBv1.0/city/NCMD/gw-1", cmd.SerializeToString(), qos=1)
        rebirth = await host.wait_for(verb("NBIRTH"), after=ddata + 1)
        assert "NDEATH" not in host.verbs(ddata, rebirth)

        # The host goes offline: NDEATH (this session's bdSeq), disconnect; nothing while it is away
        await host.state(False, 2000)
        ndeath = await host.wait_for(verb("NDEATH"), after=rebirth)
        assert bd_seq_of(host.seen[ndeath]) == bd_first
        queue.put_nowait(reading(2, 2.0, time.time() + 3600))  # before the next session
        mark[1] = 3
        await eventually(lambda: s.sessions >= 2 and s.host_state_ts == 2000)
        assert host.verbs(ndeath + 1) == []
        # back online: a new session (bdSeq + 1) births, then the record held meanwhile, historical
        # as it was queued before the new session's birth (whatever its wall-clock stamp)
        await host.state(True, 3000)
        nbirth = await host.wait_for(verb("NBIRTH"), after=ndeath)
        assert nbirth == ndeath + 1 and bd_seq_of(host.seen[nbirth]) == (bd_first + 1) % 256
        ddata = await host.wait_for(verb("DDATA"), after=nbirth)
        (m,) = host.seen[ddata].decoded().metrics
        assert m.double_value == 2.0 and m.is_historical


EDGE_PROCESS = textwrap.dedent(
    """
    import asyncio, sys
    from citynerve.gateway.uplink.sparkplug import DataType, DeviceSpec, EdgeNode, PointSpec, SparkplugSession

    async def main() -> None:
        node = EdgeNode(group_id="city", edge_node_id="gw-1",
                        devices=[DeviceSpec("meter-1", (PointSpec("v", DataType.DOUBLE),))], bd_seq=42)
        async with SparkplugSession(node, asyncio.Queue(), brokers=["mqtt://127.0.0.1:" + sys.argv[1]]):
            await asyncio.Event().wait()

    asyncio.run(main())
    """
)


async def test_the_broker_sends_ndeath_when_the_gateway_dies(broker: MosquittoBroker, host: Host) -> None:
    proc = await asyncio.create_subprocess_exec(sys.executable, "-c", EDGE_PROCESS, str(broker.port))
    try:
        nbirth = await host.wait_for(verb("NBIRTH"), timeout_s=60)
        assert bd_seq_of(host.seen[nbirth]) == 42
        os.kill(proc.pid, signal.SIGKILL)  # no DISCONNECT: the broker publishes the will
        ndeath = await host.wait_for(verb("NDEATH"), after=nbirth)
        assert bd_seq_of(host.seen[ndeath]) == 42
        assert host.seen[ndeath].topic == "spBv1.0/city/NDEATH/gw-1"
    finally:
        if proc.returncode is None:
            proc.kill()
        await asyncio.wait_for(proc.wait(), 10)


async def test_batches_are_pipelined_and_settle_in_order(broker: MosquittoBroker, host: Host) -> None:
    # Stop-and-wait paid the broker's delayed PUBACK once per batch (about 8,500 readings/s); now a
    # window of batches is in flight, published in seq order, and `on_sent` follows their order.
    queue: asyncio.Queue[StoredRecord] = asyncio.Queue()
    now = time.time() + 3600
    n = 400
    for i in range(n):
        queue.put_nowait(reading(i + 1, float(i), now + i))
    sent: list[int] = []
    in_flight: list[int] = []  # batches still pending when one settles
    session = SparkplugSession(
        edge_node(),
        queue,
        brokers=[broker.url],
        batch_records=10,
        window_batches=4,
        on_sent=lambda recs: (sent.extend(r.seq for r in recs), in_flight.append(len(session.pending))),
    )
    async with session:
        await eventually(lambda: len(sent) == n)
        nbirth = await host.wait_for(verb("NBIRTH"))
        await host.wait_for(lambda s: s.verb == "DDATA" and s.decoded().metrics[-1].double_value == n - 1)
    assert sent == list(range(1, n + 1))
    assert max(in_flight) >= 2  # more than one batch was out at a time
    seen = host.seen[nbirth:]
    data = [s.decoded() for s in seen if s.verb in ("NBIRTH", "DBIRTH", "DDATA")]
    assert [p.seq for p in data] == [i % 256 for i in range(len(data))]  # in order on the wire
    values = [m.double_value for s in seen if s.verb == "DDATA" for m in s.decoded().metrics]
    assert values == [float(i) for i in range(n)]


async def test_a_batch_goes_out_device_by_device(broker: MosquittoBroker, host: Host) -> None:
    # A backlog interleaves devices (one poll of each in turn): a batch becomes one DDATA per device
    # with its records in order, not one per run of a device's records.
    other = DeviceSpec("meter-2", (PointSpec("voltage", DataType.DOUBLE, "V"),))
    node = EdgeNode(group_id="city", edge_node_id="gw-1", devices=[METER, other])
    queue: asyncio.Queue[StoredRecord] = asyncio.Queue()
    now = time.time() + 3600
    for i in range(40):  # meter-1, meter-2, meter-1, ...: 20 readings each
        queue.put_nowait(
            StoredRecord("ep-1", i + 1, Reading(f"meter-{i % 2 + 1}", "voltage", float(i), "V", now + i))
        )
    sent: list[int] = []
    async with SparkplugSession(
        node,
        queue,
        brokers=[broker.url],
        batch_records=40,
        on_sent=lambda r: sent.extend(x.seq for x in r),
    ):
        await eventually(lambda: len(sent) == 40)
        await host.wait_for(verb("DDATA", "meter-2"))
    ddata = [s for s in host.seen if s.verb == "DDATA"]
    assert [s.topic.rsplit("/", 1)[1] for s in ddata] == ["meter-1", "meter-2"]
    for k, s in enumerate(ddata):
        assert [m.double_value for m in s.decoded().metrics] == [float(i) for i in range(k, 40, 2)]


def test_one_device_s_backlog_is_encoded_in_parts() -> None:
    # A gateway with one device: a 5,000-record round is encoded 500 records at a time (the loop
    # runs between parts), in order.
    batch = [reading(i + 1, float(i), 1e9 + i) for i in range(1_200)]
    parts = by_device(batch)
    assert [len(p) for p in parts] == [PART_RECORDS, PART_RECORDS, 200]
    assert [r.seq for p in parts for r in p] == list(range(1, 1_201))


async def test_a_catch_up_pauses_after_busy_s_and_only_then(monkeypatch: pytest.MonkeyPatch) -> None:
    # Yielding alone between device parts left the loop no idle moment, and the outbox's thread
    # (every destination's alarm commits) waited for the interpreter lock: after BUSY_S of the loop
    # the rounds sleep IDLE_S; before it, they only yield.
    session = SparkplugSession(edge_node(), asyncio.Queue(), brokers=["mqtt://127.0.0.1:1"])
    loop = asyncio.get_running_loop()
    monkeypatch.setattr(_session, "BUSY_S", 0.0)
    t = loop.time()
    await session._breathe()
    assert loop.time() - t >= _session.IDLE_S * 0.99
    paused_at = session._busy_since
    assert paused_at > 0
    monkeypatch.setattr(_session, "BUSY_S", 3600.0)
    await session._breathe()
    assert session._busy_since == paused_at  # a yield, no pause


async def test_a_broker_that_stops_answering_ends_the_session_and_the_batches_go_again(
    broker: MosquittoBroker, host: Host
) -> None:
    # No timer per publish: one per batch. A frozen broker (SIGSTOP: the connection stays open,
    # nothing is answered) ends the session after `puback_timeout_s`; the batches it cut go out
    # again in the next session, in order, and settle once.
    queue: asyncio.Queue[StoredRecord] = asyncio.Queue()
    sent: list[int] = []
    session = SparkplugSession(
        edge_node(),
        queue,
        brokers=[broker.url],
        batch_records=10,
        puback_timeout_s=1.0,
        on_sent=lambda recs: sent.extend(r.seq for r in recs),
    )
    now = time.time() + 3600
    async with session:
        await session.wait_born()
        broker.freeze()
        try:
            for i in range(50):
                queue.put_nowait(reading(i + 1, float(i), now + i))
            await eventually(lambda: "no PUBACK" in (session.last_error or ""))
            assert sent == []
        finally:
            broker.thaw()
        await eventually(lambda: len(sent) == 50)
    assert sent == list(range(1, 51))
    assert session.sessions >= 2


async def test_the_primary_host_offline_sends_the_node_to_the_next_broker(
    broker: MosquittoBroker, host: Host, tmp_path: Path
) -> None:
    # Sparkplug 3.0: an edge node whose primary host goes offline on its server disconnects and
    # connects to the next server of its list. The host is online on both brokers; it leaves the
    # first: NDEATH there, then a new session (bdSeq + 1) births on the second and the data follows.
    (tmp_path / "b").mkdir()
    second = MosquittoBroker(workdir=tmp_path / "b")
    second.start()
    try:
        async with Host(second) as host_b:
            await host.state(True, 1000)
            await host_b.state(True, 1000)
            queue: asyncio.Queue[StoredRecord] = asyncio.Queue()
            brokers = [broker.url, second.url]
            async with SparkplugSession(edge_node(), queue, brokers=brokers, primary_host_id=HOST_ID) as s:
                nbirth = await host.wait_for(verb("NBIRTH"))
                assert s.broker.port == broker.port and host_b.seen == []
                await host.state(False, 2000)
                ndeath = await host.wait_for(verb("NDEATH"), after=nbirth)
                born_b = await host_b.wait_for(verb("NBIRTH"))
                assert bd_seq_of(host_b.seen[born_b]) == (bd_seq_of(host.seen[ndeath]) + 1) % 256
                assert s.broker.port == second.port
                queue.put_nowait(reading(1, 1.0, time.time() + 3600))
                await host_b.wait_for(verb("DDATA"), after=born_b)
                assert host.verbs(ndeath + 1) == []  # nothing more on the first broker
    finally:
        second.close()


async def test_a_state_nested_a_thousand_deep_is_ignored_and_the_session_goes_on(
    broker: MosquittoBroker, host: Host
) -> None:
    # 1,002 opening brackets fit STATE's 1 KiB limit and reached the JSON parser's recursion limit:
    # the RecursionError ended the session task for good (the snapshot still said connected). The
    # bounded loader refuses it as a typed input error, ignored.
    queue: asyncio.Queue[StoredRecord] = asyncio.Queue()
    session = SparkplugSession(edge_node(), queue, brokers=[broker.url], primary_host_id=HOST_ID)
    async with session as s:
        await host.state(True, 1000)
        nbirth = await host.wait_for(verb("NBIRTH"))
        await host.client.publish(STATE_TOPIC, b"[" * 1002, qos=1)
        await eventually(lambda: s.bad_inputs == 1)
        queue.put_nowait(reading(1, 1.0, time.time() + 3600))
        await host.wait_for(verb("DDATA"), after=nbirth)
        assert s.sessions == 1


async def test_an_unexpected_error_ends_one_session_not_all_of_them(
    broker: MosquittoBroker, host: Host, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A bug (an exception no handler expects) in one session is logged and the next session starts,
    # as in the JSON v1 uplink: it used to end the sessions' task silently, for good.
    node = edge_node()
    queue: asyncio.Queue[StoredRecord] = asyncio.Queue()
    async with SparkplugSession(node, queue, brokers=[broker.url], backoff=Backoff(0.1, 0.2, 0.2)) as s:
        nbirth = await host.wait_for(verb("NBIRTH"))

        def bug(*args: object) -> list[Any]:
            monkeypatch.undo()  # once
            raise RuntimeError("a bug")

        monkeypatch.setattr(node, "asks_rebirth", bug)
        cmd = Payload(timestamp=1)
        cmd.metrics.add(name=REBIRTH_METRIC, datatype=DataType.BOOLEAN, boolean_value=True)
        await host.client.publish("spBv1.0/city/NCMD/gw-1", cmd.SerializeToString(), qos=1)
        again = await host.wait_for(verb("NBIRTH"), after=nbirth + 1)
        assert s.sessions == 2 and "RuntimeError: a bug" in (s.last_error or "")
        queue.put_nowait(reading(1, 1.0, time.time() + 3600))
        await host.wait_for(verb("DDATA"), after=again)


async def test_an_ncmd_flood_is_counted_logged_in_bounded_lines_and_rebirths_are_coalesced(
    broker: MosquittoBroker, host: Host, caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    # 1,500 NCMDs in a burst (a third rebirth requests, the rest junk; a looping host, anyone allowed
    # to publish there): each request was a full rebirth (NBIRTH and every DBIRTH: 500 of them) and
    # each message a log line. Requests within REBIRTH_INTERVAL_S of the last rebirth are answered
    # by one rebirth after it; junk is counted and logged once per 10 s.
    interval = 1.0
    monkeypatch.setattr(_session, "REBIRTH_INTERVAL_S", interval)
    caplog.set_level(logging.INFO, logger="citynerve")
    devices = [DeviceSpec(f"m-{i}", (PointSpec("p", DataType.DOUBLE, "V"),)) for i in range(50)]
    node = EdgeNode(group_id="city", edge_node_id="gw-1", devices=devices)
    rebirth = Payload(timestamp=1)
    rebirth.metrics.add(name=REBIRTH_METRIC, datatype=DataType.BOOLEAN, boolean_value=True)
    async with SparkplugSession(node, asyncio.Queue(), brokers=[broker.url]) as s:
        await s.wait_born()
        started = time.monotonic()
        for i in range(1500):  # the last one is junk: all requests are in once it is counted
            payload = rebirth.SerializeToString() if i % 3 == 0 else b"\xff\x00garbage"
            await host.client.publish("spBv1.0/city/NCMD/gw-1", payload, qos=1)
        await eventually(lambda: s.bad_inputs == 1000)
        span = time.monotonic() - started
        # one at once, one per interval while they came, one after the last: not one per request
        assert s.births - 1 <= 2 + span / interval, (s.births, span)
        # The requests are answered once no rebirth waits any more (one that started after the last
        # request cleared it) and that rebirth is out (it holds the lock while it publishes).
        await eventually(lambda: not s._rebirth_asked.is_set())
        async with s._lock:
            rebirths = s.births - 1
    assert 1 <= rebirths <= 2 + span / interval, (rebirths, span)
    await host.wait_for(lambda seen: sum(x.verb == "DBIRTH" for x in host.seen) == 50 * (1 + rebirths))
    assert host.verbs().count("NBIRTH") == 1 + rebirths
    last = max(i for i, x in enumerate(host.seen) if x.verb == "NBIRTH")
    assert host.verbs(last, last + 51) == ["NBIRTH"] + ["DBIRTH"] * 50  # a full birth
    lines = [r.getMessage() for r in caplog.records if r.name.startswith("citynerve")]
    ignored = [m for m in lines if m.startswith("sparkplug: ignored:")]
    assert 1 <= len(ignored) <= 1 + span / 10, ignored
    assert "not a Sparkplug B payload" in ignored[0]
    assert len([m for m in lines if "rebirth asked by NCMD" in m]) == rebirths
