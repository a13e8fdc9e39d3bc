"""The client side of the driver: one client per bus, one transaction at a time.

Modbus TCP runs on the gateway's own MBAP transaction layer (`_tcp.MbapClient`), RTU and RTU over
TCP on its own RTU layer (`_rtu.RtuClient`, bounded against babbling devices): the reasons are
written there. Client types stop here: callers get registers/bits as tuples and typed gateway
errors. The clients do not do the bus owner's job: no retries, no reconnect loop, no disconnect
after silent requests (a silent unit behind a TCP gateway must not cut off the other units), and the
per-transaction timeout is set for every call.

One reconnect is the channel's: a connection found closed before a request is sent (converters and
meters close TCP connections idle for a few seconds, often less than the poll interval) is opened
again once, then the request goes out. Nothing was sent, so nothing is repeated; a connection lost
after sending stays a ChannelError, and so does a reconnect that fails (the owner's backoff).
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from citynerve.drivers.modbus._pdu import PduReply
from citynerve.drivers.modbus._rtu import RtuClient
from citynerve.drivers.modbus._tcp import MbapClient
from citynerve.drivers.modbus.codec import (
    EXCEPTION_REASONS,
    TRANSIENT_EXCEPTIONS,
    Direction,
    parse_rtu_frame,
)
from citynerve.drivers.modbus.config import ModbusBusConfig, ModbusRtuBusConfig, ModbusTcpBusConfig
from citynerve.gateway.api import (
    ChannelError,
    DeviceExceptionError,
    DeviceTimeoutError,
    FrameError,
    FrameFault,
)

BROADCAST_TURNAROUND_S = 0.1
LATE_REPLY_GRACE_MAX_S = 1.0
"""RTU: after a timeout the line stays quiet for the device's timeout, at most this long."""

READ_FUNCTION: dict[str, int] = {"coil": 1, "discrete": 2, "holding": 3, "input": 4}


def silent_interval_s(baudrate: int) -> float:
    """t3.5: the silence that separates RTU frames (fixed at 1.75 ms above 19200 baud)."""
    if baudrate > 19200:
        return 0.00175
    return 3.5 * 11 / baudrate


@dataclass(frozen=True, slots=True)
class Reply:
    """What a device answered: registers (FC 3/4, 6, 16), bits (FC 1/2, 5, 15) or objects (FC 43)."""

    registers: tuple[int, ...] = ()
    bits: tuple[bool, ...] = ()
    objects: tuple[tuple[int, bytes], ...] = ()  # FC 43/14 device identification objects
    data: bytes = b""  # the registers as sent (2 bytes each, big-endian): decoded without copies


