"""The Sparkplug B edge node, sans I/O: sessions (bdSeq, seq), births, aliases, data, historical
data, and the bounded parsing of NCMD and STATE (devices going offline: test_sparkplug_node_offline)."""

from __future__ import annotations

import contextlib
import itertools
import json
import struct
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from citynerve.gateway.api import Event, EventState, Quality, Reading, Severity
from citynerve.gateway.config.loader import load_config
from citynerve.gateway.uplink.sparkplug import (
    MAX_COMMAND_BYTES,
    MAX_STATE_BYTES,
    REBIRTH_METRIC,
    BdSeqFile,
    DataType,
    DeviceSpec,
    EdgeNode,
    NodeCommand,
    Payload,
    PointSpec,
    SessionStateError,
    SparkplugInputError,
    SparkplugNameError,
    StoredRecord,
    Verb,
    datatype_for_point,
    device_spec,
    parse_node_command,
    parse_state,
)
from citynerve.gateway.uplink.sparkplug._sizes import METRIC_BYTES, record_bytes

T0 = 1_780_000_000_000  # ms
METER = DeviceSpec(
    "meter-1",
    (PointSpec("voltage", DataType.FLOAT, "V"), PointSpec("temp", DataType.INT32, "C")),
    ("over_voltage",),
)


def node(**kw: Any) -> EdgeNode:
    args: dict[str, Any] = {"group_id": "city", "edge_node_id": "gw-1", "devices": [METER]}
    args.update(kw)
    return EdgeNode(**args)


def born(**kw: Any) -> EdgeNode:
    n = node(**kw)
    n.start_session()
    n.birth(T0)
    return n


def rec(seq: int, record: Reading | Event, replayed: bool = False) -> StoredRecord:
    return StoredRecord("ep-1", seq, record, replayed)


def reading(point: str, value: Any, ts_ms: int = T0 + 1000, device: str = "meter-1", **kw: Any) -> Reading:
    return Reading(device, point, value, "", ts_ms / 1000, **kw)


def decode(payload: bytes) -> Any:
    return Payload.FromString(payload)


def value_of(metric: Any) -> Any:
    field = metric.WhichOneof("value")
    return None if field is None else getattr(metric, field)


def test_session_will_is_ndeath_with_bdseq_and_births_start_at_seq_0() -> None:
    n = node(bd_seq=254)
    will = n.start_session()
    assert (will.topic, will.qos, will.retain) == ("spBv1.0/city/NDEATH/gw-1", 1, False)
    (m,) = decode(will.payload).metrics
    assert (m.name, m.datatype, m.long_value) == ("bdSeq", DataType.UINT64, 254)
    assert n.next_bd_seq == 255
    nbirth, dbirth = n.birth(T0)
    p = decode(nbirth.payload)
    assert nbirth.topic == "spBv1.0/city/NBIRTH/gw-1" and p.seq == 0 and p.timestamp == T0
    assert [(m.name, value_of(m)) for m in p.metrics[:2]] == [("bdSeq", 254), (REBIRTH_METRIC, False)]
    assert dbirth.topic == "spBv1.0/city/DBIRTH/gw-1/meter-1" and decode(dbirth.payload).seq == 1
    # bdSeq wraps 255 -> 0 with the next session; the NBIRTH of that session says so
    n.start_session()
    assert n.bd_seq == 255 and n.next_bd_seq == 0
    n.start_session()
    assert n.bd_seq == 0
    assert decode(n.birth(T0)[0].payload).metrics[0].long_value == 0


def test_seq_wraps_after_255_and_every_message_takes_the_next() -> None:
    n = born()
    seqs = []
    for i in range(300):
        (m,) = n.encode([rec(i + 1, reading("voltage", float(i)))], T0 + 2000)
        seqs.append(decode(m.payload).seq)
    assert seqs[:3] == [2, 3, 4]  # NBIRTH 0, DBIRTH 1
    assert seqs[253] == 255 and seqs[254] == 0 and seqs[255] == 1
    assert all((b - a) % 256 == 1 for a, b in itertools.pairwise(seqs))


