"""The SQLite outbox: every reading and event waits here, durably, until the uplink has sent it.

- `Outbox`: synchronous, one thread. `AsyncOutbox`: the same on a dedicated worker thread, for
  asyncio code (sqlite never runs on the event loop). `OutboxWriter`: batches the pipeline's
  output into few commits, events first.
- See docs/store.md for the layout, the retention policy and what survives a power cut.
"""

from citynerve.gateway.store._async import AsyncOutbox, CommitCallback
from citynerve.gateway.store._blocks import QUALITIES, BlockError, MarkedReading, ReadingBlock, ReadingMark
from citynerve.gateway.store._codec import unstorable
from citynerve.gateway.store._config import StoreConfig
from citynerve.gateway.store._destinations import DEFAULT_DESTINATION, RecordFilter, position_key
from citynerve.gateway.store._errors import (
    RecordError,
    SchemaVersionError,
    StoreBusyError,
    StoreError,
    StoreFullError,
)
from citynerve.gateway.store._outbox import Outbox, OutboxRow
from citynerve.gateway.store._readonly import read_rows, read_state, read_stats
from citynerve.gateway.store._schema import BLOCK_READINGS
from citynerve.gateway.store._schema import latest_version as schema_version
from citynerve.gateway.store._stats import Lane, LaneStats, StoreStats
from citynerve.gateway.store._writer import OutboxWriter, WriterCounters

__all__ = [
    "BLOCK_READINGS",
    "DEFAULT_DESTINATION",
    "QUALITIES",
    "AsyncOutbox",
    "BlockError",
    "CommitCallback",
    "Lane",
    "LaneStats",
    "MarkedReading",
    "Outbox",
    "OutboxRow",
    "OutboxWriter",
    "ReadingBlock",
    "ReadingMark",
    "RecordError",
    "RecordFilter",
    "SchemaVersionError",
    "StoreBusyError",
    "StoreConfig",
    "StoreError",
    "StoreFullError",
    "StoreStats",
    "WriterCounters",
    "position_key",
    "read_rows",
    "read_state",
    "read_stats",
    "schema_version",
    "unstorable",
]
