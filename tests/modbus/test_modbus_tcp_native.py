"""The gateway's own Modbus TCP layer (`_tcp.MbapClient`) against pymodbus, the reference.

Golden frames: every request frame it builds is the frame pymodbus builds for the same request, and
every reply frame pymodbus' decoder splits gives the same fields from ours. Differential: the same
random reads and writes through pymodbus' client and ours on one pymodbus server give the same
answers. Bounds: an MBAP header out of range drops the connection with a FrameError; a late reply
to an earlier request is not taken for the current one.
"""

from __future__ import annotations

import asyncio
import random
import struct
from typing import Any

import pytest
from modbus_support import BankServer, start_bank_server
from pymodbus.client import AsyncModbusTcpClient
from pymodbus.framer import FramerSocket
from pymodbus.pdu import DecodePDU
from pymodbus.pdu import bit_message as bm
from pymodbus.pdu import mei_message as mm
from pymodbus.pdu import register_message as rm

from citynerve.drivers.modbus._tcp import MbapClient, PduReply, split_reply
from citynerve.gateway.api import FrameError


def mbap(tid: int, unit: int, pdu: bytes) -> bytes:
    return struct.pack(">HHHB", tid, 0, len(pdu) + 1, unit) + pdu


REQUESTS: list[tuple[str, dict[str, Any], Any]] = [
    ("read_coils", {"address": 9, "count": 19}, bm.ReadCoilsRequest(address=9, count=19)),
    ("read_discrete_inputs", {"address": 0, "count": 8}, bm.ReadDiscreteInputsRequest(address=0, count=8)),
    (
        "read_holding_registers",
        {"address": 0, "count": 92},
        rm.ReadHoldingRegistersRequest(address=0, count=92),
    ),
    (
        "read_input_registers",
        {"address": 300, "count": 2},
        rm.ReadInputRegistersRequest(address=300, count=2),
    ),
    ("write_coil", {"address": 5, "value": True}, bm.WriteSingleCoilRequest(address=5, bits=[True])),
    (
        "write_register",
        {"address": 7, "value": 0xBEEF},
        rm.WriteSingleRegisterRequest(address=7, registers=[0xBEEF]),
    ),
    (
        "write_registers",
        {"address": 10, "values": [1, 2, 65535]},
        rm.WriteMultipleRegistersRequest(address=10, registers=[1, 2, 65535]),
    ),
    (
        "write_coils",
        {"address": 3, "values": [True, False, True, True, False, False, False, False, True]},
        bm.WriteMultipleCoilsRequest(
            address=3, bits=[True, False, True, True, False, False, False, False, True]
        ),
    ),
    (
        "read_device_information",
        {"read_code": 1, "object_id": 0},
        mm.ReadDeviceInformationRequest(read_code=1, object_id=0),
    ),
]


class _Sink(asyncio.Protocol):
    """A peer that keeps what it receives and answers nothing."""

    def __init__(self) -> None:
        self.data = bytearray()
        self.transport: asyncio.Transport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport

    def data_received(self, data: bytes) -> None:
        self.data += data


async def sink_server() -> tuple[asyncio.Server, list[_Sink]]:
    peers: list[_Sink] = []

    def make() -> _Sink:
        peers.append(_Sink())
        return peers[-1]

    server = await asyncio.get_running_loop().create_server(make, "127.0.0.1", 0)
    return server, peers


@pytest.mark.parametrize(("method", "kwargs", "reference"), REQUESTS, ids=[r[0] for r in REQUESTS])
async def test_request_frames_are_pymodbus_frames(
    method: str, kwargs: dict[str, Any], reference: Any
) -> None:
    server, peers = await sink_server()
    client = MbapClient("127.0.0.1", server.sockets[0].getsockname()[1], 0.05)
    await client.connect()
    try:
        with pytest.raises(TimeoutError):
            await getattr(client, method)(**kwargs, device_id=17)
    finally:
        client.close()
        server.close()
    reference.dev_id, reference.transaction_id = 17, 1
    assert client.sent == FramerSocket(DecodePDU(False)).buildFrame(reference)
    assert bytes(peers[0].data) == client.sent