class ModbusChannel:
    """One client on one bus; `transact` runs one request and maps every failure."""

    def __init__(self, bus: ModbusBusConfig) -> None:
        self.bus = bus
        self._client: MbapClient | RtuClient | None = None
        self._lock = asyncio.Lock()
        self._quiet_until = 0.0
        self._timed_out = False  # the last transaction timed out: its reply may still come
        self._gap_s = silent_interval_s(bus.baudrate) if isinstance(bus, ModbusRtuBusConfig) else 0.0
        self.frame_protocol = "modbus-tcp" if isinstance(bus, ModbusTcpBusConfig) else "modbus-rtu"

    # -- open / close ------------------------------------------------------------------------

    async def open(self) -> None:
        """Connect; ChannelError with a one-line reason if the port or endpoint cannot be used."""
        if self._client is not None and self._client.connected:
            return
        await self.close()
        bus = self.bus
        client: MbapClient | RtuClient
        if isinstance(bus, ModbusTcpBusConfig):
            client = MbapClient(bus.host, bus.port, bus.timeout_s)
        elif isinstance(bus, ModbusRtuBusConfig):
            client = RtuClient(timeout_s=bus.timeout_s, serial=bus, local_echo=bus.handle_local_echo)
        else:
            client = RtuClient(timeout_s=bus.timeout_s, host=bus.host, port=bus.port)
        try:
            await client.connect()
        except Exception as err:
            client.close()
            if isinstance(client, RtuClient):
                await client.wait_closed()
            if isinstance(bus, ModbusRtuBusConfig):
                raise ChannelError.serial_open(bus.id, bus.port, err) from err
            raise ChannelError(bus.id, self._why_not_open(err)) from err
        self._client = client

    def _why_not_open(self, err: Exception) -> str:
        bus = self.bus
        assert not isinstance(bus, ModbusRtuBusConfig)  # a serial port: ChannelError.serial_open
        where = f"{bus.host}:{bus.port}"
        if isinstance(err, TimeoutError):
            return f"no TCP answer from {where} within {bus.timeout_s:g} s"
        if isinstance(err, ConnectionRefusedError):
            return f"cannot connect to {where}: connection refused (nothing listens on that port)"
        if isinstance(err, OSError):
            return f"cannot connect to {where}: {err.strerror or err}"
        if isinstance(err, ValueError):  # UnicodeError too: a host name the IDNA codec refuses
            return f"cannot connect to {where}: not a usable host name ({err})"
        return f"cannot connect to {where}: {type(err).__name__}: {err}"

    def broadcast(self, unit: int) -> bool:
        """Whether a request to `unit` is a broadcast nobody answers: unit 0 on a serial line (RTU
        framing). On Modbus TCP unit 0 addresses the device itself (Messaging Implementation
        Guide 1.0b, 4.4.2)."""
        return unit == 0 and self.frame_protocol == "modbus-rtu"

    @property
    def bus_port(self) -> str:
        """The port (serial URL) or host:port this channel opens, for messages."""
        bus = self.bus
        return bus.port if isinstance(bus, ModbusRtuBusConfig) else f"{bus.host}:{bus.port}"

    @property
    def connected(self) -> bool:
        """Whether the channel is open and its connection (TCP) or port (serial) is up."""
        return self._client is not None and self._client.connected

    @property
    def dropped_bytes(self) -> int:
        """RTU: bytes heard while no request was pending (a babbling device), since the open."""
        return self._client.dropped if isinstance(self._client, RtuClient) else 0

    @property
    def stray_replies(self) -> int:
        """Modbus TCP: replies with a transaction id not pending (late replies, a gateway that
        does not copy the id): dropped, counted since the open."""
        return self._client.stray_replies if isinstance(self._client, MbapClient) else 0

    async def close(self) -> None:
        client, self._client = self._client, None
        if client is not None:
            client.close()
            if isinstance(client, RtuClient):
                await client.wait_closed()

    # -- transactions ------------------------------------------------------------------------

    async def _keep_silence(self, client: RtuClient) -> None:
        """Wait until the line may be used: the gap after the last transaction (t3.5, the broadcast
        turnaround, the grace after a timeout). After a timeout, also t3.5 since the last byte
        heard, so a late reply still arriving when the grace ends is heard out (and dropped)
        before the request goes out, never taken as its answer; a line that never falls silent is
        waited on for at most LATE_REPLY_GRACE_MAX_S more. Only then: bytes on a noisy idle line
        (an unbiased RS-485 pair) held every request for that long (one transaction a second)."""
        loop = asyncio.get_running_loop()
        if (wait := self._quiet_until - loop.time()) > 0:
            await asyncio.sleep(wait)
        if not self._timed_out:
            return
        self._timed_out = False
        give_up = loop.time() + LATE_REPLY_GRACE_MAX_S
        while (now := loop.time()) < give_up:
            wait = client.heard_at + self._gap_s - now
            if wait <= 0:
                return
            await asyncio.sleep(min(wait, give_up - now))

    async def transact(
        self,
        device_id: str,
        unit: int,
        points: tuple[str, ...],
        timeout_s: float,
        call: Callable[[Any], Awaitable[Any]],
        reply_unit: int | None = None,
    ) -> Reply:
        """Run one request (`call(client)`) and return the reply, or raise a typed error.
        `reply_unit` (Modbus TCP): the unit id the device's replies carry, if not `unit`."""
        async with self._lock:
            client = self._client
            if client is None:
                raise ChannelError(self.bus.id, "not connected")
            if not client.connected:
                # Closed while idle (the peer's inactivity timeout, or dropped after garbage):
                # nothing was sent, so open it again once; ChannelError with the reason if not.
                await self.open()
                client = self._client
                assert client is not None  # open() sets it or raises
            client.timeout_s = timeout_s
            rtu = isinstance(client, RtuClient)
            if isinstance(client, MbapClient):
                client.reply_unit = reply_unit
            if isinstance(client, RtuClient):
                await self._keep_silence(client)
            grace = 0.0
            try:
                response = await call(client)
            except TimeoutError as err:
                # RTU has no transaction ids: a reply slower than the timeout would be taken for
                # the next request's if it has the same shape (stored as its values, GOOD). Keep
                # the line quiet long enough for it to come in and be dropped (counted).
                grace = min(timeout_s, LATE_REPLY_GRACE_MAX_S)
                if client.received:
                    raise self._frame_error(unit, client.sent[1:2], client.received) from err
                raise DeviceTimeoutError(device_id, points, timeout_s) from err
            except ConnectionError as err:
                raise ChannelError(self.bus.id, "connection lost") from err
            finally:
                if rtu:
                    # Unit 0 is a broadcast nobody answers: give every device the turnaround delay
                    # (100 ms and up in the spec) to act on it before the line is used again.
                    gap = max(self._gap_s, BROADCAST_TURNAROUND_S) if unit == 0 else self._gap_s
                    gap = max(gap, grace)
                    self._quiet_until = asyncio.get_running_loop().time() + gap
                    self._timed_out = grace > 0
        return self._reply(device_id, points, response)

    def _reply(self, device_id: str, points: tuple[str, ...], response: PduReply | None) -> Reply:
        if response is None:  # broadcast: nobody answers
            return Reply()
        if response.isError():
            code = response.exception_code
            reason = EXCEPTION_REASONS.get(code, "unknown exception code")
            raise DeviceExceptionError(
                device_id, code, reason, points, transient=code in TRANSIENT_EXCEPTIONS
            )
        found = tuple(sorted(response.information.items()))
        return Reply(response.registers, response.bits, found, response.data)

    def last_frames(self) -> dict[str, str]:
        """The bytes of the last transaction as they went over the wire (RTU with CRC, TCP with the
        MBAP header), hex: what a remote `device_read` shows next to the decoded registers."""
        client = self._client
        tx, rx = (client.sent, client.received) if client is not None else (b"", b"")
        return {"protocol": self.frame_protocol, "tx": tx.hex(" "), "rx": rx.hex(" ")}

    def _frame_error(self, unit: int, function: bytes, data: bytes) -> FrameError:
        """Why the bytes heard in a transaction (`data`, at most 256) are no reply to a request of
        `function` (empty: unknown) to `unit`."""
        if self.frame_protocol != "modbus-rtu":
            return FrameError(self.frame_protocol, f"no valid reply in {len(data)} bytes received", data)
        try:
            frame = parse_rtu_frame(data, Direction.RESPONSE)
        except FrameError as err:
            return FrameError(self.frame_protocol, f"garbage on the line: {err.reason}", data)
        if not frame.crc_ok:
            return FrameError(
                self.frame_protocol,
                f"CRC mismatch: expected {frame.crc_expected:#06x}, found {frame.crc_found:#06x}",
                data,
                fault=FrameFault.CHECKSUM,
            )
        if frame.unit != unit:
            return FrameError(
                self.frame_protocol,
                f"reply from another address: unit {frame.unit}, expected {unit}",
                data,
                fault=FrameFault.ADDRESS,
            )
        if function and frame.function & 0x7F != function[0]:
            return FrameError(
                self.frame_protocol,
                f"reply of function {frame.function} to a request of function {function[0]}",
                data,
                fault=FrameFault.FUNCTION,
            )
        return FrameError(self.frame_protocol, "reply does not match the request", data)
