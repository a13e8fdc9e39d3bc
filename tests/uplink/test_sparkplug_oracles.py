"""Every Sparkplug B message type the gateway sends, decoded by two third-party codecs: Eclipse
Tahu's JavaScript codec (npm `sparkplug-payload`, under Debian's node) and PyPI `pysparkplug`
(installed into a directory of its own and run with `python -S`: it pins paho-mqtt < 2, which
aiomqtt cannot share). Both must see the values, datatypes, aliases, timestamps, seqs, historical
flags and properties we meant to send.

The kits live in hil/conformance/sparkplug (package-lock.json, requirements-pysparkplug.txt);
CI installs them the way an integrator would (`npm ci`, `pip install -r`).
"""

from __future__ import annotations

import json
import os
import shutil
import struct
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from citynerve.gateway.api import Event, EventState, Quality, Reading, Severity
from citynerve.gateway.uplink.sparkplug import (
    REBIRTH_METRIC,
    DataType,
    DeviceSpec,
    EdgeNode,
    Payload,
    PointSpec,
    SparkplugMessage,
    StoredRecord,
)
from citynerve.gateway.uplink.sparkplug._proto import SCHEMA

KIT = Path(__file__).resolve().parents[2] / "hil" / "conformance" / "sparkplug"
T0 = 1_780_000_000_000
LIVE = T0 + 1_000
OLD = T0 - 3_600_000
EPOCH = "5f1c2a9e0b7d4c31"


def f32(x: float) -> float:
    return float(struct.unpack("<f", struct.pack("<f", x))[0])


POINTS = (
    PointSpec("voltage", DataType.FLOAT, "V"),
    PointSpec("energy", DataType.DOUBLE, "kWh"),
    PointSpec("temp", DataType.INT32, "C"),
    PointSpec("pulses", DataType.INT64),
    PointSpec("status", DataType.UINT16),
    PointSpec("total", DataType.UINT64),
    PointSpec("door", DataType.BOOLEAN),
    PointSpec("serial", DataType.STRING),
)
LIVE_VALUES: dict[str, Any] = {
    "voltage": 230.1,
    "energy": 12345.678,
    "temp": -5,
    "pulses": -(2**40),
    "status": 65535,
    "total": 2**63 + 5,
    "door": True,
    "serial": "SN-0042",
}


def scenario() -> tuple[list[SparkplugMessage], dict[str, Any]]:
    """One session with every message type: NDEATH (will), NBIRTH, DBIRTH, DDATA (live, historical,
    stale, alarms), NDATA (a node-level report), DDEATH, a rebirth (NCMD), an explicit NDEATH."""
    node = EdgeNode(
        group_id="city-north",
        edge_node_id="gw-7",
        devices=[DeviceSpec("meter-1", POINTS, ("over_voltage",)), DeviceSpec("smoke-3f", (), ("smoke",))],
        node_alarm_kinds=("outbox_dropped",),
        bd_seq=41,
    )
    out = [node.start_session(), *node.birth(T0)]
    records = [
        StoredRecord(EPOCH, 100 + i, Reading("meter-1", p, v, "", LIVE / 1000))
        for i, (p, v) in enumerate(LIVE_VALUES.items())
    ]
    old = Reading("meter-1", "voltage", 229.5, "V", OLD / 1000)
    records.append(StoredRecord(EPOCH, 20, old, replayed=True))
    records.append(
        StoredRecord(EPOCH, 108, Reading("meter-1", "status", 3, "", (LIVE + 1) / 1000, Quality.STALE))
    )
    smoke = Event(
        "smoke-3f",
        "smoke",
        EventState.RAISED,
        Severity.CRITICAL,
        (LIVE + 2) / 1000,
        rule="smoke",
        message="smoke on 3F",
        id="ev-smoke",
    )
    report = Event(
        "gw-7",
        "outbox_dropped",
        EventState.RAISED,
        Severity.MAJOR,
        (LIVE + 3) / 1000,
        rule="outbox",
        message="seq 5..9 dropped",
        id="ev-drop",
        one_shot=True,
    )
    offline = Event(
        "meter-1",
        "device_offline",
        EventState.RAISED,
        Severity.MAJOR,
        (LIVE + 4) / 1000,
        rule="bus",
        message="no answer",
        id="ev-off",
    )
    records += [
        StoredRecord(EPOCH, 110, smoke),
        StoredRecord(EPOCH, 111, report),
        StoredRecord(EPOCH, 112, offline),
    ]
    out += node.encode(records, T0 + 5_000)
    cmd = Payload(timestamp=T0)
    cmd.metrics.add(name=REBIRTH_METRIC, datatype=DataType.BOOLEAN, boolean_value=True)
    out += node.command(node.command_topic, cmd.SerializeToString(), T0 + 6_000)
    out.append(node.death())
    return out, {"records": records}


