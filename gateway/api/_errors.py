"""The gateway's error tree: GatewayError -> TransientError | PermanentError.

Errors carry typed attributes; nobody matches on message strings. Wrap with `raise ... from err`.
"""

from __future__ import annotations

import enum
import errno
import os
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from citynerve.gateway.api._records import Event


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
        where = ": ".join(w for w in (self.file, path) if w)  # no stray ": " for an unnamed file
        return f"{where}: {self.message}" if where else self.message


class ConfigError(PermanentError):
    """A config (or profile) is invalid; `issues` lists every problem found, not just the first."""

    def __init__(self, issues: list[ConfigIssue]) -> None:
        self.issues = issues
        super().__init__("\n".join(str(i) for i in issues))


class RulesFailedError(PermanentError):
    """Rule instances raised while evaluating a batch (a rule bug, retrying cannot help). `failed`
    names them (`<rule>|<device>`); `events` are the batch's events of every other rule, which the
    caller must still deliver: one bad rule must not take a smoke alarm of the same batch with it."""

    def __init__(self, failed: Sequence[str], events: Sequence[Event], first: BaseException) -> None:
        self.failed = tuple(failed)
        self.events = tuple(events)
        more = f" and {len(self.failed) - 1} more" if len(self.failed) > 1 else ""
        super().__init__(f"rule {self.failed[0]}{more} raised {first!r}")


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
    """The bus's physical channel cannot be used: port missing, in use, connection refused.
    `errno` is the OS's error number when the OS gave one (ENOENT: a serial port not there)."""

    def __init__(self, bus_id: str, reason: str, *, errno: int | None = None) -> None:
        self.bus_id = bus_id
        self.reason = reason
        self.errno = errno
        super().__init__(f"bus {bus_id}: {reason}")

    @classmethod
    def serial_open(cls, bus_id: str, port: str, err: BaseException) -> ChannelError:
        """A serial port that did not open, in the words every serial bus uses (Modbus RTU, meters,
        fire panels): "serial port X not found (is the adapter plugged in?)", "... is in use by
        another program", instead of pyserial's text (which doubles the errno); raise it `from err`,
        so the log keeps that text."""
        code = os_errno(err)
        if code == errno.ENOENT:
            reason = f"serial port {port} not found (is the adapter plugged in?)"
        elif code in (errno.EAGAIN, errno.EBUSY):  # another program's exclusive lock (flock), or TIOCEXCL
            reason = f"serial port {port} is in use by another program"
        elif code in (errno.EACCES, errno.EPERM):
            reason = f"serial port {port}: permission denied (is the user in the dialout group?)"
        elif code is not None:
            name = errno.errorcode.get(code, code)
            reason = f"cannot open serial port {port}: {os.strerror(code)} ({name})"
        else:  # a URL pyserial refuses, a socket:// peer not there: its text, on one line
            reason = f"cannot open serial port {port}: {' '.join(str(err).split()) or type(err).__name__}"
        return cls(bus_id, reason, errno=code)


def os_errno(err: BaseException | None) -> int | None:
    """The errno of the OSError (pyserial's SerialException is one) that `err` was raised from."""
    seen = 0
    while err is not None and seen < 8:  # a cause chain is short; a cycle must not loop
        if isinstance(err, OSError) and err.errno is not None:
            return err.errno
        err, seen = err.__cause__ or err.__context__, seen + 1
    return None


class DeviceTimeoutError(TransientError):
    """A device did not answer in time."""

    def __init__(self, device_id: str, points: tuple[str, ...] = (), timeout_s: float = 0.0) -> None:
        self.device_id = device_id
        self.points = points
        self.timeout_s = timeout_s
        what = f" reading {', '.join(points)}" if points else ""
        super().__init__(f"device {device_id}: no answer within {timeout_s:g} s{what}")


class DeviceUnreachableError(DeviceTimeoutError):
    """A gateway in front of the device (a Modbus TCP-to-RTU converter) answered for it that the
    device did not respond on its side, or that the path to it is unavailable (Modbus exceptions
    0x0B, 0x0A): the device is silent one hop further away. A failure of the device, like a
    timeout, never proof that it is alive."""

    def __init__(
        self, device_id: str, unit: int, code: int, reason: str, points: tuple[str, ...] = ()
    ) -> None:
        super().__init__(device_id, points)
        self.unit = unit
        self.code = code
        self.reason = reason
        what = f" reading {', '.join(points)}" if points else ""
        self.args = (
            f"device {device_id} (unit {unit}): the gateway in front of it answered exception"
            f" {code:#04x} ({reason}){what}",
        )


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
