"""What the edge node reads from the broker: the primary host's STATE and node commands (NCMD).

Both come from outside, so both are bounded (size, metric count) and their errors typed; the
session logs and ignores a bad one, never stops on it.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass
from typing import Any

from google.protobuf.message import DecodeError

from citynerve.gateway.api import TransientError
from citynerve.gateway.payload import PayloadError, load_json
from citynerve.gateway.uplink.sparkplug._proto import Payload

MAX_STATE_BYTES = 1024
"""A STATE message is `{"online": true, "timestamp": <ms>}`: a kilobyte is plenty."""
MAX_COMMAND_BYTES = 64 * 1024
MAX_COMMAND_METRICS = 256
REBIRTH_METRIC = "Node Control/Rebirth"


class SparkplugInputError(TransientError):
    """A STATE or NCMD message the edge node cannot use: `topic` and `reason` say which and why."""

    def __init__(self, topic: str, reason: str) -> None:
        self.topic = topic
        self.reason = reason
        super().__init__(f"sparkplug {topic}: {reason}")


@dataclass(frozen=True, slots=True)
class HostState:
    """The primary host application's STATE (Sparkplug 3.0: `spBv1.0/STATE/<host_id>`)."""

    host_id: str
    online: bool
    timestamp_ms: int


class NodeCommand(enum.StrEnum):
    REBIRTH = "rebirth"


def parse_state(topic: str, host_id: str, payload: bytes) -> HostState:
    """The STATE of `host_id` from a message on `topic`; SparkplugInputError unless well formed."""
    if topic != f"spBv1.0/STATE/{host_id}":
        raise SparkplugInputError(topic, f"not the STATE topic of host {host_id!r}")
    try:  # the bounded loader: `[` * 1000 is refused, it no longer reaches the recursion limit
        obj: Any = load_json(payload, where=topic, max_bytes=MAX_STATE_BYTES)
    except PayloadError as err:
        raise SparkplugInputError(topic, err.reason) from err
    if not isinstance(obj, dict):
        raise SparkplugInputError(topic, "not a JSON object")
    online, ts = obj.get("online"), obj.get("timestamp")
    if not isinstance(online, bool):
        raise SparkplugInputError(topic, "`online` must be true or false")
    if isinstance(ts, bool) or not isinstance(ts, int) or not 0 <= ts < 2**63:
        raise SparkplugInputError(topic, "`timestamp` must be milliseconds since the epoch (an integer)")
    return HostState(host_id, online, ts)


def parse_node_command(
    topic: str, expected_topic: str, payload: bytes, rebirth_alias: int
) -> NodeCommand | None:
    """The command in an NCMD message: REBIRTH for `Node Control/Rebirth` = true (by name or by its
    alias), None when it asks for nothing the edge node does. SparkplugInputError when malformed."""
    if topic != expected_topic:
        raise SparkplugInputError(topic, f"not this edge node's NCMD topic {expected_topic!r}")
    if len(payload) > MAX_COMMAND_BYTES:
        raise SparkplugInputError(topic, f"{len(payload)} bytes, more than {MAX_COMMAND_BYTES}")
    try:
        msg = Payload.FromString(payload)
    except DecodeError as err:
        raise SparkplugInputError(topic, f"not a Sparkplug B payload: {err}") from err
    if len(msg.metrics) > MAX_COMMAND_METRICS:
        raise SparkplugInputError(topic, f"{len(msg.metrics)} metrics, more than {MAX_COMMAND_METRICS}")
    for metric in msg.metrics:
        named = metric.name == REBIRTH_METRIC or (
            not metric.name and metric.HasField("alias") and metric.alias == rebirth_alias
        )
        if named:
            if metric.WhichOneof("value") != "boolean_value":
                raise SparkplugInputError(topic, f"{REBIRTH_METRIC} must be a Boolean")
            if metric.boolean_value:
                return NodeCommand.REBIRTH
    return None
