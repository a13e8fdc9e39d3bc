"""A Sparkplug B destination fed by the outbox (issue 16 D1 + D3): next to a JSON v1 destination on
the same outbox, over real Mosquitto; every row arrives once with its epoch and seq, the outbox
position advances on the broker's PUBACK, and a restart sends what was not acknowledged again."""

from __future__ import annotations

import asyncio
import contextlib
import time
from pathlib import Path
from typing import Any

import aiomqtt

from citynerve.gateway.api import Event, EventState, Severity, stop_task
from citynerve.gateway.store import AsyncOutbox, Lane
from citynerve.gateway.uplink.sparkplug import Payload, SparkplugUplink
from citynerve.hil.platform import MosquittoBroker
from tests.uplink.conftest import alarm, readings, upstream, wait_for

GW = "gw-test"


class Host:
    """Every spBv1.0 message, in order (a Sparkplug host application's view)."""

    def __init__(self, broker: MosquittoBroker) -> None:
        self.broker = broker
        self.seen: list[tuple[str, Any]] = []
        self._task: asyncio.Task[None] | None = None
        self._ready = asyncio.Event()

    async def __aenter__(self) -> Host:
        self._task = asyncio.create_task(self._run())
        await asyncio.wait_for(self._ready.wait(), 10)
        return self

    async def __aexit__(self, *exc: object) -> None:
        assert self._task is not None
        await stop_task(self._task)

    async def _run(self) -> None:
        with contextlib.suppress(aiomqtt.MqttError):  # the broker may be stopped under it
            async with aiomqtt.Client(self.broker.host, self.broker.port, identifier="host") as client:
                await client.subscribe("spBv1.0/#", qos=1)
                self._ready.set()
                async for m in client.messages:
                    assert isinstance(m.payload, bytes)
                    self.seen.append((str(m.topic), Payload.FromString(m.payload)))

    def seqs(self) -> list[int]:
        """The outbox seqs carried by data and alarm metrics (properties epoch, seq)."""
        out = []
        for topic, p in self.seen:
            if "/DDATA/" not in topic and "/NDATA/" not in topic:
                continue
            for metric in p.metrics:
                props = dict(zip(metric.properties.keys, metric.properties.values, strict=True))
                if "seq" in props:
                    out.append(props["seq"].long_value or props["seq"].int_value)
        return out

    def verbs(self) -> list[str]:
        return [t.split("/")[2] for t, _ in self.seen]


async def test_sparkplug_destination_next_to_json_loses_nothing(tmp_path: Path) -> None:
    broker = MosquittoBroker(workdir=tmp_path)
    broker.start()
    try:
        async with AsyncOutbox(tmp_path / "outbox.sqlite", synchronous="normal") as ob, Host(broker) as host:
            await ob.set_destinations({"city": tuple(Lane), "scada": tuple(Lane)})
            await ob.append(readings(300), [alarm(1)])
            cfg = upstream(broker, id="scada", encoding="sparkplug-b", sparkplug={"group_id": "district-7"})
            up = SparkplugUplink(cfg, gateway_id=GW, outbox=ob, devices={}, state_dir=tmp_path)
            task = asyncio.create_task(up.run())
            try:
                await wait_for(lambda: _position(ob, Lane.TELEMETRY, 300), timeout_s=30)
                await wait_for(lambda: _position(ob, Lane.EVENT, 301), timeout_s=30)
            finally:
                await stop_task(task)
            verbs = host.verbs()
            assert verbs[0] == "NBIRTH" and "DDATA" in verbs
            assert all(t.startswith("spBv1.0/district-7/") for t, _ in host.seen)
            # Every reading (seqs 1-300) and the alarm (301) arrived, each with its seq.
            seqs = [s for s in host.seqs() if s]
            assert sorted(set(seqs)) == list(range(1, 302)), (len(seqs), seqs[:5])
            # The JSON destination ("city") has not acknowledged: the rows stay for it.
            assert (await ob.stats()).lane(Lane.TELEMETRY).rows == 300
            snap = up.snapshot().to_dict()
            assert snap["extra"]["encoding"] == "sparkplug-b" and snap["ack_seq"]["telemetry"] == 300

            # A restart: the position is where the broker acknowledged; new rows go on from there.
            await ob.append(readings(20, start=300), [])
            before = len(host.seen)
            up2 = SparkplugUplink(cfg, gateway_id=GW, outbox=ob, devices={}, state_dir=tmp_path)
            task = asyncio.create_task(up2.run())
            try:
                await wait_for(lambda: _position(ob, Lane.TELEMETRY, 321), timeout_s=30)
            finally:
                await stop_task(task)
            again = [s for s in Host.seqs(_Slice(host.seen[before:])) if s]
            assert sorted(set(again)) == list(range(302, 322))
            births = [p for t, p in host.seen if "/NBIRTH/" in t]
            bd = [next(m.long_value for m in p.metrics if m.name == "bdSeq") for p in births]
            assert bd == sorted(bd) and len(set(bd)) == len(bd)  # a new bdSeq per session, persisted
    finally:
        broker.close()