def test_aliases_are_unique_across_the_node_and_data_uses_them() -> None:
    n = node(devices=[METER, DeviceSpec("smoke-3f", (), ("smoke",))], node_alarm_kinds=("outbox_dropped",))
    n.start_session()
    births = n.birth(T0)
    assert [b.verb for b in births] == [Verb.NBIRTH, Verb.DBIRTH, Verb.DBIRTH]
    named = [(m.name, m.alias) for b in births for m in decode(b.payload).metrics if m.name != "bdSeq"]
    aliases = [a for _, a in named]
    assert len(aliases) == len(set(aliases))
    assert ("Alarms/smoke/Active", dict(named)["Alarms/smoke/Active"]) in named
    by_name = dict(named)
    (ddata,) = n.encode([rec(5, reading("voltage", 230.1))], T0 + 2000)
    (m,) = decode(ddata.payload).metrics
    assert not m.name and m.alias == by_name["voltage"] and m.datatype == DataType.FLOAT
    assert m.float_value == struct.unpack("<f", struct.pack("<f", 230.1))[0]
    props = dict(zip(m.properties.keys, (value_of(v) for v in m.properties.values), strict=True))
    assert props == {"epoch": "ep-1", "seq": 5, "prev_seq": 0}


def test_historical_replayed_and_queued_before_the_session() -> None:
    n = node()
    n.start_session()
    n.birth(T0, live_from=("ep-1", 2))  # the outbox's next seq at the session's first birth
    out = n.encode(
        [
            rec(1, reading("voltage", 1.0, T0 + 60_000)),  # queued before the session: historical
            rec(2, reading("voltage", 2.0, T0 - 60_000)),  # after it: live, whatever its stamp
            rec(3, reading("voltage", 3.0, T0 + 6), replayed=True),  # from the backlog
            rec(4, reading("temp", -5, T0 + 7, quality=Quality.STALE)),
        ],
        T0 + 10,
    )
    metrics = decode(out[0].payload).metrics
    assert [m.is_historical for m in metrics] == [True, False, True, False]
    assert [m.timestamp for m in metrics] == [T0 + 60_000, T0 - 60_000, T0 + 6, T0 + 7]
    assert metrics[3].int_value == (-5) & 0xFFFFFFFF and list(metrics[3].properties.keys) == [
        "epoch",
        "seq",
        "prev_seq",
        "Quality",
    ]
    assert metrics[3].properties.values[3].int_value == 500
    # a rebirth carries the present values: the newest record's, sent as historical or not
    _, db = n.birth(T0 + 20)
    current = {m.name: value_of(m) for m in decode(db.payload).metrics}
    assert current["voltage"] == 3.0 and current["temp"] == (-5) & 0xFFFFFFFF


def test_events_are_metrics_of_an_alarms_folder() -> None:
    n = born()
    raised = Event(
        "meter-1",
        "over_voltage",
        EventState.RAISED,
        Severity.CRITICAL,
        (T0 + 1) / 1000,
        rule="v>250",
        message="253 V",
        id="ev-1",
    )
    cleared = Event(
        "meter-1",
        "over_voltage",
        EventState.CLEARED,
        Severity.CRITICAL,
        (T0 + 2) / 1000,
        rule="v>250",
        message="back",
        id="ev-2",
    )
    (m,) = n.encode([rec(1, raised), rec(2, cleared)], T0 + 10)
    names = {}
    for b in n.birth(T0 + 20):
        names |= {x.alias: x.name for x in decode(b.payload).metrics}
    got = [(names[x.alias], value_of(x)) for x in decode(m.payload).metrics]
    assert got == [
        ("Alarms/over_voltage/Active", True),
        ("Alarms/over_voltage/Severity", 4),
        ("Alarms/over_voltage/Rule", "v>250"),
        ("Alarms/over_voltage/Message", "253 V"),
        ("Alarms/over_voltage/EventId", "ev-1"),
        ("Alarms/over_voltage/Active", False),
        ("Alarms/over_voltage/Severity", 4),
        ("Alarms/over_voltage/Rule", "v>250"),
        ("Alarms/over_voltage/Message", "back"),
        ("Alarms/over_voltage/EventId", "ev-2"),
    ]


