"""Uplink errors: typed, carrying data; nobody matches on their messages."""

from __future__ import annotations

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
