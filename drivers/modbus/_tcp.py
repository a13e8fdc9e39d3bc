"""The gateway's own Modbus TCP transaction layer: MBAP framing over one asyncio connection.

Why not pymodbus' client here: at 1,000 meters polled every 10 s, pymodbus' per-transaction
request/response objects, framer and transaction manager cost more CPU than the rest of the gateway's
poll path, and importing it costs memory (docs/benchmarks.md, "Gateway footprint"). Modbus TCP is a
7-byte header (transaction id, protocol 0, length, unit) in front of the PDU, and one transaction at a
time per bus (the channel's lock) needs no more than one pending future. The PDUs are built and
split in `_pdu` with the same layouts as the sans-I/O codec (`codec.read_request_pdu`, `FUNCTIONS`);
tests/modbus/test_modbus_tcp_native.py proves the decoding against pymodbus (golden frames and a
differential test on a pymodbus server). RTU and RTU over TCP have their own layer (`_rtu`).

The client offers the subset of pymodbus' client methods the driver and the diagnostics call
(`_pdu.PduCalls`: `read_holding_registers(address, count=, device_id=)`, ...). Every input is
bounded: an MBAP length outside 2..254 or a protocol id other than 0 is a FrameError and the
connection is dropped (a TCP stream cannot be re-synchronised). So is a reply that does not split
or is followed by bytes of no whole frame (a length too short: its leftover would be read as the
start of the next reply, and that unit blamed). Replies with another transaction id are dropped
and counted (`stray_replies`); a timeout after one is a FrameError naming both ids, not "no answer".
"""

from __future__ import annotations

import asyncio
import struct

from citynerve.drivers.modbus._pdu import MAX_PDU, PduCalls, PduReply, _frame_error, split_reply
from citynerve.gateway.api import FrameError, FrameFault, SerialTimeout

PROTOCOL = "modbus-tcp"
_HEADER = struct.Struct(">HHHB")  # transaction id, protocol id, length, unit id

__all__ = ["MAX_PDU", "PROTOCOL", "MbapClient", "PduReply", "split_reply"]


class _Mbap(asyncio.Protocol):
    """The byte stream of one connection: sends requests, matches replies by transaction id."""

    def __init__(self) -> None:
        self.transport: asyncio.Transport | None = None
        self.buffer = bytearray()
        self.waiting: tuple[int, asyncio.Future[bytes]] | None = None
        self.stray_replies = 0  # whole frames with a transaction id not pending, since the open
        self.stray: tuple[int, int] | None = None  # (transaction id, unit) of the last one heard
        # while a transaction was pending

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport

    def connection_lost(self, exc: Exception | None) -> None:
        self.transport = None
        if self.waiting is not None and not self.waiting[1].done():
            self.waiting[1].set_exception(ConnectionError("connection lost"))

    def data_received(self, data: bytes) -> None:
        buffer = self.buffer
        buffer += data
        while len(buffer) >= 8:
            tid, protocol, length, _ = _HEADER.unpack_from(buffer)
            if protocol != 0 or not 2 <= length <= MAX_PDU + 1:
                self._garbage(f"MBAP header with protocol id {protocol}, length {length}")
                return
            end = 6 + length
            if len(buffer) < end:
                return
            waiting = self.waiting
            if waiting is not None and waiting[0] == tid and not waiting[1].done():
                waiting[1].set_result(bytes(buffer[:end]))  # the whole frame: diagnostics show it
            else:  # a late reply to a request that timed out, or a gateway that changes the id
                self.stray_replies += 1
                if waiting is not None:
                    self.stray = (tid, buffer[6])
            del buffer[:end]

    def _garbage(self, reason: str) -> None:
        data = bytes(self.buffer)
        self.buffer.clear()
        if self.waiting is not None and not self.waiting[1].done():
            self.waiting[1].set_exception(_frame_error(reason, data))
        self.drop()

    def drop(self) -> None:
        """Close now: a stream out of step cannot be trusted again (`connected` is False at once)."""
        transport, self.transport = self.transport, None
        if transport is not None:
            transport.close()


