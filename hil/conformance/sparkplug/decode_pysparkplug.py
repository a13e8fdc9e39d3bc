"""Decodes the gateway's Sparkplug B messages with PyPI `pysparkplug` and prints what it sees as JSON.

Run by tests/uplink/test_sparkplug_oracles.py as `python -S` with PYTHONPATH = a directory that
`pip install --target` filled from requirements-pysparkplug.txt (pysparkplug pins paho-mqtt < 2,
which the gateway's aiomqtt cannot share a venv with). stdin: [{"topic", "hex"}, ...]
in publish order; stdout: {"messages": [...], "schema": {...}}. Data messages are decoded against
the latest birth of their node or device, as a host application does (aliases -> names, datatypes).
Metric properties (which pysparkplug's Metric does not keep) are read from its generated protobuf
descriptor, and "schema" lists that descriptor's fields, for comparison with the gateway's own.
"""

import json
import sys
from typing import Any

from pysparkplug import DBirth, DData, DDeath, NBirth, NData, NDeath
from pysparkplug._protobuf import Payload as PbPayload

DECODERS = {"NBIRTH": NBirth, "DBIRTH": DBirth, "NDATA": NData, "DDATA": DData}


def metric_dict(metric: Any) -> dict[str, Any]:
    return {
        "name": metric.name,
        "alias": metric.alias,
        "datatype": metric.datatype.name,
        "value": metric.value,
        "timestamp": metric.timestamp,
        "is_historical": metric.is_historical,
        "is_null": metric.is_null,
    }


def properties(pb_metric: Any) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in zip(pb_metric.properties.keys, pb_metric.properties.values, strict=True):
        field = value.WhichOneof("value")
        out[key] = getattr(value, field) if field else None
    return out


def schema() -> dict[str, dict[str, list[Any]]]:
    out: dict[str, dict[str, list[Any]]] = {}
    messages = {
        "Payload": PbPayload,
        "Payload.PropertyValue": PbPayload.PropertyValue,
        "Payload.PropertySet": PbPayload.PropertySet,
        "Payload.Metric": PbPayload.Metric,
    }
    for name, cls in messages.items():
        out[name] = {
            f.name: [f.number, f.type, 3 if f.is_repeated else 1, f.containing_oneof is not None]
            for f in cls.DESCRIPTOR.fields
        }
    return out


def main() -> None:
    births: dict[str, Any] = {}
    out: list[dict[str, Any]] = []
    for m in json.load(sys.stdin):
        topic = m["topic"]
        raw = bytes.fromhex(m["hex"])
        parts = topic.split("/")
        verb = parts[2]
        owner = "/".join(parts[3:])  # edge node, or edge node/device
        if verb == "NDEATH":
            decoded = NDeath.decode(raw)
            out.append({"topic": topic, "metrics": [metric_dict(decoded.bd_seq_metric)]})
            continue
        if verb == "DDEATH":
            decoded = DDeath.decode(raw)
            out.append({"topic": topic, "timestamp": decoded.timestamp, "seq": decoded.seq, "metrics": []})
            continue
        decoded = DECODERS[verb].decode(raw, birth=births.get(owner))
        if verb in ("NBIRTH", "DBIRTH"):
            births[owner] = decoded
        pb = PbPayload.FromString(raw)
        out.append(
            {
                "topic": topic,
                "timestamp": decoded.timestamp,
                "seq": decoded.seq,
                "metrics": [
                    metric_dict(x) | {"properties": properties(p)}
                    for x, p in zip(decoded.metrics, pb.metrics, strict=True)
                ],
            }
        )
    json.dump({"messages": out, "schema": schema()}, sys.stdout)


if __name__ == "__main__":
    main()