async def _carried(host: Host, seqs: set[int]) -> bool:
    """The host has every one of `seqs` (a PUBACK can come before the subscriber has the message)."""
    return seqs <= set(host.seqs())


class _Slice:
    def __init__(self, seen: list[tuple[str, Any]]) -> None:
        self.seen = seen


async def _position(ob: AsyncOutbox, lane: Lane, seq: int, destination: str = "scada") -> bool:
    from citynerve.gateway.store import position_key

    raw = await ob.get(position_key(destination, lane))
    with contextlib.suppress(ValueError, TypeError):
        return int(raw or 0) >= seq
    return False


async def test_rows_the_filter_leaves_out_are_settled(tmp_path: Path) -> None:
    # The JSON v1 rule: rows a filter leaves out are covered by the destination's position once
    # everything before them is acknowledged, so the outbox can delete them when the other
    # destinations have them. "nobody" wants nothing at all; "pumps" wants wm-2's readings only,
    # and the last readings (wm-1) come after them.
    broker = MosquittoBroker(workdir=tmp_path)
    broker.start()
    try:
        async with AsyncOutbox(tmp_path / "outbox.sqlite", synchronous="normal") as ob, Host(broker) as host:
            # registered as make_uplinks does: the lanes of each filter
            await ob.set_destinations(
                {"city": tuple(Lane), "nobody": tuple(Lane), "pumps": (Lane.TELEMETRY,)}
            )
            rows = readings(100) + readings(100, start=100, device="wm-2") + readings(50, start=200)
            await ob.append(rows, [alarm(1)])  # seqs 1-250 readings, 251 the alarm
            nobody = upstream(
                broker,
                id="nobody",
                encoding="sparkplug-b",
                filter={"min_severity": "critical", "devices": ["nobody"]},
            )
            pumps = upstream(
                broker,
                id="pumps",
                encoding="sparkplug-b",
                filter={"devices": ["wm-2"], "lanes": ["telemetry"]},
            )
            ups = [
                SparkplugUplink(cfg, gateway_id=GW, outbox=ob, devices={}, state_dir=tmp_path)
                for cfg in (nobody, pumps)
            ]
            tasks = [asyncio.create_task(u.run()) for u in ups]
            try:
                await wait_for(lambda: _position(ob, Lane.TELEMETRY, 250, "nobody"), timeout_s=30)
                await wait_for(lambda: _position(ob, Lane.TELEMETRY, 250, "pumps"), timeout_s=30)
                await wait_for(lambda: _position(ob, Lane.EVENT, 251, "nobody"), timeout_s=30)
                stats = await ob.destination_stats()
                assert stats["nobody"]["backlog"] == {"event": 0, "telemetry": 0}
                assert stats["pumps"]["backlog"] == {"telemetry": 0}
                # The city acknowledges: every row leaves the outbox.
                await ob.ack(Lane.TELEMETRY, 250, destination="city")
                await ob.ack(Lane.EVENT, 251, destination="city")
                assert all(lane.rows == 0 for lane in (await ob.stats()).lanes)
            finally:
                for t in tasks:
                    await stop_task(t)
            # What went out: wm-2's readings (seqs 101-200) for "pumps", nothing for "nobody".
            await wait_for(lambda: _carried(host, set(range(101, 201))), timeout_s=30)
            assert sorted(set(host.seqs())) == list(range(101, 201))
            assert ups[0].snapshot().published_rows == {"records": 0}
    finally:
        broker.close()


async def test_failover_to_the_next_broker(tmp_path: Path) -> None:
    # brokers = [a, b]: a is down, so the destination is born on b; b then stops mid-session and a
    # is back: the destination moves to a (the JSON v1 uplink's failover), nothing is lost.
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    a, b = MosquittoBroker(workdir=tmp_path / "a"), MosquittoBroker(workdir=tmp_path / "b")
    a.start()
    a.stop()
    b.start()
    try:
        async with AsyncOutbox(tmp_path / "outbox.sqlite", synchronous="normal") as ob:
            await ob.set_destinations({"scada": tuple(Lane)})
            await ob.append(readings(50), [])
            cfg = upstream(a, id="scada", encoding="sparkplug-b", brokers=[a.url, b.url])
            up = SparkplugUplink(cfg, gateway_id=GW, outbox=ob, devices={}, state_dir=tmp_path)
            async with Host(b) as host_b:
                task = asyncio.create_task(up.run())
                try:
                    await wait_for(lambda: _position(ob, Lane.TELEMETRY, 50), timeout_s=30)
                    await wait_for(lambda: _carried(host_b, set(range(1, 51))), timeout_s=30)
                    assert sorted(set(host_b.seqs())) == list(range(1, 51))
                    assert up.snapshot().broker == b.url and up.snapshot().connect_failures >= 1
                    a.start()
                    async with Host(a) as host_a:
                        b.stop()
                        await ob.append(readings(30, start=50), [])
                        await wait_for(lambda: _position(ob, Lane.TELEMETRY, 80), timeout_s=30)
                        await wait_for(lambda: _carried(host_a, set(range(51, 81))), timeout_s=30)
                        assert host_a.verbs()[0] == "NBIRTH" and up.snapshot().broker == a.url
                finally:
                    await stop_task(task)
    finally:
        a.close()
        b.close()


