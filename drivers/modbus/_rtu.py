"""The gateway's own Modbus RTU transaction layer: RTU frames (unit, PDU, CRC) over a serial port or
a TCP socket (RTU over TCP, serial-to-Ethernet converters).

Why not pymodbus' client (it was, up to this layer): pymodbus 3.11's RTU framer keeps every garbage
byte and rescans its whole receive buffer on every chunk at super-linear cost (100 bytes of noise
6.5 ms, 800 bytes 2.5 s per chunk), and the buffer grows between polls: one babbling device froze
the event loop, every bus and the uplink with it, for seconds. Here every input is bounded:

- bytes that arrive while no request is pending are dropped (counted): a one-master line has
  nothing to say between transactions, and a late reply must not be taken for the next one (the
  channel keeps the line quiet for a grace after a timeout, and sends only after t3.5 of silence);
- a reply is found by a linear resync (`ReplyFinder`): only the expected unit with the request's
  function (or its exception) can start a frame, the function's layout gives its length (a
  length over 256 bytes, the largest RTU frame, is refused at once), and the CRC decides; a
  failed candidate costs one byte, so each byte is looked at a bounded number of times;
- at most `MAX_ADU` bytes wait for a candidate to complete, and a transaction keeps at most
  `MAX_ADU` bytes of what it heard, for the frame error that a timeout becomes.

The inter-frame silence (t3.5) and the broadcast turnaround are kept by the channel.
"""

from __future__ import annotations

import asyncio
import contextlib

from citynerve.drivers.modbus._pdu import PduCalls, PduReply, split_reply
from citynerve.drivers.modbus.codec import build_rtu_frame, crc16
from citynerve.gateway.api import SerialSettings, SerialTimeout

PROTOCOL = "modbus-rtu"
MAX_ADU = 256  # Modbus over serial line v1.02, 2.5.1: an RTU frame is at most 256 bytes
_MEI = 0x2B


def reply_length(function: int, frame: bytes | bytearray) -> int | None:
    """Length of the reply frame to a request of `function` that starts `frame` (unit, function
    code...), None while more bytes are needed to know it, 0 when no such reply has that start."""
    if len(frame) < 2:
        return None
    got = frame[1]
    if got == function | 0x80:
        return 5  # unit, function | 0x80, exception code, CRC
    if got != function:
        return 0
    if function in (1, 2, 3, 4):
        return 5 + frame[2] if len(frame) > 2 else None  # unit, function, byte count, data, CRC
    if function in (5, 6, 15, 16):
        return 8  # unit, function, address, value or quantity, CRC
    if function == _MEI:
        return _identification_length(frame)
    return 0


def _identification_length(frame: bytes | bytearray) -> int | None:
    # unit, 0x2B, MEI 0x0E, read code, conformity, more follows, next object id, number of objects,
    # then (id, length, value) per object, then CRC
    if len(frame) > 2 and frame[2] != 0x0E:
        return 0
    if len(frame) < 8:
        return None
    at = 8
    for _ in range(frame[7]):
        if at + 2 > len(frame):
            return None
        at += 2 + frame[at + 1]
        if at + 2 > MAX_ADU:
            return 0
    return at + 2


class ReplyFinder:
    """Sans-I/O: finds the reply to one request in the bytes that follow it (see the module doc).

    `echo`: the request as the adapter echoes it (handle_local_echo): skipped when the bytes heard
    start with it. `heard`: the first MAX_ADU bytes heard (after the echo), for diagnosis.
    """

    def __init__(self, unit: int, function: int, echo: bytes = b"") -> None:
        self._unit = bytes([unit])
        self._function = function
        self._echo = echo
        self._buffer = bytearray()
        self.heard = bytearray()
        self.heard_total = 0
        self.rejected = 0  # candidate frames whose CRC did not match

    def feed(self, data: bytes) -> bytes | None:
        """Add bytes; return the reply frame once it is complete (unit through CRC)."""
        if self._echo:
            n = min(len(self._echo), len(data))
            if data[:n] == self._echo[:n]:
                data, self._echo = data[n:], self._echo[n:]
            else:
                self._echo = b""  # the adapter did not echo this one: read the bytes as they are
        self.heard_total += len(data)
        room = MAX_ADU - len(self.heard)
        if room > 0:
            self.heard += data[:room]
        buffer = self._buffer
        buffer += data
        while True:
            start = buffer.find(self._unit)
            if start < 0:
                buffer.clear()
                return None
            if start:
                del buffer[:start]
            length = reply_length(self._function, buffer)
            if length is None:
                return None
            if not 4 < length <= MAX_ADU:
                del buffer[:1]
                continue
            if len(buffer) < length:
                return None  # at most MAX_ADU bytes wait here
            if crc16(bytes(buffer[: length - 2])) == int.from_bytes(buffer[length - 2 : length], "little"):
                frame = bytes(buffer[:length])
                del buffer[:length]
                return frame
            self.rejected += 1
            del buffer[:1]


