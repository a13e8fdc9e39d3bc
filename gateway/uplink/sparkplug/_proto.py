"""The Sparkplug B payload schema, built at import as protobuf descriptors (runtime-built, no
generated `_pb2` file and no copied `.proto`).

Why runtime-built: the `protobuf` package does all encoding and decoding (varints, wire types,
unknown fields); we only declare the schema. Declaring it in Python keeps the build free of `protoc`
and of generated code tied to one protobuf release, and keeps a third-party file out of the tree.
Field names, numbers and types are those of the Sparkplug B 3.0 specification's payload
(package `org.eclipse.tahu.protobuf`); tests compare them field by field with the generated
descriptor that PyPI `pysparkplug` ships. Only the part the gateway sends and reads is declared
(scalar metric values, property sets); a peer's DataSet, Template or MetaData fields decode as
unknown fields and are ignored.

The schema lives in its own descriptor pool, so that it never clashes with another Sparkplug
library loaded in the same process.
"""

from __future__ import annotations

from typing import Any

from google.protobuf import descriptor_pb2, descriptor_pool, message_factory

PACKAGE = "org.eclipse.tahu.protobuf"

_F = descriptor_pb2.FieldDescriptorProto
# (name, number, type, label, message type or "", in the oneof `value`)
_Field = tuple[str, int, int, int, str, bool]
_OPT, _REP = _F.LABEL_OPTIONAL, _F.LABEL_REPEATED

_PROPERTY_VALUE: list[_Field] = [
    ("type", 1, _F.TYPE_UINT32, _OPT, "", False),
    ("is_null", 2, _F.TYPE_BOOL, _OPT, "", False),
    ("int_value", 3, _F.TYPE_UINT32, _OPT, "", True),
    ("long_value", 4, _F.TYPE_UINT64, _OPT, "", True),
    ("float_value", 5, _F.TYPE_FLOAT, _OPT, "", True),
    ("double_value", 6, _F.TYPE_DOUBLE, _OPT, "", True),
    ("boolean_value", 7, _F.TYPE_BOOL, _OPT, "", True),
    ("string_value", 8, _F.TYPE_STRING, _OPT, "", True),
]
_PROPERTY_SET: list[_Field] = [
    ("keys", 1, _F.TYPE_STRING, _REP, "", False),
    ("values", 2, _F.TYPE_MESSAGE, _REP, "PropertyValue", False),
]
_METRIC: list[_Field] = [
    ("name", 1, _F.TYPE_STRING, _OPT, "", False),
    ("alias", 2, _F.TYPE_UINT64, _OPT, "", False),
    ("timestamp", 3, _F.TYPE_UINT64, _OPT, "", False),
    ("datatype", 4, _F.TYPE_UINT32, _OPT, "", False),
    ("is_historical", 5, _F.TYPE_BOOL, _OPT, "", False),
    ("is_transient", 6, _F.TYPE_BOOL, _OPT, "", False),
    ("is_null", 7, _F.TYPE_BOOL, _OPT, "", False),
    ("properties", 9, _F.TYPE_MESSAGE, _OPT, "PropertySet", False),
    ("int_value", 10, _F.TYPE_UINT32, _OPT, "", True),
    ("long_value", 11, _F.TYPE_UINT64, _OPT, "", True),
    ("float_value", 12, _F.TYPE_FLOAT, _OPT, "", True),
    ("double_value", 13, _F.TYPE_DOUBLE, _OPT, "", True),
    ("boolean_value", 14, _F.TYPE_BOOL, _OPT, "", True),
    ("string_value", 15, _F.TYPE_STRING, _OPT, "", True),
    ("bytes_value", 16, _F.TYPE_BYTES, _OPT, "", True),
]
_PAYLOAD: list[_Field] = [
    ("timestamp", 1, _F.TYPE_UINT64, _OPT, "", False),
    ("metrics", 2, _F.TYPE_MESSAGE, _REP, "Metric", False),
    ("seq", 3, _F.TYPE_UINT64, _OPT, "", False),
    ("uuid", 4, _F.TYPE_STRING, _OPT, "", False),
    ("body", 5, _F.TYPE_BYTES, _OPT, "", False),
]

SCHEMA: dict[str, list[_Field]] = {
    "Payload": _PAYLOAD,
    "Payload.PropertyValue": _PROPERTY_VALUE,
    "Payload.PropertySet": _PROPERTY_SET,
    "Payload.Metric": _METRIC,
}
"""The declared messages and their fields (tests check them against a generated descriptor)."""


def _add_message(msg: descriptor_pb2.DescriptorProto, fields: list[_Field]) -> None:
    if any(in_oneof for *_, in_oneof in fields):
        msg.oneof_decl.add(name="value")
    for name, number, type_, label, ref, in_oneof in fields:
        f = msg.field.add(name=name, number=number, type=type_, label=label)
        if ref:
            f.type_name = f".{PACKAGE}.Payload.{ref}"
        if in_oneof:
            f.oneof_index = 0


def _build() -> Any:
    file = descriptor_pb2.FileDescriptorProto(
        name="citynerve/sparkplug_b.proto", package=PACKAGE, syntax="proto2"
    )
    payload = file.message_type.add(name="Payload")
    _add_message(payload, _PAYLOAD)
    for name in ("PropertyValue", "PropertySet", "Metric"):
        _add_message(payload.nested_type.add(name=name), SCHEMA[f"Payload.{name}"])
    pool = descriptor_pool.DescriptorPool()
    pool.Add(file)
    return message_factory.GetMessageClass(pool.FindMessageTypeByName(f"{PACKAGE}.Payload"))


Payload: Any = _build()
"""The protobuf message class of a Sparkplug B payload (`Payload()`, `Payload.FromString(b)`)."""