def test_unforeseen_metrics_cause_a_birth_first() -> None:
    n = born()
    # a kind the DBIRTH did not declare, with a subject, and a new point: the device is born again
    # with both (once for the batch), then the data follows in one DDATA
    ev = Event("meter-1", "tamper", EventState.RAISED, Severity.MAJOR, (T0 + 1) / 1000, subject="lid")
    out = n.encode(
        [rec(1, ev), rec(2, reading("new_point", 7)), rec(3, reading("other_point", 1.5))], T0 + 10
    )
    assert [m.verb for m in out] == [Verb.DBIRTH, Verb.DDATA]
    birth = {x.name: x for x in decode(out[0].payload).metrics}
    assert "Alarms/tamper/lid/Active" in birth
    assert birth["new_point"].datatype == DataType.INT64 and birth["other_point"].datatype == DataType.DOUBLE
    assert {x.alias for x in decode(out[1].payload).metrics} <= {x.alias for x in birth.values()}
    # a device the config did not name; a node-level event of an unforeseen kind: a full rebirth
    node_ev = Event(
        "gw-1", "outbox_dropped", EventState.RAISED, Severity.MAJOR, (T0 + 3) / 1000, one_shot=True
    )
    out = n.encode([rec(3, reading("x", True, device="other")), rec(4, node_ev)], T0 + 20)
    assert [(m.verb, m.device_id) for m in out] == [
        (Verb.DBIRTH, "other"),
        (Verb.DDATA, "other"),
        (Verb.NBIRTH, None),
        (Verb.DBIRTH, "meter-1"),
        (Verb.DBIRTH, "other"),
        (Verb.NDATA, None),
    ]
    assert decode(out[2].payload).seq == 0
    # a one-shot report leaves Active alone
    assert len(decode(out[-1].payload).metrics) == 4


def test_messages_are_split_at_the_metric_limit_and_runs_follow_record_order() -> None:
    n = born(devices=[METER, DeviceSpec("m2", (PointSpec("p", DataType.DOUBLE),))], max_metrics_per_message=3)
    recs = [rec(i, reading("voltage", float(i))) for i in range(7)]
    recs.insert(4, rec(99, reading("p", 1.0, device="m2")))
    out = n.encode(recs, T0 + 5000)
    assert [(m.device_id, len(decode(m.payload).metrics)) for m in out] == [
        ("meter-1", 3),
        ("meter-1", 1),
        ("m2", 1),
        ("meter-1", 3),
    ]


_VALUES = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(2**70), max_value=2**70),
    st.floats(allow_nan=True, allow_infinity=True),
    st.text(max_size=3000),
)


@given(
    values=st.lists(_VALUES, min_size=1, max_size=40),
    quality=st.sampled_from(list(Quality)),
    message=st.text(max_size=2000),
    replayed=st.booleans(),
)
@settings(max_examples=60, deadline=None)
def test_record_bytes_bounds_a_data_message_and_max_bytes_holds(
    values: list[Any], quality: Quality, message: str, replayed: bool
) -> None:
    """`record_bytes` bounds the data message carrying a record alone (what decides a drop for a
    broker's packet size limit), and `encode(max_bytes=...)` keeps every data message within it
    while a record fits, every record carried once, in order."""
    n = born()
    records: list[Reading | Event] = [
        reading(f"p{i % 4}", v, T0 + 1000 + i, quality=quality) for i, v in enumerate(values)
    ]
    alarm = Event("meter-1", "over_voltage", EventState.RAISED, Severity.MAJOR, T0 / 1000, message=message)
    stored = [rec(2**40 + i, r, replayed) for i, r in enumerate([*records, alarm])]
    for s in stored:
        data = [m for m in n.encode([s], T0 + 5000) if m.verb in (Verb.DDATA, Verb.NDATA)]
        assert len(data) == 1 and len(data[0].payload) <= record_bytes(s.record)
    limit = 4 * METRIC_BYTES + max(record_bytes(s.record) for s in stored)
    out = [m for m in n.encode(stored, T0 + 6000, max_bytes=limit) if m.verb in (Verb.DDATA, Verb.NDATA)]
    assert all(len(m.payload) <= limit for m in out)
    carried = {x.properties.values[1].long_value for m in out for x in decode(m.payload).metrics}
    assert sorted(carried) == [s.seq for s in stored]


def test_limits_and_usage_errors() -> None:
    with pytest.raises(SparkplugNameError):
        EdgeNode(group_id="a/b", edge_node_id="gw")
    with pytest.raises(SparkplugNameError):
        EdgeNode(group_id="g", edge_node_id="gw", devices=[DeviceSpec("x+y")])
    n = node()
    with pytest.raises(SessionStateError):
        n.encode([], T0)
    n.start_session()
    with pytest.raises(SessionStateError):
        n.encode([rec(1, reading("voltage", 1.0))], T0)
    n = born(max_devices=1)
    assert n.encode([rec(1, reading("x", 1.0, device="too-many"))], T0) == [] and n.skipped == 1


