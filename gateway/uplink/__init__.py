"""The uplink to the city platform: MQTT store-and-forward from the SQLite outbox.

`Uplink` publishes outbox rows (events lane first) and deletes them only once acknowledged;
`UpstreamConfig` is the `[upstream]` table; `CommandTarget` is what the runtime offers to signed
platform commands; `Encoding` keeps the wire format pluggable (JSON v1 now, Sparkplug B later).
The contract is docs/upstream-contract.md with JSON Schemas in `schemas/v1/`.
"""

from citynerve.gateway.uplink._connection import mark_disconnect_seen
from citynerve.gateway.uplink._uplink import Uplink, ack_key
from citynerve.gateway.uplink.commands import (
    CommandProcessor,
    CommandTarget,
    NonceCache,
    PointInfo,
    build_command,
)
from citynerve.gateway.uplink.config import BackoffConfig, CommandsConfig, TlsConfig, UpstreamConfig
from citynerve.gateway.uplink.encoding import (
    CommandOutcome,
    CommandResult,
    Encoding,
    MqttMessage,
    PlatformAck,
    RejectReason,
    RowBatch,
)
from citynerve.gateway.uplink.errors import BrokerError, CommandRejectedError
from citynerve.gateway.uplink.json_v1 import JsonV1Encoding
from citynerve.gateway.uplink.schemas import load_schema, schema_path
from citynerve.gateway.uplink.state import LinkState, UplinkState

__all__ = [
    "BackoffConfig",
    "BrokerError",
    "CommandOutcome",
    "CommandProcessor",
    "CommandRejectedError",
    "CommandResult",
    "CommandTarget",
    "CommandsConfig",
    "Encoding",
    "JsonV1Encoding",
    "LinkState",
    "MqttMessage",
    "NonceCache",
    "PlatformAck",
    "PointInfo",
    "RejectReason",
    "RowBatch",
    "TlsConfig",
    "Uplink",
    "UplinkState",
    "UpstreamConfig",
    "ack_key",
    "build_command",
    "load_schema",
    "mark_disconnect_seen",
    "schema_path",
]
