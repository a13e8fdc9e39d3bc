"""Driver interfaces. A bus owner creates one driver per bus and is the only caller of its methods.

Two shapes:
- `PollDriver`: the gateway asks (Modbus, DL/T 645, CJ/T 188). The driver plans transactions per
  device, runs one when the owner says so, and writes points on request.
- `ListenDriver`: devices speak when they like (fire panel print stream, BLE adverts). The driver
  pushes samples and events into a sink until cancelled.
Drivers never schedule, retry or back off: the bus owner does, the same way for every protocol.
"""

from __future__ import annotations

import contextlib
from abc import ABC, abstractmethod
from collections.abc import Awaitable, Callable, Collection, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Generic, Protocol, TypeVar

from citynerve.gateway.api._config import BusConfig, DeviceConfig, PointConfig
from citynerve.gateway.api._records import Event, Sample, SampleBatch, Value

B = TypeVar("B", bound=BusConfig)
D = TypeVar("D", bound=DeviceConfig)


@dataclass(frozen=True, slots=True)
class PollRequest:
    """One transaction a driver plans for one device. Drivers subclass it with what they need."""

    points: tuple[str, ...]
    interval_s: float


class SampleSink(Protocol):
    """Where a listening driver delivers what it heard."""

    def submit(self, batch: SampleBatch) -> None: ...

    def event(self, event: Event) -> None: ...


class StateStore(Protocol):
    """Small durable key/value state kept in the gateway's store (replay counters, detector state).

    Keys are namespaced by the caller, e.g. "bthome.counter.<mac>". Values are short strings.
    """

    async def get(self, key: str) -> str | None: ...

    async def put(self, key: str, value: str) -> None: ...


class KeptStore(StateStore, Protocol):
    """The store's kept sets too (AsyncOutbox.kept / keep): many small entries of a `kind`, one row
    each, so that a change writes its own entries rather than the whole set again (the uplink's
    command nonces and outcomes, the registry of active alarms)."""

    async def kept(self, kind: str) -> dict[str, str]: ...

    async def keep(
        self,
        kind: str,
        put: Mapping[str, str],
        forget: Collection[str] = (),
        *,
        state: Mapping[str, str | None] | None = None,
    ) -> None: ...


class Driver(ABC, Generic[B, D]):
    """One protocol on one bus. `open` acquires the channel; `close` releases it (idempotent)."""

    def __init__(self, bus: B, devices: Sequence[D], state: StateStore | None = None) -> None:
        self.bus = bus
        self.devices = {d.id: d for d in devices}
        self.state = state

    @abstractmethod
    async def open(self) -> None:
        """Open the channel. Raises ChannelError (missing port, port in use, refused)."""

    @abstractmethod
    async def close(self) -> None:
        """Close the channel; safe to call twice or after a failed open."""

    async def diag(self, action: str, params: Mapping[str, Any]) -> dict[str, Any]:
        """A technician's action on the open channel (scan, read-address, raw read...).

        Returns a JSON-able dict. The bus owner runs it between polls, so it never collides with
        them. Raises PermanentError for an action this protocol does not have.
        """
        from citynerve.gateway.api._errors import PermanentError

        raise PermanentError(f"protocol {self.bus.protocol} has no diagnostic action {action!r}")

    def diag_steps(self, action: str, params: Mapping[str, Any]) -> DiagSteps | None:
        """`action` as steps the bus owner runs one job each, polls between them (a scan of many
        addresses), or None: one job. Checks `params` first (DiagParamError), before the bus is
        touched. `diag` of such an action runs the same steps in turn (the port opened directly)."""
        return None


@dataclass(frozen=True, slots=True)
class DiagSteps:
    """A diagnostic action that asks many addresses in turn, one step per address.

    The bus owner runs each step as a job of its own and the polls that fell due before it first,
    so a scan of 247 silent unit ids holds the line no longer than one of them at a time; a
    smoke detector polled every 2 s went 41 s unpolled while a scan ran as one job. `join` makes
    the action's result from the steps' results, in order."""

    steps: tuple[Callable[[], Awaitable[Any]], ...]
    join: Callable[[list[Any]], dict[str, Any]]

    async def run(self) -> dict[str, Any]:
        """Every step in turn, then `join` (the direct route: no polls to share the port with)."""
        return self.join([await step() for step in self.steps])


class PollDriver(Driver[B, D]):
    @abstractmethod
    def plan(self, device: D) -> Sequence[PollRequest]:
        """The fewest transactions that read every enabled point of `device`."""

    @abstractmethod
    async def read(self, device: D, request: PollRequest) -> tuple[Sample, ...]:
        """Run one planned transaction. Raises DeviceTimeoutError, FrameError, DeviceExceptionError."""

    async def write(self, device: D, point: str, value: Value) -> None:
        """Write one writable point. Raises WriteRejectedError before touching the bus if invalid."""
        from citynerve.gateway.api._errors import WriteRejectedError

        raise WriteRejectedError(device.id, point, f"protocol {self.bus.protocol} has no writes")


class ListenDriver(Driver[B, D]):
    @abstractmethod
    async def listen(self, sink: SampleSink) -> None:
        """Deliver samples and events until cancelled. Bad input is counted, never raised."""

    def device_faults(self) -> Mapping[str, Exception]:
        """Devices the driver cannot serve after `open` (a key file it cannot read), with why: the
        bus owner faults them and takes them offline on their own while the others listen."""
        return {}

    def input_stats(self) -> dict[str, int]:
        """Input the listener refused (garbage lines and bytes, over-rate lines), for status and
        metrics. Listeners without such limits report nothing."""
        return {}


@dataclass(frozen=True, slots=True)
class DriverSpec:
    """What the gateway needs to know about a protocol, found through the `citynerve.drivers`
    entry point group under the bus protocol name."""

    protocol: str  # bus protocol, e.g. "modbus_rtu"
    family: str  # profile family: profiles of this family fit this protocol, e.g. "modbus"
    bus_model: type[BusConfig]
    device_model: type[DeviceConfig]
    point_model: type[PointConfig]
    factory: Callable[..., Driver[Any, Any]]  # (bus, devices, state=None) -> Driver
    description: str = ""
    normalize_address: Callable[[str], str] | None = None
    """A device address as the driver reads it (BTHome: 'a4c138000001' -> 'A4:C1:38:00:00:01'), so
    that two spellings of one address are one address. Raises ValueError for a bad address."""

    def address_key(self, address: int | str) -> str:
        """What two devices on one bus must not share: the address as the driver reads it, or as
        written (any case) without a normalizer or when it is bad (the device model reports that)."""
        if self.normalize_address is not None:
            with contextlib.suppress(ValueError):
                return self.normalize_address(str(address))
        return str(address).lower()


FrameDecoder = Callable[..., dict[str, Any]]
"""`decode(data: bytes, **options) -> dict`: every field of one captured frame, the checksum verdict
and decoded values with units, JSON-able. Raises FrameError. Registered under the entry point group
`citynerve.decoders` (names: modbus-rtu, dlt645, cjt188, bthome) for `citynerve diag decode`."""
