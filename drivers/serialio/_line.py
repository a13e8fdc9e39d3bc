"""An async RS-485 / RS-232 line: one port, one master, half duplex.

The line owns the pyserial port (through pyserial-asyncio-fast, which opens it in an executor so the
event loop never blocks) and offers the two things the meter drivers need:

- `transact(request, assembler, timeout_s=...)`: drain stale input, keep the inter-frame gap, send,
  and return the first frame the assembler completes. It returns as soon as the last byte of the
  reply arrives, never on a timer, so a poll cycle costs little more than the wire time.
- `receive()`: the next chunk of a stream the device pushes (fire panel printer port).

An unplugged USB adapter shows up as EIO/ENODEV, a vanished device node or end of stream. The line
then closes itself and raises `ChannelError`; the next call reopens the port, so the devices come
back as soon as the adapter does, without restarting the gateway.
"""

from __future__ import annotations

import asyncio
import contextlib
import math
import os
import termios
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Protocol, TypeVar

import serial
import serial_asyncio_fast

from citynerve.drivers.serialio.resync import KEEP_REJECTED
from citynerve.gateway.api import (
    ChannelError,
    DeviceTimeoutError,
    FrameError,
    FrameFault,
    GatewayError,
    PermanentError,
    SerialSettings,
    TransientError,
)

F = TypeVar("F")
F_co = TypeVar("F_co", covariant=True)


class FrameAssembler(Protocol[F_co]):
    """An incremental parser: bytes in, complete frames out. One per transaction or stream."""

    def feed(self, data: bytes) -> Sequence[F_co]:
        """Add bytes; return every frame they completed (possibly none)."""
        ...

    def pending(self) -> bytes:
        """Bytes held that may still become a frame (a truncated frame if the line stays quiet)."""
        ...

    def rejected(self) -> list[FrameError]:
        """Candidate frames thrown away since the last call (bad checksum, bad end byte...): the
        first few only, the assembler counts the rest."""
        ...

    @property
    def rejected_total(self) -> int:
        """Every candidate frame thrown away since the assembler was made."""
        ...


def _is_pty(port: str) -> bool:
    """True for a Unix98 pseudo-terminal slave (major numbers 136..143), also behind a symlink."""
    try:
        return 136 <= os.major(os.stat(port).st_rdev) <= 143
    except (OSError, ValueError):
        return False


KEEP_HEARD = 256
"""Bytes a transaction keeps from the start, and from the end, of what it heard (a noisy line
carries 4800 bytes in a 5 s poll at 9600 baud); the rest is counted only."""


SHOWN_BYTES = 64
"""Bytes of a reply a timeout's FrameError carries (and shows as hex in its text): the text goes
into the device's last_error, the log and the OFFLINE event stored in the outbox."""


def _shown(data: bytes) -> tuple[bytes, str]:
    """At most SHOWN_BYTES of `data`, and a note for the text when that is not all of it."""
    if len(data) <= SHOWN_BYTES:
        return data, ""
    return data[:SHOWN_BYTES], f", the first {SHOWN_BYTES} shown"


class _Heard:
    """What a transaction heard, bounded: the first and the last `keep` bytes and the total."""

    def __init__(self, keep: int = KEEP_HEARD) -> None:
        self._keep = keep
        self.head = bytearray()
        self.tail = bytearray()
        self.total = 0
        self.data = False  # anything but FE wake-up bytes

    def add(self, chunk: bytes) -> None:
        self.total += len(chunk)
        if not self.data and chunk.strip(b"\xfe"):
            self.data = True
        room = self._keep - len(self.head)
        if room > 0:
            self.head += chunk[:room]
            chunk = chunk[room:]
        if chunk:
            self.tail += chunk
            if len(self.tail) > self._keep:
                del self.tail[: len(self.tail) - self._keep]

    def kept(self) -> bytes:
        return bytes(self.head + self.tail)