@pytest.mark.parametrize(
    ("point_type", "scaled", "expected"),
    [
        ("float32", False, DataType.FLOAT),
        ("float64", False, DataType.DOUBLE),
        ("int16", False, DataType.INT32),  # widened: decoders disagree on negative Int16
        ("uint16", False, DataType.UINT16),
        ("uint32", False, DataType.UINT64),  # widened: decoders disagree on UInt32's field
        ("int64", False, DataType.INT64),
        ("uint64", False, DataType.UINT64),
        ("bool", False, DataType.BOOLEAN),
        ("string", False, DataType.STRING),
        ("int16", True, DataType.DOUBLE),
    ],
)
def test_point_types_map_to_datatypes(point_type: str, scaled: bool, expected: DataType) -> None:
    assert datatype_for_point(point_type, scaled=scaled) is expected


def ncmd(*metrics: dict[str, Any]) -> bytes:
    p = Payload(timestamp=T0)
    for m in metrics:
        p.metrics.add(**m)
    return bytes(p.SerializeToString())


def test_ncmd_rebirth_by_name_or_alias() -> None:
    n = born()
    topic = n.command_topic
    assert topic == "spBv1.0/city/NCMD/gw-1"
    out = n.command(topic, ncmd({"name": REBIRTH_METRIC, "datatype": 11, "boolean_value": True}), T0 + 1)
    assert [m.verb for m in out] == [Verb.NBIRTH, Verb.DBIRTH]
    by_alias = ncmd({"alias": 0, "datatype": 11, "boolean_value": True})
    assert parse_node_command(topic, topic, by_alias, 0) is NodeCommand.REBIRTH
    assert parse_node_command(topic, topic, ncmd({"name": REBIRTH_METRIC, "boolean_value": False}), 0) is None
    assert parse_node_command(topic, topic, ncmd({"name": "Other", "boolean_value": True}), 0) is None


@pytest.mark.parametrize(
    ("payload", "reason"),
    [
        (b"\xff\xff\xff", "not a Sparkplug B payload"),
        (b"\x12" + b"\x00" * 10, "not a Sparkplug B payload"),
        (b"\x00" * (MAX_COMMAND_BYTES + 1), "more than"),
        (ncmd(*[{"name": "x"}] * 257), "metrics, more than"),
        (ncmd({"name": REBIRTH_METRIC, "string_value": "yes"}), "must be a Boolean"),
    ],
)
def test_bad_ncmd_is_a_typed_error(payload: bytes, reason: str) -> None:
    topic = "spBv1.0/city/NCMD/gw-1"
    with pytest.raises(SparkplugInputError, match=reason) as err:
        parse_node_command(topic, topic, payload, 0)
    assert err.value.topic == topic
    with pytest.raises(SparkplugInputError, match="not this edge node"):
        parse_node_command("spBv1.0/city/NCMD/gw-2", topic, ncmd(), 0)


def test_state_of_the_primary_host() -> None:
    topic = EdgeNode.state_topic("scada")
    assert topic == "spBv1.0/STATE/scada"
    state = parse_state(topic, "scada", json.dumps({"online": True, "timestamp": T0}).encode())
    assert state.online and state.timestamp_ms == T0 and state.host_id == "scada"


@pytest.mark.parametrize(
    "payload",
    [
        b"",
        b"not json",
        b"[]",
        b'{"online": "yes", "timestamp": 1}',
        b'{"online": true}',
        b'{"online": true, "timestamp": true}',
        b'{"online": true, "timestamp": -1}',
        b'{"online": true, "timestamp": 1.5}',
        b"\xff\xfe",
        b'{"online": true, "timestamp": 1, "pad": "' + b"x" * MAX_STATE_BYTES + b'"}',
        b"[" * 1002,  # under the size limit; reached the parser's recursion limit (RecursionError)
    ],
)
def test_bad_state_is_a_typed_error(payload: bytes) -> None:
    with pytest.raises(SparkplugInputError):
        parse_state("spBv1.0/STATE/scada", "scada", payload)


