"""The client side of the driver: one client per bus, one transaction at a time.

Modbus TCP runs on the gateway's own MBAP transaction layer (`_tcp.MbapClient`: the reason is
written there); RTU and RTU over TCP run on pymodbus, imported only when such a bus opens.
Client types stop here: callers get registers/bits as tuples and typed gateway errors.
pymodbus is configured not to do the bus owner's job: retries=0, no reconnect of its own
(reconnect_delay=0), no disconnect after N silent requests (a silent unit behind a TCP gateway
must not cut off the other units), and the per-transaction timeout is set for every call.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import struct
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from citynerve.drivers.modbus._tcp import MbapClient, PduReply
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

if TYPE_CHECKING:
    from pymodbus.client import AsyncModbusSerialClient, AsyncModbusTcpClient

_NEVER_DISCONNECT = 1_000_000_000


def _quiet_pymodbus() -> None:
    # pymodbus logs every timeout and dropped frame at ERROR. The driver raises a typed error for
    # each and the bus owner logs once per device state change, so pymodbus' lines would only
    # repeat them (and flood the log from one silent device). A level set by the operator is kept.
    if logging.getLogger("pymodbus").level == logging.NOTSET:
        logging.getLogger("pymodbus").setLevel(logging.CRITICAL)


BROADCAST_TURNAROUND_S = 0.1

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
    """One pymodbus client on one bus; `transact` runs one request and maps every failure."""

    def __init__(self, bus: ModbusBusConfig) -> None:
        self.bus = bus
        self._client: AsyncModbusTcpClient | AsyncModbusSerialClient | MbapClient | None = None
        self._lock = asyncio.Lock()
        self._rx = b""
        self._tx = b""  # the last request sent, for diagnostics (`last_frames`)
        self._quiet_until = 0.0
        self._gap_s = silent_interval_s(bus.baudrate) if isinstance(bus, ModbusRtuBusConfig) else 0.0
        self.frame_protocol = "modbus-tcp" if isinstance(bus, ModbusTcpBusConfig) else "modbus-rtu"

    # -- open / close ------------------------------------------------------------------------

    def _make_client(self) -> AsyncModbusTcpClient | AsyncModbusSerialClient:
        from pymodbus.client import AsyncModbusSerialClient, AsyncModbusTcpClient
        from pymodbus.framer import FramerType

        _quiet_pymodbus()
        bus = self.bus
        common: dict[str, Any] = {
            "timeout": bus.timeout_s,
            "retries": 0,
            "reconnect_delay": 0,
            "reconnect_delay_max": 0,
            "trace_packet": self._trace_packet,
            "name": bus.id,
        }
        client: AsyncModbusTcpClient | AsyncModbusSerialClient
        if isinstance(bus, ModbusRtuBusConfig):
            client = AsyncModbusSerialClient(
                bus.port,
                framer=FramerType.RTU,
                baudrate=bus.baudrate,
                bytesize=bus.bytesize,
                parity=bus.parity,
                stopbits=bus.stopbits,
                handle_local_echo=bus.handle_local_echo,
                **common,
            )
        else:
            framer = FramerType.SOCKET if isinstance(bus, ModbusTcpBusConfig) else FramerType.RTU
            client = AsyncModbusTcpClient(bus.host, port=bus.port, framer=framer, **common)
        client.set_max_no_responses(_NEVER_DISCONNECT)
        return client

    async def open(self) -> None:
        """Connect; ChannelError with a one-line reason if the port or endpoint cannot be used."""
        if self._client is not None and self._client.connected:
            return
        await self.close()
        if isinstance(self.bus, ModbusTcpBusConfig):
            await self._open_native(self.bus)
            return
        client = self._make_client()
        try:
            # client.connect() would add a fixed 0.1 s sleep; the transaction manager's connect
            # is the same minus that (pinned minor). Two loop turns let the serial transport's
            # call_soon chain (reader registration, then connection_made) run.
            connected = await client.ctx.connect()
            for _ in range(2):
                await asyncio.sleep(0)
        except ValueError as err:  # pyserial: a URL it cannot parse (pymodbus only catches OSError)
            # (UnicodeError is a ValueError: a host name the IDNA codec refuses)
            client.close()
            serial = isinstance(self.bus, ModbusRtuBusConfig)
            what = f"open serial port {self.bus_port}" if serial else f"connect to {self.bus_port}"
            raise ChannelError(self.bus.id, f"cannot {what}: {err}") from err
        if not connected:
            client.close()
            raise ChannelError(self.bus.id, await self._why_not_open())
        self._client = client

    async def _open_native(self, bus: ModbusTcpBusConfig) -> None:
        native = MbapClient(bus.host, bus.port, bus.timeout_s)
        where = f"{bus.host}:{bus.port}"
        try:
            await native.connect()
        except TimeoutError as err:
            raise ChannelError(bus.id, f"no TCP answer from {where} within {bus.timeout_s:g} s") from err
        except ConnectionRefusedError as err:
            reason = f"cannot connect to {where}: connection refused (nothing listens on that port)"
            raise ChannelError(bus.id, reason) from err
        except OSError as err:
            raise ChannelError(bus.id, f"cannot connect to {where}: {err.strerror or err}") from err
        except ValueError as err:  # UnicodeError too: a host name the IDNA codec refuses
            raise ChannelError(bus.id, f"cannot connect to {where}: not a usable host name ({err})") from err
        self._client = native

    @property
    def bus_port(self) -> str:
        """The port (serial URL) or host:port this channel opens, for messages."""
        bus = self.bus
        return bus.port if isinstance(bus, ModbusRtuBusConfig) else f"{bus.host}:{bus.port}"

    async def _why_not_open(self) -> str:
        # pymodbus only logs why a connect failed; ask the OS the same question to name the reason.
        bus = self.bus
        if isinstance(bus, ModbusRtuBusConfig):
            import serial

            def probe() -> str:
                try:
                    port = serial.serial_for_url(bus.port, exclusive=True, baudrate=bus.baudrate, timeout=0)
                except (serial.SerialException, OSError, ValueError) as err:
                    text = str(err).replace("\n", " ")
                    if "lock" in text.lower() or "busy" in text.lower():
                        return f"serial port {bus.port} is in use by another program ({text})"
                    return f"cannot open serial port {bus.port}: {text}"
                port.close()
                return f"cannot open serial port {bus.port} (it opened on a second try: flaky adapter?)"

            return await asyncio.to_thread(probe)
        where = f"{bus.host}:{bus.port}"
        try:
            _, writer = await asyncio.wait_for(asyncio.open_connection(bus.host, bus.port), bus.timeout_s)
        except TimeoutError:
            return f"no TCP answer from {where} within {bus.timeout_s:g} s"
        except ConnectionRefusedError:
            return f"cannot connect to {where}: connection refused (nothing listens on that port)"
        except OSError as err:
            return f"cannot connect to {where}: {err.strerror or err}"
        writer.close()
        with contextlib.suppress(OSError):
            await writer.wait_closed()
        return f"cannot connect to {where} (it accepted a second try: flaky link?)"

    @property
    def connected(self) -> bool:
        """Whether the channel is open and its connection (TCP) or port (serial) is up."""
        return self._client is not None and self._client.connected

    async def close(self) -> None:
        client, self._client = self._client, None
        if client is not None:
            client.close()

    # -- transactions ------------------------------------------------------------------------

    def _trace_packet(self, sending: bool, data: bytes) -> bytes:
        if sending:
            self._tx = bytes(data)
        else:
            # pymodbus hands over the whole receive buffer so far: keep the latest for diagnosis.
            self._rx = bytes(data)
        return data

    async def _keep_silence(self) -> None:
        loop = asyncio.get_running_loop()
        wait = self._quiet_until - loop.time()
        if wait > 0:
            await asyncio.sleep(wait)

    async def transact(
        self,
        device_id: str,
        unit: int,
        points: tuple[str, ...],
        timeout_s: float,
        call: Callable[[Any], Awaitable[Any]],
    ) -> Reply:
        """Run one request (`call(client)`) and return the reply, or raise a typed error."""
        async with self._lock:
            client = self._client
            if client is None or not client.connected:
                raise ChannelError(self.bus.id, "not connected" if client is None else "connection lost")
            if isinstance(client, MbapClient):
                client.timeout_s = timeout_s
                try:
                    response = await call(client)
                except TimeoutError as err:
                    if client.received:
                        raise FrameError(
                            self.frame_protocol,
                            f"no valid reply in {len(client.received)} bytes received",
                            client.received,
                        ) from err
                    raise DeviceTimeoutError(device_id, points, timeout_s) from err
                except ConnectionError as err:
                    raise ChannelError(self.bus.id, "connection lost") from err
            else:
                response = await self._transact_pymodbus(client, device_id, unit, points, timeout_s, call)
        return self._reply(device_id, points, response)

    async def _transact_pymodbus(
        self,
        client: AsyncModbusTcpClient | AsyncModbusSerialClient,
        device_id: str,
        unit: int,
        points: tuple[str, ...],
        timeout_s: float,
        call: Callable[[Any], Awaitable[Any]],
    ) -> Any:
        from pymodbus.exceptions import ConnectionException, ModbusException, ModbusIOException

        await self._keep_silence()
        self._rx = self._tx = b""
        # pymodbus reads its per-request timeout from here; set it per device (pinned minor).
        client.ctx.comm_params.timeout_connect = timeout_s
        try:
            response = await call(client)
        except ModbusIOException as err:
            task = asyncio.current_task()
            if task is not None and task.cancelling():
                # pymodbus turns a cancellation into ModbusIOException; the owner's timeout
                # or shutdown must still see CancelledError.
                raise asyncio.CancelledError from err
            if self._rx:
                raise self._frame_error(unit) from err
            raise DeviceTimeoutError(device_id, points, timeout_s) from err
        except ConnectionException as err:
            raise ChannelError(self.bus.id, "connection lost") from err
        except ModbusException as err:
            raise FrameError(self.frame_protocol, f"unusable reply: {err}", self._rx) from err
        finally:
            # Unit 0 is a broadcast nobody answers: give every device the turnaround delay
            # (100 ms and up in the spec) to act on it before the line is used again.
            rtu = self.frame_protocol == "modbus-rtu"
            gap = max(self._gap_s, BROADCAST_TURNAROUND_S) if unit == 0 and rtu else self._gap_s
            self._quiet_until = asyncio.get_running_loop().time() + gap
        return response

    def _reply(self, device_id: str, points: tuple[str, ...], response: Any) -> Reply:
        if response is None:  # broadcast: nobody answers
            return Reply()
        if isinstance(response, PduReply) and not response.isError():
            found = tuple(sorted(response.information.items()))
            return Reply(response.registers, response.bits, found, response.data)
        if response.isError():
            code = int(getattr(response, "exception_code", 0))
            reason = EXCEPTION_REASONS.get(code, "unknown exception code")
            raise DeviceExceptionError(
                device_id, code, reason, points, transient=code in TRANSIENT_EXCEPTIONS
            )
        registers = tuple(int(r) for r in (getattr(response, "registers", None) or ()))
        bits = tuple(bool(b) for b in (getattr(response, "bits", None) or ()))
        information = getattr(response, "information", None)
        objects: tuple[tuple[int, bytes], ...] = ()
        if isinstance(information, dict):
            objects = tuple(
                sorted(
                    (int(k), v if isinstance(v, bytes) else str(v).encode()) for k, v in information.items()
                )
            )
        data = struct.pack(f">{len(registers)}H", *registers) if registers else b""
        return Reply(registers=registers, bits=bits, objects=objects, data=data)

    def last_frames(self) -> dict[str, str]:
        """The bytes of the last transaction as they went over the wire (RTU with CRC, TCP with the
        MBAP header), hex: what a remote `device_read` shows next to the decoded registers."""
        client = self._client
        if isinstance(client, MbapClient):  # the gateway's own TCP transactions keep their frames
            tx, rx = client.sent, client.received
            return {"protocol": self.frame_protocol, "tx": tx.hex(" "), "rx": rx.hex(" ")}
        return {"protocol": self.frame_protocol, "tx": self._tx.hex(" "), "rx": self._rx.hex(" ")}

    def _frame_error(self, unit: int) -> FrameError:
        data = self._rx
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
        return FrameError(self.frame_protocol, "reply does not match the request", data)