class ReplyTimeout(TransientError):
    """No acceptable frame arrived in time. Carries what did arrive so the caller can tell a silent
    device from a garbled or truncated reply.

    Bounded however long a noisy line talks: `received` is what arrived, or its first and last
    `KEEP_HEARD` bytes (`received_total` counts all); `rejected` the first few candidate frames
    thrown away (`rejected_total` counts all). `heard_data`: anything but FE wake-up bytes arrived."""

    def __init__(
        self,
        timeout_s: float,
        received: bytes,
        rejected: tuple[FrameError, ...],
        ignored: int = 0,
        *,
        received_total: int | None = None,
        rejected_total: int | None = None,
        heard_data: bool | None = None,
    ) -> None:
        self.timeout_s = timeout_s
        self.received = received
        self.rejected = rejected
        self.ignored = ignored  # complete frames that were not the awaited reply (other address, echo)
        self.received_total = len(received) if received_total is None else received_total
        self.rejected_total = len(rejected) if rejected_total is None else rejected_total
        self.heard_data = bool(received.strip(b"\xfe")) if heard_data is None else heard_data
        super().__init__(f"no complete reply within {timeout_s:g} s ({self.received_total} bytes received)")

    def as_error(self, protocol: str, device_id: str, points: tuple[str, ...] = ()) -> GatewayError:
        """What the bus owner should hear: a silent device is a timeout; garbage, half a frame or
        only other devices' frames is a frame error (worth telling a technician apart).

        The text names what failed first in the terms of the line (checksum mismatch, a reply from
        another address, a garbled or incomplete reply), not the parser's resync steps, and shows at
        most SHOWN_BYTES of the bytes heard (the count of all is in the text)."""
        checksum = [r for r in self.rejected if r.fault is FrameFault.CHECKSUM]
        if checksum:
            first = checksum[0]
            data, note = _shown(first.data)
            more = f" ({self.rejected_total} candidate frames rejected)" if self.rejected_total > 1 else ""
            return FrameError(
                protocol, f"device {device_id}: {first.reason}{more}{note}", data, fault=FrameFault.CHECKSUM
            )
        data, note = _shown(self.received)
        if self.ignored:
            return FrameError(
                protocol,
                f"device {device_id}: reply from another address (only frames for other addresses; "
                f"{self.received_total} bytes{note})",
                data,
                fault=FrameFault.ADDRESS,
            )
        if self.rejected_total or self.heard_data:
            what = "garbled reply" if self.rejected_total else "incomplete reply"
            return FrameError(
                protocol,
                f"device {device_id}: {what}: {self.received_total} bytes that do not form a frame{note}",
                data,
            )
        return DeviceTimeoutError(device_id, points, self.timeout_s)


FRAME_START = 0x68
NOISE_RUN_BYTES = 48
"""Bytes without a frame start (0x68) that overlapping replies to one read-address do not have (a
reply is under 30 bytes): a longer run is the line's settings, its polarity or noise."""


def _overlapping_frames(heard: bytes) -> bool:
    """Whether garbled bytes look like several meters' replies at once: after the FE wake-up bytes
    they start with a frame start, and no long run goes without one. A/B swapped, a wrong baud rate
    or noise give bytes that do not start like a frame, or long runs of them."""
    data = heard.lstrip(bytes([WAKE_UP_BYTE]))
    if not data or data[0] != FRAME_START:
        return False
    return max(len(run) for run in data.split(bytes([FRAME_START]))) < NOISE_RUN_BYTES


def wildcard_reply_error(err: ReplyTimeout, protocol: str, wildcard: str) -> GatewayError:
    """What a read-address to the wildcard address heard, as an error. Overlapping frames are most
    often several meters answering at once (the command is for one meter on the line); bytes that
    do not look like frames are the line (baud, parity, A/B polarity, noise). The text says which
    instead of a bare checksum mismatch."""
    error = err.as_error(protocol, wildcard, ())
    if not isinstance(error, FrameError):
        return error
    if _overlapping_frames(err.received):
        why = (
            "more than one meter may have answered the wildcard address; read-address is for one "
            "meter on the line (disconnect the others, or find the meters with `citynerve init "
            "--discover`, which searches the addresses)"
        )
    else:
        why = (
            "not like meters answering at once: check the line settings (baud, parity), A/B "
            f"polarity or noise (`citynerve diag {protocol} probe --port PORT` tries the baud rates)"
        )
    return FrameError(protocol, f"{error.reason}: {why}", error.data, fault=error.fault)