class _RtuLink(asyncio.Protocol):
    """The byte stream of one port or socket: bytes go to the pending transaction's finder, or are
    dropped when none is pending."""

    def __init__(self) -> None:
        self.transport: asyncio.Transport | None = None
        self.finder: ReplyFinder | None = None
        self.future: asyncio.Future[bytes] | None = None
        self.dropped = 0  # bytes heard while no request was pending
        self.heard_at = 0.0  # loop time of the last bytes heard: the channel waits for silence
        self._loop = asyncio.get_running_loop()
        self.made = asyncio.Event()
        self.gone = asyncio.Event()

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport
        self.made.set()

    def connection_lost(self, exc: Exception | None) -> None:
        self.transport = None
        self.gone.set()
        if self.future is not None and not self.future.done():
            self.future.set_exception(ConnectionError("connection lost"))

    def data_received(self, data: bytes) -> None:
        self.heard_at = self._loop.time()
        finder, future = self.finder, self.future
        if finder is None or future is None or future.done():
            self.dropped += len(data)
            return
        frame = finder.feed(data)
        if frame is not None:
            future.set_result(frame)


class RtuClient(PduCalls):
    """One RTU line: a serial port (`serial`, any pyserial URL) or a TCP socket (`host`, `port`).
    One transaction at a time (the channel holds the lock)."""

    def __init__(
        self,
        *,
        timeout_s: float,
        serial: SerialSettings | None = None,
        host: str = "",
        port: int = 0,
        local_echo: bool = False,
    ) -> None:
        self.timeout_s = timeout_s  # per transaction; the channel sets it per device
        self.serial, self.host, self.port = serial, host, port
        self.local_echo = local_echo
        self._link: _RtuLink | None = None
        self._timeout = SerialTimeout()
        self._byte_s = 0.0 if serial is None else _byte_time_s(serial)
        self.sent = b""  # the last request frame, and the bytes heard for it (for diagnosis)
        self.received = b""
        self.received_total = 0
        self.rejected = 0

    @property
    def connected(self) -> bool:
        return self._link is not None and self._link.transport is not None

    @property
    def dropped(self) -> int:
        """Bytes heard while no request was pending, since the line opened."""
        return self._link.dropped if self._link is not None else 0

    @property
    def heard_at(self) -> float:
        """Loop time of the last bytes heard (0.0: none yet)."""
        return self._link.heard_at if self._link is not None else 0.0

    async def connect(self) -> None:
        """Open the port or connection; OSError, serial.SerialException, ValueError, TimeoutError
        as pyserial and the OS report them."""
        loop = asyncio.get_running_loop()
        link = _RtuLink()
        if self.serial is not None:
            import serial_asyncio_fast

            s = self.serial
            await serial_asyncio_fast.create_serial_connection(
                loop,
                lambda: link,
                s.port,
                baudrate=s.baudrate,
                bytesize=s.bytesize,
                parity=s.parity,
                stopbits=s.stopbits,
                exclusive=True,
            )
            async with asyncio.timeout(self.timeout_s + 1.0):  # the transport calls it soon after
                await link.made.wait()
        else:
            async with asyncio.timeout(self.timeout_s):
                await loop.create_connection(lambda: link, self.host, self.port)
        self._link = link

    def close(self) -> None:
        link = self._link
        if link is not None and link.transport is not None:
            link.transport.close()

    async def wait_closed(self) -> None:
        """Wait (up to 2 s) until the port is closed: a serial port closes in an executor, and
        reopening it before then fails on its exclusive lock."""
        link, self._link = self._link, None
        if link is not None and not link.gone.is_set():
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(2.0):
                    await link.gone.wait()

    async def execute(self, unit: int, pdu: bytes, *, no_response_expected: bool = False) -> PduReply | None:
        """Send one request PDU and return the reply's fields (None when none is expected).

        TimeoutError when no reply came in time (`received` holds what did), ConnectionError when
        the port or connection is gone, FrameError when the reply does not answer this request.
        """
        link = self._link
        if link is None or link.transport is None:
            raise ConnectionError("not connected")
        frame = build_rtu_frame(unit, pdu)
        self.sent, self.received, self.received_total, self.rejected = frame, b"", 0, 0
        if no_response_expected:
            link.transport.write(frame)
            return None
        finder = ReplyFinder(unit, pdu[0], frame if self.local_echo else b"")
        future: asyncio.Future[bytes] = asyncio.get_running_loop().create_future()
        link.finder, link.future = finder, future
        try:
            link.transport.write(frame)
            try:
                # the reply cannot start before the request has left the wire
                async with self._timeout.after(self.timeout_s + len(frame) * self._byte_s):
                    reply = await future
            finally:
                self.received, self.received_total = bytes(finder.heard), finder.heard_total
                self.rejected = finder.rejected
        finally:
            link.finder = link.future = None
        self.received = reply
        return split_reply(pdu[0], reply[1:-2], PROTOCOL, pdu)


def _byte_time_s(settings: SerialSettings) -> float:
    bits = 1 + settings.bytesize + (0 if settings.parity == "N" else 1) + settings.stopbits
    return bits / settings.baudrate