GOLDEN_REPLIES: list[tuple[int, bytes]] = [
    (3, bytes([3, 6, 0x00, 0x2A, 0xFF, 0xFF, 0x80, 0x00])),
    (4, bytes([4, 2, 0x12, 0x34])),
    (1, bytes([1, 3, 0b1010_0101, 0xFF, 0x01])),
    (2, bytes([2, 1, 0b0000_0001])),
    (5, bytes([5, 0, 5, 0xFF, 0x00])),
    (6, bytes([6, 0, 7, 0xBE, 0xEF])),
    (15, bytes([15, 0, 3, 0, 9])),
    (16, bytes([16, 0, 10, 0, 3])),
    (3, bytes([0x83, 2])),
    (1, bytes([0x81, 11])),
    (0x2B, bytes([0x2B, 0x0E, 1, 0x01, 0, 0, 3, 0, 4, *b"ACME", 1, 2, *b"M1", 2, 3, *b"1.0"])),
]


@pytest.mark.parametrize(("function", "pdu"), GOLDEN_REPLIES, ids=[p.hex() for _, p in GOLDEN_REPLIES])
def test_reply_fields_match_pymodbus_decoder(function: int, pdu: bytes) -> None:
    used, reference = FramerSocket(DecodePDU(False)).handleFrame(mbap(4, 1, pdu), 0, 0)
    assert used == len(pdu) + 7 and reference is not None
    ours = split_reply(function, pdu)
    assert ours.isError() == reference.isError()
    if ours.isError():
        assert ours.exception_code == reference.exception_code
        return
    if function in (3, 4):
        assert list(ours.registers) == list(reference.registers)
    if function in (1, 2):
        assert list(ours.bits) == list(reference.bits)
    if function == 0x2B:
        assert ours.information == {k: bytes(v) for k, v in reference.information.items()}


@pytest.mark.parametrize(
    ("function", "pdu"),
    [
        (3, b""),
        (3, bytes([4, 2, 0, 1])),  # another function
        (3, bytes([3, 4, 0, 1])),  # byte count past the end
        (3, bytes([3, 3, 0, 1, 2])),  # odd byte count for registers
        (3, bytes([0x83])),  # exception without a code
        (6, bytes([6, 0, 7])),  # short echo
        (0x2B, bytes([0x2B, 0x0E, 1, 1, 0, 0, 2, 0, 9, 65])),  # object longer than the reply
        (7, bytes([7, 0])),  # a function it never sends
    ],
)
def test_unusable_replies_are_frame_errors(function: int, pdu: bytes) -> None:
    with pytest.raises(FrameError):
        split_reply(function, pdu)


async def test_same_answers_as_pymodbus_on_a_pymodbus_server() -> None:
    srv: BankServer = await start_bank_server((1, 2))
    rng = random.Random(2026)
    srv.banks[1].exceptions[("holding", 500)] = 4
    for table in ("holding", "input"):
        srv.banks[1].put(table, 0, [rng.randrange(65536) for _ in range(300)])
    for table in ("coil", "discrete"):
        srv.banks[1].put(table, 0, [rng.random() < 0.5 for _ in range(300)])
    ours = MbapClient(srv.host, srv.port, 0.3)
    ref = AsyncModbusTcpClient(srv.host, port=srv.port, timeout=0.3, retries=0)
    await ours.connect()
    assert await ref.connect()
    try:
        for _ in range(150):
            kind = rng.randrange(6)
            unit = 1
            address = rng.choice([rng.randrange(280), rng.randrange(490, 510), rng.randrange(995, 1000)])
            count = rng.randint(1, 20)
            if kind < 4:
                method = (
                    "read_coils",
                    "read_discrete_inputs",
                    "read_holding_registers",
                    "read_input_registers",
                )[kind]
                args: dict[str, Any] = {"count": count}
            elif kind == 4:
                method, args = "write_registers", {"values": [rng.randrange(65536) for _ in range(count)]}
            else:
                method, args = "write_coils", {"values": [rng.random() < 0.5 for _ in range(count)]}
            mine = await getattr(ours, method)(address, **args, device_id=unit)
            theirs = await getattr(ref, method)(address, **args, device_id=unit)
            assert isinstance(mine, PduReply)
            assert mine.isError() == theirs.isError(), (method, address, count)
            if mine.isError():
                assert mine.exception_code == theirs.exception_code
            elif kind in (2, 3):
                assert list(mine.registers) == list(theirs.registers)
            elif kind in (0, 1):
                assert list(mine.bits) == list(theirs.bits)
    finally:
        ours.close()
        ref.close()
        await srv.server.shutdown()


