"""The gateway's own Modbus TCP transaction layer: MBAP framing over one asyncio connection.

Why not pymodbus' client here: at 1,000 meters polled every 10 s, pymodbus' per-transaction
request/response objects, framer and transaction manager cost more CPU than the rest of the gateway's
poll path, and importing it costs memory (docs/benchmarks.md, "Gateway footprint"). Modbus TCP is a
7-byte header (transaction id, protocol 0, length, unit) in front of the PDU, and one transaction at a
time per bus (the channel's lock) needs no more than one pending future. The PDUs are built and
split here with the same layouts as the sans-I/O codec (`codec.read_request_pdu`, `FUNCTIONS`);
tests/modbus/test_modbus_tcp_native.py proves the decoding against pymodbus (golden frames and a
differential test on a pymodbus server). pymodbus stays the client for RTU and RTU over TCP.

The client offers the subset of pymodbus' client methods the driver and the diagnostics call
(`read_holding_registers(address, count=, device_id=)`, ...), so `ModbusChannel.transact` runs the
same calls on either client. Every input is bounded: an MBAP length outside 2..254 or a protocol id
other than 0 is a FrameError and the connection is dropped (a TCP stream cannot be re-synchronised).
"""

from __future__ import annotations

import asyncio
import struct
from collections.abc import Awaitable, Sequence
from dataclasses import dataclass, field

from citynerve.gateway.api import FrameError, SerialTimeout

PROTOCOL = "modbus-tcp"
MAX_PDU = 253  # Modbus application protocol v1.1b3, 4.1: PDU <= 253 bytes
_HEADER = struct.Struct(">HHHB")  # transaction id, protocol id, length, unit id
_READ = struct.Struct(">BHH")  # function, address, quantity (FC 1-4), also address + value (FC 5/6)


@dataclass(slots=True)
class PduReply:
    """What one reply PDU says, named as pymodbus names it (the channel reads either)."""

    function: int
    exception_code: int = 0
    registers: tuple[int, ...] = ()
    bits: tuple[bool, ...] = ()
    information: dict[int, bytes] = field(default_factory=dict)
    data: bytes = b""  # register data as received (FC 3/4)

    def isError(self) -> bool:  # the name pymodbus gives it
        return self.function >= 0x80


def _frame_error(reason: str, data: bytes) -> FrameError:
    return FrameError(PROTOCOL, reason, bytes(data[: MAX_PDU + 7]))


def split_reply(function: int, pdu: bytes) -> PduReply:
    """The fields of the reply PDU to a request of `function`. Raises FrameError if it is not one."""
    if not pdu:
        raise _frame_error("empty reply PDU", pdu)
    got = pdu[0]
    if got == function | 0x80:
        if len(pdu) != 2:
            raise _frame_error(f"exception reply of {len(pdu)} bytes (expected 2)", pdu)
        return PduReply(got, exception_code=pdu[1])
    if got != function:
        raise _frame_error(f"reply of function {got} to a request of function {function}", pdu)
    if function in (1, 2, 3, 4):
        if len(pdu) < 2 or len(pdu) != 2 + pdu[1]:
            raise _frame_error(
                f"byte count {pdu[1] if len(pdu) > 1 else '?'} does not match {len(pdu)} bytes", pdu
            )
        data = pdu[2:]
        if function in (3, 4):
            if len(data) % 2:
                raise _frame_error(f"odd byte count {len(data)} for 16-bit registers", pdu)
            return PduReply(got, registers=struct.unpack(f">{len(data) // 2}H", data), data=data)
        return PduReply(got, bits=tuple(bool((byte >> i) & 1) for byte in data for i in range(8)))
    if function in (5, 6, 15, 16):
        if len(pdu) != 5:
            raise _frame_error(f"write reply of {len(pdu)} bytes (expected 5)", pdu)
        return PduReply(got)
    if function == 0x2B:
        return _split_identification(pdu)
    raise _frame_error(f"function {function} is not one this client sends", pdu)


def _split_identification(pdu: bytes) -> PduReply:
    # 0x2B, MEI 0x0E, read code, conformity, more follows, next object id, number of objects, objects
    if len(pdu) < 7 or pdu[1] != 0x0E:
        raise _frame_error("device identification reply too short or not MEI type 14", pdu)
    objects: dict[int, bytes] = {}
    at = 7
    for _ in range(pdu[6]):
        if at + 2 > len(pdu) or at + 2 + pdu[at + 1] > len(pdu):
            raise _frame_error("device identification object runs past the reply", pdu)
        objects[pdu[at]] = bytes(pdu[at + 2 : at + 2 + pdu[at + 1]])
        at += 2 + pdu[at + 1]
    return PduReply(0x2B, information=objects)