def byte_time_s(settings: SerialSettings) -> float:
    """Wire time of one character: start bit + data bits + parity bit + stop bits."""
    bits = 1 + settings.bytesize + (0 if settings.parity == "N" else 1) + settings.stopbits
    return bits / settings.baudrate


@dataclass(frozen=True, slots=True)
class LineTiming:
    """Half-duplex timing of one line.

    `gap_s`: the turnaround a meter gets after the end of a frame before the next request's frame
    starts (its first 68): many meters drop a request whose start follows their reply too closely.
    The FE wake-up bytes in front of a request exist for a receiver that is not listening yet (every
    receiver skips FE before the first 68), so their wire time counts toward `gap_s`; the line is silent
    for the rest, and never less than `min_silence_chars` character times (the meter's transmitter
    is off before the first FE starts). A request without preamble gets the whole `gap_s` in silence.
    """

    gap_s: float = 0.02
    min_silence_chars: float = 1.0


WAKE_UP_BYTE = 0xFE


def silence_before(request: bytes, timing: LineTiming, byte_time: float) -> float:
    """The silence to keep before sending `request`: `timing.gap_s` less the wire time of its FE
    wake-up preamble, at least `timing.min_silence_chars` character times (never more than gap_s)."""
    wake_up = len(request) - len(request.lstrip(bytes([WAKE_UP_BYTE])))
    floor = min(timing.gap_s, timing.min_silence_chars * byte_time)
    return max(floor, timing.gap_s - wake_up * byte_time)


MAX_PENDING = 4096
"""Bytes a line holds for its reader. Between two transactions nobody reads a meter bus, and a
babbling device or a noisy line (2400 baud: 20 MB a day) must not pile up: the oldest bytes go (the
next transaction drains them as stale anyway) and are counted in `LineStats.dropped_bytes`."""


@dataclass(frozen=True, slots=True)
class LineStats:
    """What a line did with the bytes it heard, for status and diagnostics."""

    opens: int  # how often the port was opened: > 1 means it came back after a loss
    dropped_bytes: int  # received while nobody read, over `max_pending`: dropped, oldest first
    pending_bytes: int  # held now for the next read

    def to_dict(self) -> dict[str, int]:
        return {"opens": self.opens, "dropped_bytes": self.dropped_bytes, "pending_bytes": self.pending_bytes}


class _LineProtocol(asyncio.Protocol):
    """Collects received bytes (at most `max_pending`, the newest) and wakes the waiting reader;
    records why the port went away."""

    def __init__(self, max_pending: int = MAX_PENDING) -> None:
        self.buffer = bytearray()
        self.max_pending = max_pending
        self.dropped = 0
        self.lost: BaseException | None = None
        self.closed = False
        self.last_rx = 0.0
        self._waiter: asyncio.Event = asyncio.Event()
        self.gone = asyncio.Event()

    def data_received(self, data: bytes) -> None:
        self.buffer += data
        excess = len(self.buffer) - self.max_pending
        if excess > 0:
            del self.buffer[:excess]
            self.dropped += excess
        self.last_rx = time.monotonic()
        self._waiter.set()

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        self.lost = exc
        self._waiter.set()
        self.gone.set()

    async def wait(self, limit_s: float) -> None:
        self._waiter.clear()
        if self.buffer or self.closed:
            return
        # asyncio.timeout, not wait_for: Python 3.11's wait_for loses a cancellation that arrives as
        # the waiter is set, which a flooded port does all the time (the listener then never stops).
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(limit_s):
                await self._waiter.wait()

    def take(self) -> bytes:
        data = bytes(self.buffer)
        self.buffer.clear()
        return data


