"""The reference city platform (for integrators, tests and the demo).

- `PlatformConsumer`: subscribes with MQTT 5 shared subscriptions, dedupes, detects gaps, e2e acks,
  stores in SQLite (`PlatformStore`).
- `CommandSigner`: signs commands for a gateway (HMAC-SHA256 or Ed25519).
- `MosquittoBroker`, `start_demo_broker`: brokers for tests and the demo; `NatsCluster`
  (citynerve.hil.platform.nats): a three-node clustered broker (NATS with MQTT and JetStream).
- `print_platform_view`: the platform's view of readings and alarms arriving (the demo shows it).
Run `python -m citynerve.hil.platform --help`.
"""

from citynerve.hil.platform.broker import (
    MosquittoBroker,
    find_mosquitto,
    free_port,
    start_demo_broker,
)
from citynerve.hil.platform.commands import CommandSigner
from citynerve.hil.platform.consumer import Arrival, PlatformConsumer
from citynerve.hil.platform.store import LaneView, PlatformStore
from citynerve.hil.platform.view import format_arrival, print_platform_view

__all__ = [
    "Arrival",
    "CommandSigner",
    "LaneView",
    "MosquittoBroker",
    "PlatformConsumer",
    "PlatformStore",
    "find_mosquitto",
    "format_arrival",
    "free_port",
    "print_platform_view",
    "start_demo_broker",
]