def _run(args: list[str], stdin: str, env: dict[str, str] | None = None) -> Any:
    done = subprocess.run(
        args, input=stdin, capture_output=True, text=True, env=env, timeout=120, check=False
    )
    assert done.returncode == 0, done.stderr[-3000:]
    return json.loads(done.stdout)


@dataclass(frozen=True)
class Oracles:
    js_kit: Path  # decode.js with node_modules/sparkplug-payload
    py_path: Path  # pysparkplug and its pinned dependencies (pip --target)


@pytest.fixture(scope="module")
def oracles(tmp_path_factory: pytest.TempPathFactory) -> Oracles:
    """Both kits installed the way an integrator would, at the same time (both are network-bound)."""
    npm = shutil.which("npm")
    assert shutil.which("node") and npm, "node and npm are needed (Debian: nodejs, npm; .ci/run has them)"
    kit = tmp_path_factory.mktemp("sparkplug-js")
    for name in ("package.json", "package-lock.json", "decode.js"):
        shutil.copy(KIT / name, kit / name)
    py_path = tmp_path_factory.mktemp("pysparkplug")
    installs = [
        subprocess.Popen([npm, "ci", "--no-audit", "--no-fund", "--loglevel=error"], cwd=kit),
        subprocess.Popen(
            [
                sys.executable,
                "-m",
                "pip",
                "install",
                "-q",
                "--disable-pip-version-check",
                "--target",
                str(py_path),
                "-r",
                str(KIT / "requirements-pysparkplug.txt"),
            ]
        ),
    ]
    assert [p.wait(timeout=600) for p in installs] == [0, 0]
    return Oracles(kit, py_path)