async def test_the_backlog_is_paced_by_replay_max_msgs_per_s(tmp_path: Path) -> None:
    # 200 readings queued before the start, 10 per round: about 20 DDATA at 20 messages/s, burst 1.
    # The token bucket makes the N-th message wait (N - 1) / rate at least: a lower bound only.
    broker = MosquittoBroker(workdir=tmp_path)
    broker.start()
    try:
        async with AsyncOutbox(tmp_path / "outbox.sqlite", synchronous="normal") as ob, Host(broker) as host:
            await ob.set_destinations({"scada": tuple(Lane)})
            await ob.append(readings(200), [])
            rate = 20.0
            cfg = upstream(
                broker,
                id="scada",
                encoding="sparkplug-b",
                sparkplug={"batch_records": 10},
                replay_max_msgs_per_s=rate,
                replay_burst=1,
            )
            up = SparkplugUplink(cfg, gateway_id=GW, outbox=ob, devices={}, state_dir=tmp_path)
            started = time.monotonic()
            task = asyncio.create_task(up.run())
            try:
                await wait_for(lambda: _position(ob, Lane.TELEMETRY, 200), timeout_s=30)
                elapsed = time.monotonic() - started
            finally:
                await stop_task(task)
            await wait_for(lambda: _carried(host, set(range(1, 201))), timeout_s=30)
            ddata = host.verbs().count("DDATA")  # each one a message the limiter counted
            assert ddata >= 20
            # Every message but the burst's and the last round's waited for its token.
            assert elapsed >= (ddata - 2) / rate, (elapsed, ddata)
    finally:
        broker.close()


def _alarm_actives(host: Host) -> list[tuple[str, bool]]:
    """Every `Alarms/<folder>/Active` value the host received in DDATA, in order, by name (the
    aliases resolved from the births)."""
    names: dict[int, str] = {}
    out = []
    for topic, p in host.seen:
        for m in p.metrics:
            if m.name:
                names[m.alias] = m.name
            name = m.name or names.get(m.alias, "")
            if "/DDATA/" in topic and name.startswith("Alarms/") and name.endswith("/Active"):
                out.append((name, m.boolean_value))
    return out


async def test_alarm_subject_and_one_shot_survive_the_outbox(tmp_path: Path) -> None:
    # A fire panel's loop-devices are one alarm each (subject), and a panel reset is a report
    # (one_shot), never an active alarm: both are read back from the outbox by the destination.
    broker = MosquittoBroker(workdir=tmp_path)
    broker.start()
    try:
        async with AsyncOutbox(tmp_path / "outbox.sqlite", synchronous="normal") as ob, Host(broker) as host:
            await ob.set_destinations({"scada": (Lane.EVENT,)})
            t, raised, cleared = 1_780_000_000.0, EventState.RAISED, EventState.CLEARED
            fire = {"device_id": "panel-1", "kind": "fire", "rule": "panel:x"}
            await ob.append(
                [],
                [
                    Event(**fire, state=raised, severity=Severity.CRITICAL, ts=t, subject="L1-D23"),
                    Event(**fire, state=raised, severity=Severity.CRITICAL, ts=t + 1, subject="L1-D24"),
                    Event(**fire, state=cleared, severity=Severity.INFO, ts=t + 2, subject="L1-D23"),
                    Event(
                        "panel-1",
                        "panel_reset",
                        raised,
                        Severity.INFO,
                        t + 3,
                        "panel:x",
                        subject="*",
                        one_shot=True,
                    ),
                ],
            )
            cfg = upstream(broker, id="scada", encoding="sparkplug-b")
            up = SparkplugUplink(cfg, gateway_id=GW, outbox=ob, devices={}, state_dir=tmp_path)
            task = asyncio.create_task(up.run())
            try:
                await wait_for(lambda: _position(ob, Lane.EVENT, 4), timeout_s=30)
                await wait_for(lambda: _carried(host, {1, 2, 3, 4}), timeout_s=30)
            finally:
                await stop_task(task)
            assert _alarm_actives(host) == [
                ("Alarms/fire/L1-D23/Active", True),
                ("Alarms/fire/L1-D24/Active", True),
                ("Alarms/fire/L1-D23/Active", False),  # L1-D24 stays in alarm
            ]  # and the reset set no Active at all
    finally:
        broker.close()
