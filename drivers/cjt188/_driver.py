"""The CJ/T 188 poll driver: water, gas and heat meters on one line; one 901F read per meter."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from citynerve.drivers.cjt188 import codec
from citynerve.drivers.cjt188.models import Cjt188Device
from citynerve.drivers.cjt188.readings import parse_901f
from citynerve.drivers.serialio import (
    LineTiming,
    ReplyTimeout,
    SerialBusConfig,
    SerialLine,
    frames_of,
    search,
    wildcard_reply_error,
)
from citynerve.gateway.api import (
    FrameError,
    PermanentError,
    PollDriver,
    PollRequest,
    Quality,
    Sample,
    StateStore,
    Value,
    WriteRejectedError,
)

DEFAULT_INTERVAL_S = 60.0
_OPEN_WORDS = {"open", "on", "1", "true"}
_CLOSE_WORDS = {"close", "closed", "off", "0", "false"}


def _as_device(device: Any) -> Cjt188Device:
    if isinstance(device, Cjt188Device):
        return device
    return Cjt188Device.model_validate(device.model_dump() if hasattr(device, "model_dump") else device)


def valve_command(value: Value) -> bool:
    """True to open, False to close. Raises ValueError for anything else."""
    if isinstance(value, bool):
        return value
    if isinstance(value, int | float) and value in (0, 1):
        return bool(value)
    if isinstance(value, str) and value.strip().lower() in _OPEN_WORDS | _CLOSE_WORDS:
        return value.strip().lower() in _OPEN_WORDS
    raise ValueError(f"valve takes open/close (or true/false), got {value!r}")


class Cjt188Driver(PollDriver[SerialBusConfig, Cjt188Device]):
    """CJ/T 188 meters on one serial line. Each poll is one 901F read giving every point."""

    def __init__(
        self, bus: SerialBusConfig, devices: Sequence[Cjt188Device], state: StateStore | None = None
    ) -> None:
        devices = [_as_device(d) for d in devices]
        super().__init__(bus, devices, state)
        self.line = SerialLine(bus.id, bus.serial, timing=LineTiming(gap_s=bus.gap_s))
        self._ser = 0
        self._trace: list[tuple[bytes, bytes]] | None = None  # exchanges of a diagnostic read

    async def open(self) -> None:
        await self.line.open()

    async def close(self) -> None:
        await self.line.close()

    def plan(self, device: Cjt188Device) -> Sequence[PollRequest]:
        """One 901F read for all points; the shortest point interval wins."""
        device = _as_device(device)
        default = device.poll_interval_s or DEFAULT_INTERVAL_S
        enabled = [(n, p) for n, p in device.points.items() if p.enabled]
        if not enabled:
            return []
        interval = min(p.poll_interval_s or default for _, p in enabled)
        return [PollRequest(tuple(n for n, _ in enabled), interval)]

    def _next_ser(self) -> int:
        self._ser = (self._ser + 1) & 0xFF
        return self._ser

    async def read(self, device: Cjt188Device, request: PollRequest) -> tuple[Sample, ...]:
        device = _as_device(device)
        values = await self.read_901f(device, request.points)
        samples = []
        for name in request.points:
            field = device.points[name].field
            value = values.get(field)
            missing = field not in values or (field == "meter_time" and value is None)
            samples.append(Sample(name, value, Quality.BAD if missing else Quality.GOOD))
        return tuple(samples)

    async def read_901f(self, device: Cjt188Device, points: tuple[str, ...] = ()) -> dict[str, Any]:
        """Read and decode the meter's current values (flows with units, time, status)."""
        request = codec.build_read(
            device.meter_type,
            device.address,
            ser=self._next_ser(),
            order=device.di_order,
            preamble=device.preamble,
        )
        frame = await self._transact(device, request, codec.DI_READ, points)
        return parse_901f(frame.data[3:], frame.meter_type, device.status())

    async def write(self, device: Cjt188Device, point: str, value: Value) -> None:
        """Open or close the valve (DI A017: 55 open, 99 close)."""
        device = _as_device(device)
        config = device.points.get(point)
        if config is None:
            raise WriteRejectedError(device.id, point, "no such point")
        if not config.writable or config.field != "valve":
            raise WriteRejectedError(device.id, point, "not writable (only a writable valve point is)")
        try:
            open_valve = valve_command(value)
        except ValueError as err:
            raise WriteRejectedError(device.id, point, str(err)) from err
        await self.set_valve(device, open_valve, (point,))

    async def set_valve(self, device: Cjt188Device, open_valve: bool, points: tuple[str, ...] = ()) -> None:
        request = codec.build_valve(
            device.meter_type,
            device.address,
            open_valve=open_valve,
            ser=self._next_ser(),
            order=device.di_order,
            preamble=device.preamble,
        )
        await self._transact(device, request, codec.DI_VALVE, points)

    async def _transact(
        self, device: Cjt188Device, request: bytes, di: int, points: tuple[str, ...]
    ) -> codec.Frame:
        address = device.address

        def ours(frame: codec.Frame) -> bool:
            return frame.is_reply and frame.address == address

        try:
            frame = await self.line.transact(
                request, codec.StreamParser(), timeout_s=self.bus.timeout_s, accept=ours
            )
        except ReplyTimeout as err:
            raise err.as_error(codec.PROTOCOL, device.id, points) from err
        finally:
            if self._trace is not None:
                self._trace.append(self.line.last_exchange)
        codec.check_reply(frame, device.id, points)
        if not codec.di_matches(frame.di, di):
            raise FrameError(
                codec.PROTOCOL, f"reply carries DI {frame.di.hex().upper()}, asked {di:04X}", frame.raw
            )
        return frame

    async def diag(self, action: str, params: Mapping[str, Any]) -> dict[str, Any]:
        """`read-address` (wildcard; one meter on the bus), `read` (params: address, meter_type,
        di_order) and `valve` (params: address, state open|close)."""
        if action == "read-address":
            if len(self.devices) > 1:
                raise PermanentError(
                    f"bus {self.bus.id}: read-address uses the wildcard address; "
                    f"it is only valid with one meter on the bus ({len(self.devices)} configured)"
                )
            order = codec.DiOrder(str(params.get("di_order", codec.DiOrder.HIGH_FIRST)))
            request = codec.build_read_address(ser=self._next_ser(), order=order)
            try:
                frame = await self.line.transact(
                    request,
                    codec.StreamParser(),
                    timeout_s=self.bus.timeout_s,
                    accept=lambda f: f.is_reply and f.function == codec.Control.READ_ADDRESS,
                )
            except ReplyTimeout as err:
                raise wildcard_reply_error(err, codec.PROTOCOL, codec.WILDCARD) from err
            codec.check_reply(frame, codec.WILDCARD)
            return {
                "address": frame.address,
                "meter_type": f"{frame.meter_type:02X}",
                "meter_type_name": codec.meter_type_name(frame.meter_type),
                "frame": frame.raw.hex(" ").upper(),
            }
        if action == "probe":
            return (await self.probe(params)).to_dict()
        if action == "read":
            device = self._adhoc_device(params)
            self._trace = [] if params.get("frames") else None
            try:
                out = {"address": device.address, "di": "901F", **await self.read_901f(device)}
                if self._trace is not None:
                    out["frames"] = frames_of(codec.PROTOCOL, self._trace)
                return out
            finally:
                self._trace = None
        if action == "valve":
            device = self._adhoc_device(params)
            try:
                open_valve = valve_command(params.get("state"))
            except ValueError as err:
                raise PermanentError(str(err)) from err
            await self.set_valve(device, open_valve)
            return {"address": device.address, "valve": "open" if open_valve else "close", "accepted": True}
        return await super().diag(action, params)

    async def probe(self, params: Mapping[str, Any]) -> search.ProbeResult:
        """One step of a meter search: read-address (810A) at an address pattern (A: any digit).
        The reply says the meter's type (its T byte) and the DI byte order it speaks."""
        pattern = search.check_pattern(params.get("pattern"), 14)
        timeout = search.probe_timeout_s(params, self.bus.timeout_s)
        data = codec.di_bytes(codec.DI_ADDRESS) + bytes([self._next_ser()])
        request = codec.encode_frame(0xAA, pattern, codec.Control.READ_ADDRESS, data)
        try:
            frame = await self.line.transact(
                request,
                codec.StreamParser(),
                timeout_s=timeout,
                accept=lambda f: f.is_reply and search.fits(pattern, f.address),
            )
        except ReplyTimeout as err:
            return search.from_timeout(err)
        di_raw = bytes(frame.data[:2])
        order = (
            codec.DiOrder.HIGH_FIRST
            if di_raw == codec.di_bytes(codec.DI_ADDRESS, codec.DiOrder.HIGH_FIRST)
            else codec.DiOrder.LOW_FIRST
            if di_raw == codec.di_bytes(codec.DI_ADDRESS, codec.DiOrder.LOW_FIRST)
            else None
        )
        return search.ProbeResult(
            search.Probe.ONE,
            frame.address,
            {
                "meter_type": f"{frame.meter_type:02X}",
                "meter_type_name": codec.meter_type_name(frame.meter_type),
                "di_order": order.value if order else None,
                "di_raw": di_raw.hex().upper(),
                "frame": frame.raw.hex(" ").upper(),
            },
        )

    def _adhoc_device(self, params: Mapping[str, Any]) -> Cjt188Device:
        address = str(params.get("address", ""))
        for device in self.devices.values():
            if device.id == address or device.address == address:
                return device
        try:
            return Cjt188Device.model_validate(
                {
                    "id": f"meter-{address}",
                    "bus": self.bus.id,
                    "profile": "adhoc",
                    "address": address,
                    "meter_type": params.get("meter_type", 0x10),
                    "di_order": params.get("di_order", codec.DiOrder.HIGH_FIRST),
                    "location": {"address_code": "000000"},
                }
            )
        except ValueError as err:  # pydantic's ValidationError: name the first bad field, one line
            errors = getattr(err, "errors", None)
            first = errors()[0] if callable(errors) else {"loc": (), "msg": str(err)}
            where = ".".join(str(p) for p in first.get("loc", ())) or "request"
            raise PermanentError(f"bad meter request: {where}: {first.get('msg')}") from err
