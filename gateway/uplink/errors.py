"""Uplink errors: typed, carrying data; nobody matches on their messages."""

from __future__ import annotations

import aiomqtt

from citynerve.gateway.api import PermanentError, TransientError
from citynerve.gateway.uplink.encoding import RejectReason


class CommandRejectedError(PermanentError):
    """A platform command the gateway will not carry out; answered on the result topic with `reason`."""

    def __init__(self, reason: RejectReason, detail: str = "", command_id: str | None = None) -> None:
        self.reason = reason
        self.detail = detail
        self.command_id = command_id
        super().__init__(
            f"command {command_id or '?'} rejected: {reason.value}" + (f" ({detail})" if detail else "")
        )


class BrokerError(TransientError):
    """A broker could not be reached or dropped the connection; the uplink fails over and retries."""

    def __init__(self, broker: str, reason: str) -> None:
        self.broker = broker
        self.reason = reason
        super().__init__(f"broker {broker}: {reason}")


class PublishRefusedError(aiomqtt.MqttError):
    """The broker answered a QoS 1 publish with a failure reason code (an MQTT 5 PUBACK: 0x87 not
    authorized, 0x97 quota exceeded, 0x95 packet too large ...): it did not take the message. An
    `aiomqtt.MqttError`, so it ends the session like a lost link: the rows stay in the outbox."""

    def __init__(self, reason: str, code: int, topic: str | None, mid: int) -> None:
        self.reason = reason
        self.code = code
        self.topic = topic
        self.mid = mid
        where = f" on {topic}" if topic else ""  # the mid stays out: the text repeats per session
        super().__init__(f"broker refused a publish: {reason} (0x{code:02x}){where}")