class _Mbap(asyncio.Protocol):
    """The byte stream of one connection: sends requests, matches replies by transaction id."""

    def __init__(self) -> None:
        self.transport: asyncio.Transport | None = None
        self.buffer = bytearray()
        self.waiting: tuple[int, asyncio.Future[bytes]] | None = None

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
            # else: a late reply to a request that timed out, dropped
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


class MbapClient:
    """One Modbus TCP connection; one transaction at a time (the channel holds the lock)."""

    def __init__(self, host: str, port: int, timeout_s: float) -> None:
        self.host, self.port = host, port
        self.timeout_s = timeout_s  # per transaction; the channel sets it per device
        self._protocol: _Mbap | None = None
        self._tid = 0
        self._timeout = SerialTimeout()  # one loop timer for all its transactions, not one each
        self.sent = b""  # the last request frame, and the bytes received for it (for diagnosis)
        self.received = b""

    @property
    def connected(self) -> bool:
        return self._protocol is not None and self._protocol.transport is not None

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
        protocol.waiting = (tid, future)
        try:
            self.sent = _HEADER.pack(tid, 0, len(pdu) + 1, unit) + pdu
            protocol.transport.write(self.sent)
            if no_response_expected:
                return None
            try:
                async with self._timeout.after(self.timeout_s):
                    reply = await future
            except TimeoutError:
                self.received = bytes(protocol.buffer)
                if self.received:
                    protocol.drop()  # part of a frame: the next bytes would be read out of step
                raise
        finally:
            protocol.waiting = None
        self.received = reply  # MBAP header and PDU, as on the wire
        return split_reply(pdu[0], reply[7:])

    # -- the calls the driver and the diagnostics make (pymodbus' names and keywords) ----------
    # The reads return `execute`'s coroutine itself (awaited by the caller, as with pymodbus):
    # no coroutine of their own around it on the poll path.

    def read_coils(self, address: int, *, count: int = 1, device_id: int = 1) -> Awaitable[PduReply | None]:
        return self.execute(device_id, _READ.pack(1, address, count))

    def read_discrete_inputs(
        self, address: int, *, count: int = 1, device_id: int = 1
    ) -> Awaitable[PduReply | None]:
        return self.execute(device_id, _READ.pack(2, address, count))

    def read_holding_registers(
        self, address: int, *, count: int = 1, device_id: int = 1
    ) -> Awaitable[PduReply | None]:
        return self.execute(device_id, _READ.pack(3, address, count))

    def read_input_registers(
        self, address: int, *, count: int = 1, device_id: int = 1
    ) -> Awaitable[PduReply | None]:
        return self.execute(device_id, _READ.pack(4, address, count))

    async def write_coil(
        self, address: int, value: bool, *, device_id: int = 1, no_response_expected: bool = False
    ) -> PduReply | None:
        pdu = _READ.pack(5, address, 0xFF00 if value else 0)
        return await self.execute(device_id, pdu, no_response_expected=no_response_expected)

    async def write_register(
        self, address: int, value: int, *, device_id: int = 1, no_response_expected: bool = False
    ) -> PduReply | None:
        pdu = _READ.pack(6, address, value)
        return await self.execute(device_id, pdu, no_response_expected=no_response_expected)

    async def write_coils(
        self, address: int, values: Sequence[bool], *, device_id: int = 1, no_response_expected: bool = False
    ) -> PduReply | None:
        packed = bytearray((len(values) + 7) // 8)
        for i, bit in enumerate(values):
            if bit:
                packed[i // 8] |= 1 << (i % 8)
        pdu = _READ.pack(15, address, len(values)) + bytes([len(packed)]) + bytes(packed)
        return await self.execute(device_id, pdu, no_response_expected=no_response_expected)

    async def write_registers(
        self, address: int, values: Sequence[int], *, device_id: int = 1, no_response_expected: bool = False
    ) -> PduReply | None:
        data = struct.pack(f">{len(values)}H", *values)
        pdu = _READ.pack(16, address, len(values)) + bytes([len(data)]) + data
        return await self.execute(device_id, pdu, no_response_expected=no_response_expected)

    async def read_device_information(
        self, *, read_code: int = 1, object_id: int = 0, device_id: int = 1
    ) -> PduReply | None:
        return await self.execute(device_id, bytes([0x2B, 0x0E, read_code, object_id]))