def test_state_of_another_host_is_refused() -> None:
    with pytest.raises(SparkplugInputError, match="not the STATE topic"):
        parse_state("spBv1.0/STATE/other", "scada", b'{"online": true, "timestamp": 1}')


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=300))
def test_any_bytes_as_ncmd_or_state_give_a_result_or_a_typed_error(raw: bytes) -> None:
    topic = "spBv1.0/city/NCMD/gw-1"
    for parse in (
        lambda: parse_node_command(topic, topic, raw, 0),
        lambda: parse_state("spBv1.0/STATE/h", "h", raw),
    ):
        with contextlib.suppress(SparkplugInputError):
            parse()


INT_TYPES = {
    DataType.INT32: st.integers(-(2**31), 2**31 - 1),
    DataType.INT64: st.integers(-(2**63), 2**63 - 1),
    DataType.UINT16: st.integers(0, 2**16 - 1),
    DataType.UINT64: st.integers(0, 2**64 - 1),
}


@settings(max_examples=200, deadline=None)
@given(st.sampled_from(sorted(INT_TYPES)).flatmap(lambda dt: st.tuples(st.just(dt), INT_TYPES[dt])))
def test_integers_round_trip_through_the_wire(case: tuple[DataType, int]) -> None:
    datatype, value = case
    n = born(devices=[DeviceSpec("d", (PointSpec("p", datatype),))])
    (m,) = n.encode([rec(1, reading("p", value, device="d"))], T0 + 5000)
    (metric,) = decode(m.payload).metrics
    raw = value_of(metric)
    bits = 32 if datatype in (DataType.INT32, DataType.UINT16) else 64
    signed = datatype in (DataType.INT32, DataType.INT64)
    assert (raw - (1 << bits) if signed and raw >= 1 << (bits - 1) else raw) == value


@settings(max_examples=200, deadline=None)
@given(st.floats(allow_nan=False, width=32), st.floats(allow_nan=False))
def test_floats_round_trip_through_the_wire(f32: float, f64: float) -> None:
    n = born(devices=[DeviceSpec("d", (PointSpec("f", DataType.FLOAT), PointSpec("g", DataType.DOUBLE)))])
    (m,) = n.encode([rec(1, reading("f", f32, device="d")), rec(2, reading("g", f64, device="d"))], T0 + 5000)
    a, b = decode(m.payload).metrics
    assert a.float_value == f32 and b.double_value == f64


def test_a_value_its_datatype_cannot_hold_retypes_the_metric_with_a_birth() -> None:
    n = born()
    recs = [rec(1, reading("temp", 2.5)), rec(2, reading("temp", None)), rec(3, reading("temp", 2**40))]
    dbirth, ddata = n.encode(recs, T0 + 5000)
    assert dbirth.verb is Verb.DBIRTH
    temp = {x.name: x for x in decode(dbirth.payload).metrics}["temp"]
    assert temp.datatype == DataType.DOUBLE
    metrics = decode(ddata.payload).metrics
    assert [x.alias for x in metrics] == [temp.alias] * 3
    assert [(x.datatype, value_of(x), x.is_null) for x in metrics] == [
        (DataType.DOUBLE, 2.5, False),
        (DataType.DOUBLE, None, True),
        (DataType.DOUBLE, float(2**40), False),
    ]
    # a string then: String, and numbers after it stay readable as text
    out = n.encode([rec(4, reading("temp", "n/a")), rec(5, reading("temp", 3))], T0 + 6000)
    assert [m.verb for m in out] == [Verb.DBIRTH, Verb.DDATA]
    assert [value_of(x) for x in decode(out[1].payload).metrics] == ["n/a", "3"]
    # 2**70 fits no integer type: Double
    n2 = born(devices=[DeviceSpec("d", (PointSpec("p", DataType.INT64),))])
    _, ddata = n2.encode([rec(1, reading("p", 2**70, device="d"))], T0 + 5000)
    assert decode(ddata.payload).metrics[0].double_value == float(2**70)


def test_bdseq_file_survives_restarts(tmp_path: Path) -> None:
    f = BdSeqFile(tmp_path / "sparkplug.bdseq")
    assert f.load() == 0
    f.save(255)
    assert BdSeqFile(f.path).load() == 255
    f.save(256)
    assert f.load() == 0
    f.path.write_bytes(b"garbage")
    assert f.load() == 0
    f.path.write_bytes(b"1" * 100)
    assert f.load() == 0


