"""The pluggable wire encoding: what a message looks like and which topic it goes to.

JSON v1 (`json_v1.JsonV1Encoding`) is the contract in docs/upstream-contract.md. Another encoding
(Sparkplug B) implements `Encoding` over the same outbox: the uplink only hands it events
(`rows`), telemetry blocks (`telemetry`), status and inventory, and publishes what comes back.

The outbox holds records in an encoding-neutral form (citynerve.gateway.store._blocks): telemetry
as `ReadingBlock`s (a series table and rows of series, ts, quality, value and an optional clock
mark), events as `Event`s. An encoding renders them when the uplink publishes them.
"""

from __future__ import annotations

import enum
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

from citynerve.gateway.store import Lane, OutboxRow, ReadingBlock


@dataclass(frozen=True, slots=True)
class MqttMessage:
    """One MQTT publish."""

    topic: str
    payload: bytes
    qos: int = 1
    retain: bool = False


@dataclass(frozen=True, slots=True)
class RowBatch:
    """One message that carries outbox rows of one lane: `first_seq..last_seq`, `count` rows."""

    message: MqttMessage | None
    """None: rows of the lane this destination's filter leaves out; nothing is published, the rows
    count as sent (made by the uplink, never by an encoding)."""
    lane: Lane
    first_seq: int
    last_seq: int
    count: int


@dataclass(frozen=True, slots=True)
class PlatformAck:
    """The platform stored every row of `lane` up to `seq` (end-to-end mode)."""

    gateway_id: str
    lane: Lane
    seq: int
    epoch: str | None = None  # the store epoch the seq belongs to (None: an older platform, any epoch)
    body: Mapping[str, Any] = field(default_factory=dict, compare=False, repr=False)
    """The decoded message, for its signature (`signing.AckVerifier`)."""


class CommandOutcome(enum.StrEnum):
    OK = "ok"
    REJECTED = "rejected"
    FAILED = "failed"


class RejectReason(enum.StrEnum):
    """Why a command was not carried out; the platform matches on these, never on `detail` text."""

    MALFORMED = "malformed"
    WRONG_GATEWAY = "wrong_gateway"
    DISABLED = "commands_disabled"
    UNSIGNED = "unsigned"
    BAD_SIGNATURE = "bad_signature"
    EXPIRED = "expired"
    NOT_YET_VALID = "not_yet_valid"
    LIFETIME_TOO_LONG = "lifetime_too_long"
    REPLAYED = "replayed"
    UNKNOWN_COMMAND = "unknown_command"
    UNKNOWN_DEVICE = "unknown_device"
    UNKNOWN_POINT = "unknown_point"
    NOT_WRITABLE = "not_writable"
    BAD_VALUE = "bad_value"
    UNKNOWN_BUS = "unknown_bus"
    NOT_PERMITTED = "not_permitted"  # the signing key does not grant the action's permission class
    UNKNOWN_ALARM = "unknown_alarm"  # ack of an alarm that is not active
    NO_SPACE = "no_space"  # a software update that would not fit the disk budget (refused before download)
    BUSY = "busy"  # another software update is being verified or applied
    RETIRING_KEY = "retiring_key"  # signed with a key being rotated out: configure/update/reboot refused
    REPEAT_CHUNKED = "repeat_chunked"  # a repeated id whose first answer was chunked: its parts are not kept
    # failures while carrying out an accepted command
    DEVICE_ERROR = "device_error"
    TIMEOUT = "timeout"
    INTERNAL = "internal_error"
    TOO_LARGE = "too_large"  # the inventory (resend_inventory) is over the broker's maximum packet size


@dataclass(frozen=True, slots=True)
class CommandResult:
    """The answer to one command, published on the result topic."""

    command_id: str | None
    action: str | None
    outcome: CommandOutcome
    reason: RejectReason | None = None
    detail: str = ""
    result: Mapping[str, Any] | None = None
    answer: bool = True
    """False: a junk rejection inside the rate limit's interval; counted, not published."""
    parts: tuple[Mapping[str, Any], ...] = ()
    """Results published before this one, each as a result of the same command (chunked uploads)."""


class Encoding(Protocol):
    """Turns outbox rows and gateway state into MQTT messages, and platform messages into records."""

    name: str

    @property
    def topics(self) -> Mapping[Lane, str]:
        """The topic of each lane's messages (the room a broker's packet size limit leaves)."""
        ...

    @property
    def command_topic(self) -> str:
        """Topic the gateway subscribes to for commands."""
        ...

    @property
    def ack_topic(self) -> str:
        """Topic the gateway subscribes to for end-to-end acks."""
        ...

    def status(self, *, online: bool, seq: int, details: Mapping[str, Any]) -> MqttMessage:
        """Retained status: birth (online) or death (offline, used as the MQTT will)."""
        ...

    def inventory(self, *, seq: int, devices: Iterable[Mapping[str, Any]]) -> MqttMessage:
        """Retained device inventory."""
        ...

    def rows(
        self, lane: Lane, rows: Sequence[OutboxRow], *, prev_seq: int, max_rows: int, max_bytes: int
    ) -> list[RowBatch]:
        """Split rows of one lane (in seq order) into messages of at most max_rows rows / max_bytes."""
        ...

    def telemetry(
        self, blocks: Sequence[ReadingBlock], *, prev_seq: int, max_rows: int, max_bytes: int
    ) -> list[RowBatch]:
        """Messages carrying every reading of `blocks` (in seq order), each within max_rows
        readings and max_bytes (a single reading larger than that goes alone). The drain's path:
        blocks as stored, no `Reading` objects built."""
        ...

    def command_result(self, result: CommandResult, *, seq: int) -> MqttMessage: ...

    def decode_command(self, payload: bytes) -> dict[str, Any]:
        """Parse a command payload; raises CommandRejectedError(MALFORMED) when it is not one."""
        ...

    def decode_ack(self, payload: bytes) -> PlatformAck:
        """Parse an end-to-end ack; raises `citynerve.gateway.payload.PayloadError` when it is not one."""
        ...
