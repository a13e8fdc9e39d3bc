"""A Sparkplug device's metric budget (2,000) and alarm subjects: a fire panel's loop-devices each get a
folder `Alarms/<kind>/<subject>` that stays for the life of the process, so after a walk test of ~400
detectors the budget is full. An event of a new subject then goes into its kind's folder, its Message
starting with the subject: never settled without being sent. What still cannot be sent (readings of
a new point past the budget, a device past max_devices) is counted and logged once per device."""

from __future__ import annotations

import asyncio
import logging
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from citynerve.drivers.firepanel import PanelStream
from citynerve.gateway.api import Event, EventState, Quality, Reading, Severity, stop_task
from citynerve.gateway.store import AsyncOutbox, Lane
from citynerve.gateway.uplink.sparkplug import (
    DataType,
    DeviceSpec,
    EdgeNode,
    PointSpec,
    SparkplugMessage,
    SparkplugUplink,
    StoredRecord,
    Verb,
    device_spec,
)
from citynerve.gateway.uplink.sparkplug._sizes import record_bytes
from citynerve.hil.platform import MosquittoBroker
from tests.serial.test_firepanel import panel
from tests.uplink.conftest import upstream, wait_for
from tests.uplink.test_sparkplug_destination import GW, Host, _carried, _position
from tests.uplink.test_sparkplug_node import HostModel, decode, value_of

T0 = 1_780_000_000_000  # ms


class Names:
    """Metric names by alias, from every birth seen (data carries aliases only)."""

    def __init__(self) -> None:
        self.by_alias: dict[int, str] = {}

    def data(self, messages: list[SparkplugMessage]) -> list[list[tuple[str, Any, int]]]:
        """Per data message: (name, value, outbox seq) of each metric."""
        out = []
        for m in messages:
            p = decode(m.payload)
            if m.verb in (Verb.NBIRTH, Verb.DBIRTH):
                self.by_alias |= {x.alias: x.name for x in p.metrics}
            elif m.verb in (Verb.DDATA, Verb.NDATA):
                out.append(
                    [
                        (self.by_alias[x.alias], value_of(x), x.properties.values[1].long_value)
                        for x in p.metrics
                    ]
                )
        return out


def test_a_fire_after_a_walk_test_of_400_detectors_reaches_the_host() -> None:
    # Real PanelStream (GST lines) -> the Events the gateway stores -> the real edge node.
    dev = panel()
    stream = PanelStream(dev)
    node = EdgeNode(group_id="city", edge_node_id="gw-1", devices=[device_spec(dev, ("fire", "smoke"))])
    node.start_session()
    names = Names()
    names.data(node.birth(T0))
    seq = 0

    def send(items: list[Any]) -> list[SparkplugMessage]:
        nonlocal seq
        recs = []
        for it in items:
            if isinstance(it, Event):
                seq += 1
                recs.append(StoredRecord("ep", seq, it, False))
        return node.encode(recs, T0 + seq)

    # The yearly walk test: every detector of loops 1-2 triggered once, the panel reset after each.
    for i in range(400):
        loop, d = divmod(i, 200)
        line = f"首次火警  24/03/05 10:{i % 60:02d}  {loop + 1:03d}回路{d + 1:03d}号  感烟探测器  测试"
        names.data(send(stream.feed(line.encode("gb18030") + b"\r\n")))
        names.data(send(stream.feed("复位 24/03/05 10:00\r\n".encode("gb18030"))))
    assert len(node._devices["fp-1"].metrics) == node.max_metrics_per_device  # the budget is full
    assert node.skipped == 0
    # Months later, a real fire at a detector the walk test did not reach (loop 3, detector 7).
    items = stream.feed("首次火警  24/09/01 03:12  003回路007号  感烟探测器  地下车库\r\n".encode("gb18030"))
    fire = [e for e in items if isinstance(e, Event) and e.state is EventState.RAISED]
    assert fire and fire[0].kind == "smoke" and fire[0].subject == "003-007"
    (data,) = names.data(send(items))
    got = {name: value for name, value, s in data if s == seq}
    assert got["Alarms/smoke/Active"] is True and got["Alarms/smoke/Severity"] == int(Severity.CRITICAL)
    assert got["Alarms/smoke/Message"].startswith("003-007: ")
    assert node.skipped == 0


def _ev(subject: str, state: EventState = EventState.RAISED, kind: str = "fire", **kw: Any) -> Event:
    return Event("panel-1", kind, state, Severity.CRITICAL, (T0 + 1) / 1000, "panel:x", subject=subject, **kw)


