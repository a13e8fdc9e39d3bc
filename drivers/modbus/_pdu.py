"""Modbus PDUs as the gateway's own transaction layers (`_tcp.MbapClient`, `_rtu.RtuClient`) send
and split them: the reply's fields (`PduReply`, named as pymodbus names them, so the channel reads
either), and the client calls the driver and the diagnostics make (`PduCalls`: pymodbus' method
names and keywords, so `ModbusChannel.transact` runs the same calls on any client).
The layouts are those of the sans-I/O codec (`codec.read_request_pdu`, `FUNCTIONS`)."""

from __future__ import annotations

import struct
from collections.abc import Awaitable, Sequence
from dataclasses import dataclass, field

from citynerve.gateway.api import FrameError, FrameFault

MAX_PDU = 253  # Modbus application protocol v1.1b3, 4.1: PDU <= 253 bytes
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


def _frame_error(
    reason: str, data: bytes, protocol: str = "modbus-tcp", *, fault: FrameFault = FrameFault.FRAMING
) -> FrameError:
    return FrameError(protocol, reason, bytes(data[: MAX_PDU + 7]), fault=fault)


def split_reply(function: int, pdu: bytes, protocol: str = "modbus-tcp", request: bytes = b"") -> PduReply:
    """The fields of the reply PDU to a request of `function`. Raises FrameError if it is not one.

    With the `request` PDU, the reply must also answer it: a read exactly its quantity (registers:
    2 bytes each; bits: ceil(quantity / 8) bytes), a write (FC 5/6/15/16) echo its address (and
    FC 15/16 its quantity).
    """
    try:
        reply = _split(function, pdu)
        if request and not reply.isError():
            _check_answers(request, pdu)
        return reply
    except FrameError as err:
        if protocol == err.protocol:
            raise
        raise FrameError(protocol, err.reason, err.data, fault=err.fault) from None


def _check_answers(request: bytes, pdu: bytes) -> None:
    function = request[0]
    if function in (1, 2, 3, 4) and len(request) >= 5:
        quantity = int.from_bytes(request[3:5], "big")
        needed = 2 * quantity if function in (3, 4) else (quantity + 7) // 8
        if pdu[1] != needed:
            unit = "registers" if function in (3, 4) else "bits"
            raise _frame_error(
                f"{pdu[1]} data bytes for a read of {quantity} {unit} (needs {needed})",
                pdu,
                fault=FrameFault.FUNCTION,
            )
    elif function in (5, 6, 15, 16):
        # The address (and for FC 15/16 the quantity) says which request a reply answers. The
        # value of an FC 5/6 reply is not compared: a device that did not move is the action's
        # read-back to find ('not_followed', MAJOR), not a framing fault.
        end = 3 if function in (5, 6) else 5
        if pdu[1:end] != request[1:end]:
            what = "address" if function in (5, 6) else "address and quantity"
            raise _frame_error(
                f"write reply does not echo the request's {what} "
                f"(sent {request[1:5].hex(' ')}, echoed {pdu[1:5].hex(' ')})",
                pdu,
                fault=FrameFault.FUNCTION,
            )


def _split(function: int, pdu: bytes) -> PduReply:
    if not pdu:
        raise _frame_error("empty reply PDU", pdu)
    got = pdu[0]
    if got == function | 0x80:
        if len(pdu) != 2:
            raise _frame_error(f"exception reply of {len(pdu)} bytes (expected 2)", pdu)
        return PduReply(got, exception_code=pdu[1])
    if got != function:
        raise _frame_error(
            f"reply of function {got} to a request of function {function}", pdu, fault=FrameFault.FUNCTION
        )
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


class PduCalls:
    """The client calls, on top of a transaction layer's `execute(unit, pdu)`."""

    async def execute(self, unit: int, pdu: bytes, *, no_response_expected: bool = False) -> PduReply | None:
        raise NotImplementedError

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