class HostModel:
    """What a Sparkplug host application tracks, strictly: it refuses data it could not place."""

    def __init__(self) -> None:
        self.seq: int | None = None
        self.node_aliases: set[int] = set()
        self.aliases: dict[str, set[int]] = {}
        self.alive: set[str] = set()

    def take(self, m: Any) -> None:
        p = decode(m.payload)
        if m.verb is Verb.NBIRTH:
            assert p.seq == 0
            self.node_aliases = {x.alias for x in p.metrics if x.name != "bdSeq"}
            self.alive = set()
        else:
            assert self.seq is not None and p.seq == (self.seq + 1) % 256, "seq must follow"
        self.seq = int(p.seq)
        if m.verb is Verb.DBIRTH:
            self.aliases[m.device_id] = {x.alias for x in p.metrics}
            self.alive.add(m.device_id)
            assert all(x.name for x in p.metrics)
        elif m.verb is Verb.DDEATH:
            self.alive.discard(m.device_id)
        elif m.verb is Verb.DDATA:
            assert m.device_id in self.alive, "DDATA of a device that is not born"
            assert {x.alias for x in p.metrics} <= self.aliases[m.device_id], "alias not in its DBIRTH"
        elif m.verb is Verb.NDATA:
            assert {x.alias for x in p.metrics} <= self.node_aliases
        if m.verb in (Verb.NDATA, Verb.DDATA):
            assert all(list(x.properties.keys)[:2] == ["epoch", "seq"] for x in p.metrics)


DEVICES = ("meter-1", "m2", "gw-1")
RECORDS = st.one_of(
    st.builds(
        lambda d, p, v, q: Reading(d, p, v, "", (T0 + 1000) / 1000, q),
        st.sampled_from(DEVICES),
        st.sampled_from(("voltage", "temp", "other")),
        st.one_of(st.none(), st.booleans(), st.integers(-(2**70), 2**70), st.floats(), st.text(max_size=5)),
        st.sampled_from(list(Quality)),
    ),
    st.builds(
        lambda d, k, s, subj, one: Event(
            d, k, s, Severity.MAJOR, (T0 + 1000) / 1000, subject=subj, one_shot=one
        ),
        st.sampled_from(DEVICES),
        st.sampled_from(("device_offline", "over_voltage", "tamper")),
        st.sampled_from(list(EventState)),
        st.sampled_from(("", "*", "a", "b")),
        st.booleans(),
    ),
)


@settings(max_examples=150, deadline=None)
@given(st.lists(st.lists(RECORDS, max_size=12), max_size=6), st.integers(1, 5))
def test_a_strict_host_can_follow_every_message(batches: list[list[Reading | Event]], per_msg: int) -> None:
    n = node(max_metrics_per_message=per_msg)
    host = HostModel()
    n.start_session()
    for m in n.birth(T0):
        host.take(m)
    seq = 0
    for batch in batches:
        stored = []
        for r in batch:
            seq += 1
            stored.append(rec(seq, r))
        for m in n.encode(stored, T0 + 2000):
            host.take(m)


def test_device_specs_from_the_shipped_example_configs() -> None:
    examples = Path(__file__).resolve().parents[2] / "config" / "examples"
    modbus = {d.id: d for d in load_config(examples / "building-modbus.toml").devices}
    spec = device_spec(modbus["wm-0301"], ("leak", "leak"))
    types = {p.name: (p.datatype, p.unit) for p in spec.points}
    assert types["flow_rate"] == (DataType.FLOAT, "m3/h")
    assert types["positive_total"] == (DataType.INT32, "m3")
    assert spec.alarm_kinds == ("leak",)
    smoke = {p.name: p.datatype for p in device_spec(modbus["sd-3f"]).points}
    assert smoke["smoke_alarm"] is DataType.BOOLEAN and smoke["alarm_state"] is DataType.UINT16
    # DL/T 645 and fire panel points state no type: they are declared by their first value
    meters = {d.id: d for d in load_config(examples / "building-rs485-meters.toml").devices}
    em = device_spec(meters["em-301"])
    assert em.points == ()
    n = born(devices=[em])
    out = n.encode(
        [
            rec(1, reading("voltage", 230.1, device="em-301")),
            rec(2, reading("energy_import", 1234.5, device="em-301")),
        ],
        T0 + 5000,
    )
    assert [m.verb for m in out] == [Verb.DBIRTH, Verb.DDATA]
