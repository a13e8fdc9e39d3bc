"""The gateway's error tree: GatewayError -> TransientError | PermanentError.

Errors carry typed attributes; nobody matches on message strings. Wrap with `raise ... from err`.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass


class GatewayError(Exception):
    """Base of every error the gateway raises on purpose."""


class TransientError(GatewayError):
    """May succeed if tried again later: timeouts, unreachable peers, garbled frames."""


class PermanentError(GatewayError):
    """Will not succeed by retrying: bad config, bad credentials, an address the device does not have."""


class DiagParamError(PermanentError):
    """A diagnostic action (scan, read, write, probe, ...) got a parameter it cannot use, from the CLI
    or a remote command: `action`, `param` and `reason` say which and why."""

    def __init__(self, action: str, param: str, reason: str) -> None:
        self.action = action
        self.param = param
        self.reason = reason
        super().__init__(f"diag {action}: parameter {param!r}: {reason}")


@dataclass(frozen=True, slots=True)
class ConfigIssue:
    """One problem in a config file: where it is and what was expected."""

    file: str
    path: str  # key path, e.g. "devices[3].points.flow.scale"
    message: str
    subject: str = ""  # id of the entry the path starts in (device, bus, rule), when it has one

    @property
    def shown(self) -> str:
        """The key path as shown to people: `devices[4] (id 'meter-3').points.x.scale`, so the
        installer finds the entry by its id; `path` stays the machine key path."""
        if self.subject and "]" in self.path:
            head, _, rest = self.path.partition("]")
            return f"{head}] (id {self.subject!r}){rest}"
        return self.path

    def __str__(self) -> str:
        path = self.shown
        where = f"{self.file}: {path}" if path else self.file
        return f"{where}: {self.message}"


class ConfigError(PermanentError):
    """A config (or profile) is invalid; `issues` lists every problem found, not just the first."""

    def __init__(self, issues: list[ConfigIssue]) -> None:
        self.issues = issues
        super().__init__("\n".join(str(i) for i in issues))


class FrameFault(enum.StrEnum):
    """What was wrong with the bytes, as data (diagnostics count failures by it)."""

    FRAMING = "framing"  # truncated, no start byte, noise: not a frame at all
    CHECKSUM = "checksum"  # a whole frame whose CRC / checksum does not match
    ADDRESS = "wrong_address"  # a valid frame, but from another address than the one asked
    FUNCTION = "wrong_function"  # a valid frame from the address asked, not answering the request
    DECRYPT = "decrypt"  # an authenticated payload whose MIC does not verify (wrong key)


class FrameError(TransientError):
    """Bytes that are not a valid frame of `protocol`: bad checksum, truncated, garbage."""

    def __init__(
        self, protocol: str, reason: str, data: bytes = b"", *, fault: FrameFault = FrameFault.FRAMING
    ) -> None:
        self.protocol = protocol
        self.reason = reason
        self.data = data
        self.fault = fault
        super().__init__(f"{protocol}: {reason}" + (f" (frame {data.hex(' ')})" if data else ""))


class ChannelError(TransientError):
    """The bus's physical channel cannot be used: port missing, in use, connection refused."""

    def __init__(self, bus_id: str, reason: str) -> None:
        self.bus_id = bus_id
        self.reason = reason
        super().__init__(f"bus {bus_id}: {reason}")


class DeviceTimeoutError(TransientError):
    """A device did not answer in time."""

    def __init__(self, device_id: str, points: tuple[str, ...] = (), timeout_s: float = 0.0) -> None:
        self.device_id = device_id
        self.points = points
        self.timeout_s = timeout_s
        what = f" reading {', '.join(points)}" if points else ""
        super().__init__(f"device {device_id}: no answer within {timeout_s:g} s{what}")


class DeviceExceptionError(GatewayError):
    """The device answered with a protocol-level error (Modbus exception, DL/T 645 error reply...)."""

    def __init__(
        self, device_id: str, code: int, reason: str, points: tuple[str, ...] = (), *, transient: bool = False
    ) -> None:
        self.device_id = device_id
        self.code = code
        self.reason = reason
        self.points = points
        self.transient = transient
        what = f" for {', '.join(points)}" if points else ""
        super().__init__(f"device {device_id}: error {code:#04x} ({reason}){what}")


class WriteRejectedError(PermanentError):
    """A write the gateway refuses before it reaches the bus: unknown point, not writable, bad value."""

    def __init__(self, device_id: str, point: str, reason: str) -> None:
        self.device_id = device_id
        self.point = point
        self.reason = reason
        super().__init__(f"device {device_id} point {point}: write rejected: {reason}")
