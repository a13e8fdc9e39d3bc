"""Sparkplug B 3.0 for the uplink: the gateway as a Sparkplug edge node, its devices as devices.

`EdgeNode` (pure) turns stored records into NBIRTH/NDEATH/DBIRTH/DDEATH/NDATA/DDATA messages;
`SparkplugSession` runs one over an aiomqtt client (will, births, the primary host's STATE,
rebirth). docs/sparkplug.md describes the mapping.
"""

from citynerve.gateway.uplink.sparkplug._bdseq import BdSeqFile
from citynerve.gateway.uplink.sparkplug._destination import SparkplugUplink
from citynerve.gateway.uplink.sparkplug._devices import device_spec
from citynerve.gateway.uplink.sparkplug._inputs import (
    MAX_COMMAND_BYTES,
    MAX_STATE_BYTES,
    REBIRTH_METRIC,
    HostState,
    NodeCommand,
    SparkplugInputError,
    parse_node_command,
    parse_state,
)
from citynerve.gateway.uplink.sparkplug._metrics import (
    DataType,
    DeviceSpec,
    PointSpec,
    Quality,
    datatype_for_point,
    datatype_of_value,
)
from citynerve.gateway.uplink.sparkplug._node import (
    ALARM_FIELDS,
    BD_SEQ_METRIC,
    NAMESPACE,
    EdgeNode,
    SessionStateError,
    SparkplugMessage,
    SparkplugNameError,
    StoredRecord,
    Verb,
)
from citynerve.gateway.uplink.sparkplug._proto import Payload
from citynerve.gateway.uplink.sparkplug._session import SparkplugSession

__all__ = [
    "ALARM_FIELDS",
    "BD_SEQ_METRIC",
    "MAX_COMMAND_BYTES",
    "MAX_STATE_BYTES",
    "NAMESPACE",
    "REBIRTH_METRIC",
    "BdSeqFile",
    "DataType",
    "DeviceSpec",
    "EdgeNode",
    "HostState",
    "NodeCommand",
    "Payload",
    "PointSpec",
    "Quality",
    "SessionStateError",
    "SparkplugInputError",
    "SparkplugMessage",
    "SparkplugNameError",
    "SparkplugSession",
    "SparkplugUplink",
    "StoredRecord",
    "Verb",
    "datatype_for_point",
    "datatype_of_value",
    "device_spec",
    "parse_node_command",
    "parse_state",
]
