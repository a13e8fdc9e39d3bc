"""The uplink's state snapshot, for `citynerve status`, the status message and metrics."""

from __future__ import annotations

import enum
from dataclasses import asdict, dataclass, field
from typing import Any


class LinkState(enum.StrEnum):
    STOPPED = "stopped"
    CONNECTING = "connecting"
    CONNECTED = "connected"
    BACKING_OFF = "backing_off"


@dataclass(frozen=True, slots=True)
class UplinkState:
    """A copy of the uplink's figures at one moment. Counters are since the process started."""

    state: LinkState
    connected: bool
    broker: str | None
    connected_since: float | None
    published_msgs: int
    published_rows: dict[str, int]
    acked_rows: dict[str, int]
    ack_seq: dict[str, int]  # highest seq acknowledged (broker PUBACK, or platform in e2e mode)
    sent_seq: dict[str, int]  # highest seq handed to the broker in this session
    reconnects: int
    connect_failures: int
    last_error: str | None
    last_error_ts: float | None
    commands_accepted: int
    commands_rejected: int
    e2e: bool
    replaying: bool
    extra: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["state"] = self.state.value
        return d