def test_subjects_past_the_budget_share_their_kinds_folder() -> None:
    # Budget 15: the panel's `fire` and `device_offline` folders (10) and one subject's folder.
    node = EdgeNode(
        group_id="city",
        edge_node_id="gw-1",
        devices=[DeviceSpec("panel-1", alarm_kinds=("fire",))],
        max_metrics_per_device=15,
    )
    node.start_session()
    names = Names()
    names.data(node.birth(T0))
    seq = 0

    def send(*events: Event) -> dict[str, Any]:
        """The alarm metrics the host got for `events`, the last value of each name."""
        nonlocal seq
        stored = []
        for ev in events:
            seq += 1
            stored.append(StoredRecord("ep", seq, ev))
        out = node.encode(stored, T0 + seq)
        for m in out:
            if m.verb is Verb.DDATA:
                assert len(m.payload) <= sum(record_bytes(s.record) for s in stored)
        data = [x for msg in names.data(out) for x in msg]
        assert {s for _, _, s in data} == {s.seq for s in stored}, "every event carried"
        return {name: value for name, value, _ in data}

    assert send(_ev("L1-D1"))["Alarms/fire/L1-D1/Active"] is True  # room for one folder
    got = send(_ev("L1-D2", message="smoke"))  # none for the next: the kind's folder
    assert got["Alarms/fire/Active"] is True and got["Alarms/fire/Message"] == "L1-D2: smoke"
    assert send(_ev("L1-D3"))["Alarms/fire/Message"] == "L1-D3"
    # The kind's folder is active while any alarm it carries is.
    got = send(_ev("L1-D2", EventState.CLEARED, message="reset"))
    assert got["Alarms/fire/Active"] is True and got["Alarms/fire/Message"] == "L1-D2: reset"
    assert send(_ev("", EventState.RAISED))["Alarms/fire/Active"] is True  # the subject-less one
    assert send(_ev("L1-D3", EventState.CLEARED))["Alarms/fire/Active"] is True
    assert send(_ev("", EventState.CLEARED))["Alarms/fire/Active"] is False
    # A report (one-shot) of such a subject sets no Active.
    got = send(_ev("L1-D9", one_shot=True, message="fault"))
    assert "Alarms/fire/Active" not in got and got["Alarms/fire/Message"] == "L1-D9: fault"
    # A clear of "*" clears every subject: its folder, and those carried by the kind's folder.
    send(_ev("L1-D1"), _ev("L1-D2"))
    got = send(_ev("*", EventState.CLEARED))
    assert got["Alarms/fire/Active"] is False and got["Alarms/fire/L1-D1/Active"] is False
    assert send(_ev("L1-D4"))["Alarms/fire/Active"] is True
    assert send(_ev("L1-D4", EventState.CLEARED))["Alarms/fire/Active"] is False
    # A kind never seen, past the budget: its folder is declared anyway (a birth first).
    out = node.encode([StoredRecord("ep", 99, _ev("L2-D1", kind="heat"))], T0 + 200)
    assert [m.verb for m in out] == [Verb.DBIRTH, Verb.DDATA]
    assert {x.name for x in decode(out[0].payload).metrics} >= {"Alarms/heat/Active", "Alarms/heat/Message"}
    assert node.skipped == 0


def test_records_that_still_cannot_be_sent_are_logged_once_per_device(
    caplog: pytest.LogCaptureFixture,
) -> None:
    meter = DeviceSpec("meter-1", (PointSpec("voltage", DataType.FLOAT),))
    node = EdgeNode(
        group_id="city", edge_node_id="gw-1", devices=[meter], max_devices=1, max_metrics_per_device=6
    )
    node.start_session()
    node.birth(T0)
    ts = (T0 + 1) / 1000
    records = [
        Reading("meter-1", "voltage", 230.0, "V", ts),
        *(Reading("meter-1", f"extra_{i}", i, "", ts) for i in range(4)),  # no room: the budget is full
        *(Reading("meter-2", "voltage", 1.0, "V", ts) for _ in range(3)),  # past max_devices
        Event("meter-2", "tamper", EventState.RAISED, Severity.MAJOR, ts),  # so is its event
    ]
    with caplog.at_level(logging.WARNING, logger="citynerve.gateway.uplink.sparkplug"):
        node.encode([StoredRecord("ep", i, r) for i, r in enumerate(records)], T0 + 10)
        node.encode([StoredRecord("ep", 99, Reading("meter-1", "extra_9", 9, "", ts))], T0 + 20)
    assert node.skipped == 4 + 3 + 1 + 1
    lines = [r.getMessage() for r in caplog.records]
    assert len(lines) == 2, lines
    assert "'meter-1'" in lines[0] and "a new point past 6 metrics" in lines[0]
    assert "'meter-2'" in lines[1] and "past 1 devices" in lines[1]