class SerialLine:
    """One serial port shared by every device of a bus. Not reentrant: the bus owner serializes use.

    Use as `async with SerialLine(bus_id, settings) as line:` or call `open()` / `close()`.
    `max_pending`: bytes held for a reader that is not reading (see `MAX_PENDING`).
    """

    def __init__(
        self,
        bus_id: str,
        settings: SerialSettings,
        *,
        timing: LineTiming | None = None,
        max_pending: int = MAX_PENDING,
    ) -> None:
        if max_pending < 1:
            raise ValueError(f"max_pending must be at least 1 byte, got {max_pending}")
        self.bus_id = bus_id
        self.settings = settings
        self.timing = timing or LineTiming()
        self.max_pending = max_pending
        self._dropped_closed = 0  # dropped_bytes of the ports opened before this one
        self._transport: asyncio.Transport | None = None
        self._protocol: _LineProtocol | None = None
        self._last_activity = 0.0
        self.last_exchange: tuple[bytes, bytes] = (b"", b"")  # the last transact: request, bytes heard
        self._lock = asyncio.Lock()
        self.opens = 0  # how often the port was opened: > 1 means it came back after a loss

    @property
    def is_open(self) -> bool:
        return self._protocol is not None and not self._protocol.closed

    def stats(self) -> LineStats:
        """Opens, bytes dropped while nobody read (since the line was made), bytes pending now."""
        protocol = self._protocol
        return LineStats(
            opens=self.opens,
            dropped_bytes=self._dropped_closed + (protocol.dropped if protocol else 0),
            pending_bytes=len(protocol.buffer) if protocol else 0,
        )

    async def __aenter__(self) -> SerialLine:
        await self.open()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    async def open(self) -> None:
        """Open the port (no-op when open). Raises ChannelError when it is missing or busy."""
        if self.is_open:
            return
        await self.close()
        loop = asyncio.get_running_loop()
        protocol = _LineProtocol(self.max_pending)
        s = self.settings
        # a pseudo-terminal (simulators, socat bridges) has no parity bits and refuses PARENB
        parity = "N" if _is_pty(s.port) else s.parity
        try:
            transport, _ = await serial_asyncio_fast.create_serial_connection(
                loop,
                lambda: protocol,
                s.port,
                baudrate=s.baudrate,
                bytesize=s.bytesize,
                parity=parity,
                stopbits=s.stopbits,
                exclusive=True,
            )
        except (OSError, serial.SerialException, ValueError, termios.error) as err:
            raise ChannelError.serial_open(self.bus_id, s.port, err) from err
        self._transport = transport
        self._protocol = protocol
        self._last_activity = 0.0
        self.opens += 1

    async def close(self) -> None:
        """Close the port; safe to call twice or after a failed open."""
        transport, protocol = self._transport, self._protocol
        self._transport = self._protocol = None
        if protocol is not None:
            self._dropped_closed += protocol.dropped
        if transport is None or protocol is None:
            return
        with contextlib.suppress(Exception):
            transport.close()
        # the transport closes the port in an executor and then calls connection_lost: wait for it,
        # or the next open of the same port fails on the exclusive lock
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(protocol.gone.wait(), 2.0)
        if not protocol.closed:
            with contextlib.suppress(Exception):
                transport.abort()

    def _lost(self, reason: str, err: BaseException | None = None) -> ChannelError:
        channel_error = ChannelError(self.bus_id, f"{self.settings.port}: {reason}")
        if err is not None:
            channel_error.__cause__ = err
        return channel_error

    async def _ready(self) -> _LineProtocol:
        await self.open()
        protocol = self._protocol
        if protocol is None:  # pragma: no cover - open() either sets it or raises
            raise self._lost("not open")
        return protocol

    def _check(self, protocol: _LineProtocol) -> None:
        if protocol.closed:
            err = protocol.lost
            if self._protocol is protocol:
                self._dropped_closed += protocol.dropped
            self._transport = None
            self._protocol = None
            reason = f"port lost ({err})" if err else "port closed by the device (end of stream)"
            raise self._lost(reason, err)

    async def transact(
        self,
        request: bytes,
        assembler: FrameAssembler[F],
        *,
        timeout_s: float,
        accept: Callable[[F], bool] | None = None,
    ) -> F:
        """Send `request` and return the first frame `assembler` completes that `accept` takes.

        Raises ReplyTimeout (with the bytes seen) when nothing acceptable completes in `timeout_s`
        seconds after the request left, ChannelError when the port is gone, PermanentError (before
        sending) for a timeout that is not a finite number of seconds > 0: a NaN never expires.
        """
        if not (isinstance(timeout_s, int | float) and math.isfinite(timeout_s) and timeout_s > 0):
            raise PermanentError(
                f"bus {self.bus_id}: transact timeout_s must be a finite number of seconds > 0, "
                f"got {timeout_s!r}"
            )
        async with self._lock:
            protocol = await self._ready()
            self._check(protocol)
            silence = silence_before(request, self.timing, byte_time_s(self.settings))
            wait = self._last_activity + silence - time.monotonic()
            if wait > 0:
                await asyncio.sleep(wait)
            protocol.take()  # stale bytes: a late reply to an earlier request, line noise
            assert self._transport is not None
            try:
                self._transport.write(request)
            except (OSError, serial.SerialException) as err:
                await self.close()
                raise self._lost(f"write failed: {err}", err) from err
            sent_at = time.monotonic()
            # the reply cannot start before the request has left the wire
            deadline = sent_at + timeout_s + len(request) * byte_time_s(self.settings)
            heard = _Heard()  # bounded: a noisy line talks all through a long timeout
            rejected: list[FrameError] = []
            ignored = 0
            try:
                while True:
                    chunk = protocol.take()
                    if chunk:
                        heard.add(chunk)
                        for frame in assembler.feed(chunk):
                            if accept is None or accept(frame):
                                return frame
                            ignored += 1
                        rejected += assembler.rejected()[: KEEP_REJECTED - len(rejected)]
                    self._check(protocol)
                    left = deadline - time.monotonic()
                    if left <= 0:
                        raise ReplyTimeout(
                            timeout_s,
                            heard.kept(),
                            tuple(rejected),
                            ignored,
                            received_total=heard.total,
                            rejected_total=assembler.rejected_total,
                            heard_data=heard.data,
                        )
                    await protocol.wait(left)
            finally:
                self._last_activity = time.monotonic()
                # what went over the wire (its first and last KEEP_HEARD bytes), for a remote
                # device_read (docs/fleet.md)
                self.last_exchange = (bytes(request), heard.kept())

    async def send(self, data: bytes) -> None:
        """Send without waiting for a reply (broadcasts)."""
        async with self._lock:
            protocol = await self._ready()
            self._check(protocol)
            assert self._transport is not None
            self._transport.write(data)
            self._last_activity = time.monotonic() + len(data) * byte_time_s(self.settings)

    async def receive(self, wait_s: float | None = None) -> bytes:
        """The next bytes the device sends (empty on timeout). Raises ChannelError when the port is
        gone; the next call reopens it."""
        protocol = await self._ready()
        deadline = None if wait_s is None else time.monotonic() + wait_s
        while True:
            chunk = protocol.take()
            if chunk:
                return chunk
            self._check(protocol)
            left = 3600.0 if deadline is None else deadline - time.monotonic()
            if left <= 0:
                return b""
            await protocol.wait(left)


def frames_of(protocol: str, exchanges: Sequence[tuple[bytes, bytes]]) -> dict[str, Any]:
    """The frames of a diagnostic read as a remote `device_read` shows them: the first request
    and reply, hex, and every exchange when there were several (DL/T 645 follow-up frames)."""
    tx, rx = exchanges[0] if exchanges else (b"", b"")
    out: dict[str, Any] = {"protocol": protocol, "tx": tx.hex(" "), "rx": rx.hex(" ")}
    if len(exchanges) > 1:
        out["exchanges"] = [{"tx": a.hex(" "), "rx": b.hex(" ")} for a, b in exchanges]
    return out