class MbapClient(PduCalls):
    """One Modbus TCP connection; one transaction at a time (the channel holds the lock)."""

    def __init__(self, host: str, port: int, timeout_s: float) -> None:
        self.host, self.port = host, port
        self.timeout_s = timeout_s  # per transaction; the channel sets it per device
        self._protocol: _Mbap | None = None
        self._tid = 0
        self._timeout = SerialTimeout()  # one loop timer for all its transactions, not one each
        self.reply_unit: int | None = None  # the unit id replies carry, if not the request's
        self.sent = b""  # the last request frame, and the bytes received for it (for diagnosis)
        self.received = b""

    @property
    def connected(self) -> bool:
        """Open and in step: bytes of no whole frame left between transactions (a reply's tail
        that came after it was taken) would start the next reply, so the channel reopens first."""
        protocol = self._protocol
        if protocol is None or protocol.transport is None:
            return False
        return protocol.waiting is not None or not protocol.buffer

    @property
    def stray_replies(self) -> int:
        """Replies with a transaction id not pending (late, or another id), since the open."""
        return self._protocol.stray_replies if self._protocol is not None else 0

    async def connect(self) -> None:
        """Open the connection; OSError / TimeoutError as the OS reports them."""
        loop = asyncio.get_running_loop()
        async with asyncio.timeout(self.timeout_s):
            _, protocol = await loop.create_connection(_Mbap, self.host, self.port)
        self._protocol = protocol

    def close(self) -> None:
        protocol, self._protocol = self._protocol, None
        if protocol is not None:
            protocol.drop()

    async def execute(self, unit: int, pdu: bytes, *, no_response_expected: bool = False) -> PduReply | None:
        """Send one request PDU and return the reply's fields (None when none is expected).

        TimeoutError when no whole reply came in time, ConnectionError when the connection is gone,
        FrameError when the reply is not a Modbus TCP reply to this request.
        """
        protocol = self._protocol
        if protocol is None or protocol.transport is None:
            raise ConnectionError("not connected")
        self._tid = tid = (self._tid + 1) & 0xFFFF
        self.received = b""
        future: asyncio.Future[bytes] = asyncio.get_running_loop().create_future()
        protocol.waiting, protocol.stray = (tid, future), None
        # The server copies the request's unit id (MBAP, 4.4.1); some answer a fixed one instead.
        expected = unit if self.reply_unit is None else self.reply_unit
        try:
            self.sent = _HEADER.pack(tid, 0, len(pdu) + 1, unit) + pdu
            protocol.transport.write(self.sent)
            if no_response_expected:
                return None
            try:
                async with self._timeout.after(self.timeout_s):
                    reply = await future
            except TimeoutError as err:
                self.received = bytes(protocol.buffer)
                if self.received:
                    protocol.drop()  # part of a frame: the next bytes would be read out of step
                stray = protocol.stray
                if stray is not None and stray[1] == expected:  # it answered, with another id
                    raise self._stray_reply_error(tid, stray[0]) from err
                raise
        finally:
            protocol.waiting = None
        self.received = reply  # MBAP header and PDU, as on the wire
        leftover = len(protocol.buffer)
        if leftover:
            protocol.drop()  # bytes of no whole frame after the reply: the stream is out of step
        if reply[6] != expected:
            hint = f" (a device that always answers so: reply_unit = {reply[6]})" if expected == unit else ""
            raise FrameError(
                PROTOCOL,
                f"reply from another address: unit {reply[6]}, expected {expected}{hint}",
                reply,
                fault=FrameFault.ADDRESS,
            )
        try:
            return split_reply(pdu[0], reply[7:], PROTOCOL, pdu)
        except FrameError as err:
            protocol.drop()  # its length may be wrong: the next reply would be read out of step
            after = f"; {leftover} byte{'s' if leftover > 1 else ''} after it (MBAP length too short?)"
            reason = f"unit {reply[6]}: {err.reason}{after if leftover else ''}"
            raise FrameError(PROTOCOL, reason, reply, fault=err.fault) from None

    def _stray_reply_error(self, tid: int, got: int) -> FrameError:
        """The device answered, but not with the pending transaction id: say so, not "no answer"."""
        if 0 < (tid - got) & 0xFFFF <= 16:
            why = "a late reply to an earlier request: the device answers slower than timeout_s?"
        else:
            why = "a gateway that does not copy the transaction id?"
        return FrameError(
            PROTOCOL,
            f"no reply with transaction id {tid} within {self.timeout_s:g} s;"
            f" a reply with transaction id {got} came ({why})",
            fault=FrameFault.FUNCTION,
        )