SUBJECTS = st.sampled_from(("", "*", *(f"L1-D{i}" for i in range(8))))
RECORDS = st.one_of(
    st.builds(
        lambda d, p, v: Reading(d, p, v, "", (T0 + 1000) / 1000, Quality.GOOD),
        st.sampled_from(("panel-1", "gw-1")),
        st.sampled_from(("a", "b", "c", "d")),
        st.integers(-5, 5),
    ),
    st.builds(
        lambda d, k, s, subj, one: Event(
            d, k, s, Severity.MAJOR, (T0 + 1000) / 1000, subject=subj, one_shot=one
        ),
        st.sampled_from(("panel-1", "gw-1")),
        st.sampled_from(("fire", "fault", "device_offline")),
        st.sampled_from(list(EventState)),
        SUBJECTS,
        st.booleans(),
    ),
)


@settings(max_examples=150, deadline=None)
@given(st.lists(st.lists(RECORDS, max_size=12), max_size=6), st.integers(0, 40))
def test_every_event_is_sent_whatever_the_budget(batches: list[list[Reading | Event]], budget: int) -> None:
    node = EdgeNode(
        group_id="city",
        edge_node_id="gw-1",
        devices=[DeviceSpec("panel-1", alarm_kinds=("fire",))],
        max_metrics_per_device=budget,
    )
    host = HostModel()
    node.start_session()
    for m in node.birth(T0):
        host.take(m)
    seq = 0
    for batch in batches:
        stored = []
        for r in batch:
            seq += 1
            stored.append(StoredRecord("ep", seq, r))
        carried = set()
        for m in node.encode(stored, T0 + 2000):
            host.take(m)
            if m.verb in (Verb.DDATA, Verb.NDATA):
                carried |= {x.properties.values[1].long_value for x in decode(m.payload).metrics}
        assert {s.seq for s in stored if isinstance(s.record, Event)} <= carried


async def test_a_fire_after_a_walk_test_reaches_the_sparkplug_host(tmp_path: Path) -> None:
    # Real outbox, SparkplugUplink and Mosquitto, a host subscribed to spBv1.0/#: the fire alarm of
    # a loop-device the walk test did not reach is published before the outbox settles it.
    broker = MosquittoBroker(workdir=tmp_path)
    broker.start()
    try:
        async with AsyncOutbox(tmp_path / "outbox.sqlite", synchronous="normal") as ob, Host(broker) as host:
            await ob.set_destinations({"scada": (Lane.EVENT,)})
            t = 1_780_000_000.0
            fire = {"device_id": "panel-1", "kind": "smoke", "rule": "panel:gst"}
            walk = []
            for i in range(400):  # walk test: each detector triggered, then cleared
                s = f"{i // 200 + 1:03d}-{i % 200 + 1:03d}"
                walk.append(
                    Event(**fire, state=EventState.RAISED, severity=Severity.CRITICAL, ts=t + i, subject=s)
                )
                walk.append(
                    Event(**fire, state=EventState.CLEARED, severity=Severity.INFO, ts=t + i + 0.5, subject=s)
                )
            await ob.append([], walk)
            real = Event(
                **fire,
                state=EventState.RAISED,
                severity=Severity.CRITICAL,
                ts=t + 9999,
                subject="003-007",
                message="B2",
            )
            _, real_seq = await ob.append([], [real])
            cfg = upstream(broker, id="scada", encoding="sparkplug-b")
            up = SparkplugUplink(cfg, gateway_id=GW, outbox=ob, devices={}, state_dir=tmp_path)
            task = asyncio.create_task(up.run())
            try:
                await wait_for(lambda: _position(ob, Lane.EVENT, real_seq), timeout_s=60)
                await wait_for(lambda: _carried(host, set(range(1, real_seq + 1))), timeout_s=30)
            finally:
                await stop_task(task)
            assert up.node.skipped == 0 and (await ob.stats()).dropped_by == {}
            names: dict[int, str] = {}
            last: dict[str, Any] = {}
            for topic, p in host.seen:
                for m in p.metrics:
                    if m.name:
                        names[m.alias] = m.name
                    if "/DDATA/" in topic:
                        last[names[m.alias]] = value_of(m)
            assert last["Alarms/smoke/Active"] is True and last["Alarms/smoke/Message"] == "003-007: B2"
    finally:
        broker.close()