def _from_js(messages: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The JS codec's view in the shape of the pysparkplug script's: names from the births'
    aliases, 64-bit integers (printed as strings) as ints, datatypes in capitals."""
    names: dict[tuple[str, int], str] = {}
    out = []
    for m in messages:
        topic, p = m["topic"], m["payload"]
        owner = "/".join(topic.split("/")[3:])
        metrics = []
        for x in p.get("metrics", []):
            datatype = x["type"].upper()
            alias = int(x["alias"]) if "alias" in x else None
            if "name" in x and alias is not None:
                names[(owner, alias)] = x["name"]
            name = x["name"] if "name" in x else names[(owner, alias if alias is not None else -1)]
            value = x["value"]
            if value is not None and datatype in ("INT64", "UINT64"):
                value = int(value)
            props = {
                k: (int(v["value"]) if v["type"] in ("UInt64", "Int64") else v["value"])
                for k, v in x.get("properties", {}).items()
            }
            metrics.append(
                {
                    "name": name,
                    "alias": alias,
                    "datatype": datatype,
                    "value": value,
                    "timestamp": int(x["timestamp"]) if "timestamp" in x else None,
                    "is_historical": bool(x.get("isHistorical", False)),
                    "properties": props,
                }
            )
        out.append(
            {
                "topic": topic,
                "timestamp": int(p["timestamp"]) if "timestamp" in p else None,
                "seq": int(p["seq"]) if "seq" in p else None,
                "metrics": metrics,
            }
        )
    return out


def _from_py(messages: list[dict[str, Any]]) -> list[dict[str, Any]]:
    out = []
    for m in messages:
        verb = m["topic"].split("/")[2]
        metrics = [
            {k: x[k] for k in ("name", "alias", "datatype", "value", "timestamp", "is_historical")}
            | {"properties": x.get("properties", {})}
            for x in m["metrics"]
        ]
        if verb == "NDEATH":  # pysparkplug reads an NDEATH's bdSeq only, as the spec defines it
            metrics = [x | {"timestamp": None} for x in metrics]
        out.append(
            {
                "topic": m["topic"],
                "timestamp": m.get("timestamp") if verb != "NDEATH" else None,
                "seq": m.get("seq"),
                "metrics": metrics,
            }
        )
    return out


def _check_expected(view: list[dict[str, Any]]) -> None:
    """What we meant to send, as a host application sees it after decoding."""
    topics = [v["topic"] for v in view]
    assert topics == [
        "spBv1.0/city-north/NDEATH/gw-7",
        "spBv1.0/city-north/NBIRTH/gw-7",
        "spBv1.0/city-north/DBIRTH/gw-7/meter-1",
        "spBv1.0/city-north/DBIRTH/gw-7/smoke-3f",
        "spBv1.0/city-north/DDATA/gw-7/meter-1",
        "spBv1.0/city-north/DDATA/gw-7/smoke-3f",
        "spBv1.0/city-north/NDATA/gw-7",
        "spBv1.0/city-north/DDATA/gw-7/meter-1",
        "spBv1.0/city-north/DDEATH/gw-7/meter-1",
        "spBv1.0/city-north/NBIRTH/gw-7",
        "spBv1.0/city-north/DBIRTH/gw-7/smoke-3f",
        "spBv1.0/city-north/NDEATH/gw-7",
    ]
    assert [v["seq"] for v in view] == [None, 0, 1, 2, 3, 4, 5, 6, 7, 0, 1, None]
    for i in (0, 1, 9, 11):
        bd = view[i]["metrics"][0]
        assert (bd["name"], bd["datatype"], bd["value"]) == ("bdSeq", "UINT64", 41)
    assert [v["timestamp"] for v in view[1:11]] == [T0] * 3 + [T0 + 5_000] * 5 + [T0 + 6_000] * 2
    nbirth = {x["name"]: x for x in view[1]["metrics"]}
    assert nbirth[REBIRTH_METRIC]["value"] is False and nbirth[REBIRTH_METRIC]["datatype"] == "BOOLEAN"
    dbirth = {x["name"]: x for x in view[2]["metrics"]}
    assert {p.name: dbirth[p.name]["datatype"] for p in POINTS} == {p.name: p.datatype.name for p in POINTS}
    assert dbirth["voltage"]["properties"] == {"engUnit": "V"}
    assert dbirth["Alarms/over_voltage/Active"]["datatype"] == "BOOLEAN"
    assert dbirth["Alarms/device_offline/Severity"]["datatype"] == "INT32"
    births = [x for i in (1, 2, 3) for x in view[i]["metrics"] if x["name"] != "bdSeq"]
    aliases = [x["alias"] for x in births]
    assert None not in aliases and len(set(aliases)) == len(aliases)

    data = view[4]["metrics"]
    got = {x["name"]: x["value"] for x in data[: len(LIVE_VALUES)]}
    assert got == LIVE_VALUES | {"voltage": f32(230.1)}
    assert [x["alias"] for x in data[:8]] == [dbirth[p.name]["alias"] for p in POINTS]
    assert all(x["timestamp"] == LIVE and not x["is_historical"] for x in data[:8])
    # prev_seq: the seq of the record of the lane sent before (0: the first of the chain)
    chain = [{"epoch": EPOCH, "seq": 100 + i, "prev_seq": 99 + i if i else 0} for i in range(8)]
    assert [x["properties"] for x in data[:8]] == chain
    hist, stale = data[8], data[9]
    assert (hist["name"], hist["value"], hist["timestamp"], hist["is_historical"]) == (
        "voltage",
        f32(229.5),
        OLD,
        True,
    )
    assert hist["properties"] == {"epoch": EPOCH, "seq": 20, "prev_seq": 107}
    assert (stale["name"], stale["value"], stale["properties"]) == (
        "status",
        3,
        {"epoch": EPOCH, "seq": 108, "prev_seq": 20, "Quality": 500},
    )

    smoke = {x["name"]: x["value"] for x in view[5]["metrics"]}
    assert smoke == {
        "Alarms/smoke/Active": True,
        "Alarms/smoke/Severity": 4,
        "Alarms/smoke/Rule": "smoke",
        "Alarms/smoke/Message": "smoke on 3F",
        "Alarms/smoke/EventId": "ev-smoke",
    }
    assert all(x["properties"] == {"epoch": EPOCH, "seq": 110, "prev_seq": 0} for x in view[5]["metrics"])
    report = {x["name"]: x["value"] for x in view[6]["metrics"]}
    assert report == {
        "Alarms/outbox_dropped/Severity": 3,
        "Alarms/outbox_dropped/Rule": "outbox",
        "Alarms/outbox_dropped/Message": "seq 5..9 dropped",
        "Alarms/outbox_dropped/EventId": "ev-drop",
    }
    offline = {x["name"]: x["value"] for x in view[7]["metrics"]}
    assert offline["Alarms/device_offline/Active"] is True and view[8]["metrics"] == []
    # the rebirth: the dead meter is left out, the smoke alarm's current value is in its DBIRTH
    reborn = {x["name"]: x["value"] for x in view[10]["metrics"]}
    assert reborn["Alarms/smoke/Active"] is True


def test_tahu_js_and_pysparkplug_decode_every_message_type(oracles: Oracles) -> None:
    messages, _ = scenario()
    wire = json.dumps([{"topic": m.topic, "hex": m.payload.hex()} for m in messages])
    js = _from_js(_run(["node", str(oracles.js_kit / "decode.js")], wire))
    # -S: none of our venv's packages (aiomqtt's paho-mqtt 2, our protobuf), only pysparkplug's own
    py_out = _run(
        [sys.executable, "-S", str(KIT / "decode_pysparkplug.py")],
        wire,
        env={"PYTHONPATH": str(oracles.py_path), "PATH": os.environ.get("PATH", "")},
    )
    py = _from_py(py_out["messages"])
    _check_expected(js)
    _check_expected(py)
    assert js == py
    # the schema we declare is the one pysparkplug generated from Tahu's .proto, field for field
    for message, fields in SCHEMA.items():
        theirs = py_out["schema"][message]
        for name, number, type_, label, _ref, in_oneof in fields:
            assert theirs[name] == [number, type_, label, in_oneof], (message, name)
