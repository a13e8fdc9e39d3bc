"""A Sparkplug B destination fed by the outbox (issue 16 D1 + D3): next to a JSON v1 destination on
the same outbox, over real Mosquitto; every row arrives once with its epoch and seq, the outbox
position advances on the broker's PUBACK, and a restart sends what was not acknowledged again."""

from __future__ import annotations

import asyncio
import contextlib
from pathlib import Path
from typing import Any

import aiomqtt

from citynerve.gateway.api import stop_task
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


class _Slice:
    def __init__(self, seen: list[tuple[str, Any]]) -> None:
        self.seen = seen


async def _position(ob: AsyncOutbox, lane: Lane, seq: int) -> bool:
    from citynerve.gateway.store import position_key

    raw = await ob.get(position_key("scada", lane))
    with contextlib.suppress(ValueError, TypeError):
        return int(raw or 0) >= seq
    return False