async def test_bad_header_drops_the_connection_and_late_replies_are_ignored() -> None:
    server, peers = await sink_server()
    client = MbapClient("127.0.0.1", server.sockets[0].getsockname()[1], 2.0)
    await client.connect()
    try:
        pending = asyncio.ensure_future(client.read_holding_registers(0, count=1, device_id=1))
        for _ in range(200):
            if peers and peers[0].data:
                break
            await asyncio.sleep(0.01)
        peer = peers[0]
        assert peer.transport is not None
        tid = int.from_bytes(peer.data[0:2], "big")
        # A late reply to an earlier transaction first, then the reply to this one.
        peer.transport.write(
            mbap((tid - 1) & 0xFFFF, 1, bytes([3, 2, 0, 99])) + mbap(tid, 1, bytes([3, 2, 0, 42]))
        )
        reply = await asyncio.wait_for(pending, 2.0)
        assert reply is not None and reply.registers == (42,)
        pending = asyncio.ensure_future(client.read_holding_registers(0, count=1, device_id=1))
        await asyncio.sleep(0.05)
        peer.transport.write(struct.pack(">HHH", tid + 1, 0, 4000) + b"\x00" * 10)  # length 4000
        with pytest.raises(FrameError):
            await asyncio.wait_for(pending, 2.0)
        assert not client.connected
        with pytest.raises(ConnectionError):
            await client.read_holding_registers(0, count=1, device_id=1)
    finally:
        client.close()
        server.close()


def test_decode_plan_gives_what_decode_point_gives() -> None:
    """The driver's per-read decode plan (one unpack of the reply bytes) against `decode_point`,
    on random maps: every type and all four word/byte orders, gaps, points sharing registers, reads
    that start before the first point, special float patterns (NaN, infinities, -0.0)."""
    import math

    from modbus_support import LOCATION, device_model

    from citynerve.drivers.modbus._channel import Reply
    from citynerve.drivers.modbus._plan import decode_plan, decode_point, decode_samples

    rng = random.Random(17)
    types = ["int16", "uint16", "int32", "uint32", "int64", "uint64", "float32", "float64", "string", "bool"]
    sizes = {"int16": 1, "uint16": 1, "bool": 1, "string": 3, "int64": 4, "uint64": 4, "float64": 4}
    orders = [("big", "big"), ("little", "big"), ("big", "little"), ("little", "little")]
    specials = [0, 0x7FC0, 0xFF80, 0x7F80, 0x8000, 0x4366, 0xFFFF, 0x7FF0, 0xFFF0]
    for _ in range(400):
        points: dict[str, dict[str, Any]] = {}
        start = rng.randrange(3)  # the read starts this many registers before the first point
        address = start
        for i in range(rng.randint(1, 8)):
            kind = rng.choice(types)
            spec: dict[str, Any] = {"table": "holding", "address": address, "type": kind}
            spec["word_order"], spec["byte_order"] = rng.choice(orders)
            if kind == "string":
                spec["length"] = 3
            if kind == "bool":
                spec["bit"] = rng.randrange(16)
            points[f"p{i}"] = spec
            size = sizes.get(kind, 2)
            # the next point: after a gap, right after, or on the same registers
            address = rng.choice(
                [address, address + size, address + size, address + size + rng.randrange(1, 4)]
            )
        end = max(p["address"] + sizes.get(p["type"], 2) for p in points.values())
        device = device_model(id="d", bus="b", profile="t", address=1, location=LOCATION, points=points)
        registers = [rng.choice([rng.randrange(65536), rng.choice(specials)]) for _ in range(end)]
        reply = Reply(registers=tuple(registers), data=struct.pack(f">{end}H", *registers))
        names = list(points)
        rng.shuffle(names)  # the request's order is the samples' order, whatever the addresses
        fast = decode_samples(decode_plan(device.points, names, 0), reply)
        for sample, name in zip(fast, names, strict=True):
            point = device.points[name]
            expected = decode_point(point, point.address, reply, name)
            assert sample.point == expected.point and sample.quality == expected.quality
            same = sample.value == expected.value or (
                isinstance(sample.value, float)
                and isinstance(expected.value, float)
                and math.isnan(sample.value)
                and math.isnan(expected.value)
            )
            assert same and type(sample.value) is type(expected.value), (name, point.type, sample, expected)
            if isinstance(sample.value, float) and sample.value == 0:  # -0.0 stays -0.0
                assert math.copysign(1, sample.value) == math.copysign(1, expected.value)  # type: ignore[arg-type]
