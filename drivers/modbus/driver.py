"""`ModbusDriver`: the Modbus PollDriver (TCP, RTU, RTU over TCP) that bus owners drive.

- `plan(device)` -> `ModbusRequest`s from the planner (fewest reads per table and interval).
- `read(device, request)` -> raw `Sample`s (before scale/offset: the pipeline scales).
- `write(device, point, value)` -> FC 5/6/15/16 after validating the point and the value.
- `diag("scan" | "read" | "write", params)` -> JSON-able dict for technicians.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Hashable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from citynerve.drivers.modbus._channel import READ_FUNCTION, ModbusChannel
from citynerve.drivers.modbus._diag import run_diag, scan_steps
from citynerve.drivers.modbus._plan import DecodePlan, decode_plan, decode_samples
from citynerve.drivers.modbus.codec import GATEWAY_NO_TARGET, CodecError, encode_value
from citynerve.drivers.modbus.config import (
    BIT_TABLES,
    ModbusBusConfig,
    ModbusDeviceConfig,
    ModbusPointConfig,
)
from citynerve.drivers.modbus.planner import Limits, PointSpan, plan_reads
from citynerve.gateway.api import (
    DeviceExceptionError,
    DeviceUnreachableError,
    DiagSteps,
    FrameError,
    FrameFault,
    PollDriver,
    PollRequest,
    Quality,
    Sample,
    StateStore,
    TableCache,
    Value,
    WriteRejectedError,
)

DEFAULT_INTERVAL_S = 60.0
_READ_METHOD = {
    "coil": "read_coils",
    "discrete": "read_discrete_inputs",
    "holding": "read_holding_registers",
    "input": "read_input_registers",
}
ILLEGAL_DATA_ADDRESS = 2
_MAX_PLANS = 4096

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class ModbusRequest(PollRequest):
    """One planned read: FC `function` of `count` addresses of `table` from `address`."""

    table: str
    function: int
    address: int
    count: int


def point_interval(device: ModbusDeviceConfig, point: ModbusPointConfig) -> float:
    """Effective poll interval: the point's, else the device's, else 60 s."""
    return point.poll_interval_s or device.poll_interval_s or DEFAULT_INTERVAL_S


def plan_device(device: ModbusDeviceConfig) -> tuple[ModbusRequest, ...]:
    """The read plan of one device (every enabled point, fewest requests)."""
    spans = [
        PointSpan(name, p.table, p.address, p.register_count, point_interval(device, p))
        for name, p in device.points.items()
        if p.enabled
    ]
    limits = Limits(device.max_request_registers, device.max_request_bits, device.max_gap)
    return tuple(
        ModbusRequest(
            points=tuple(s.name for s in r.points),
            interval_s=r.interval_s,
            table=r.table,
            function=READ_FUNCTION[r.table],
            address=r.address,
            count=r.count,
        )
        for r in plan_reads(spans, limits)
    )


def raw_from_engineering(point: ModbusPointConfig, value: Value) -> Value:
    """The raw device value for an engineering value: the inverse of the pipeline's
    `raw * scale + offset`, rounded to a whole number for integer types. Callers that take
    engineering values (local actions, platform commands) use it before `write`."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        return value
    if point.scale == 0:
        raise CodecError(f"point {point.name or '?'} has scale 0: no raw value gives {value!r}")
    raw = (value - point.offset) / point.scale
    if point.type in ("float32", "float64") or not math.isfinite(raw):
        return raw
    return round(raw)


def encode_write(device: ModbusDeviceConfig, point_name: str, value: Value) -> tuple[ModbusPointConfig, Any]:
    """Check a write and turn the value into a bool (coil) or registers. Raises WriteRejectedError."""
    point = device.points.get(point_name)
    if point is None:
        raise WriteRejectedError(device.id, point_name, "no such point on this device")
    point = point if point.name else point.model_copy(update={"name": point_name})
    if not point.writable:
        raise WriteRejectedError(device.id, point_name, "the point is not writable (writable = false)")
    if point.table == "coil":
        if isinstance(value, bool):
            return point, value
        if isinstance(value, int) and value in (0, 1):
            return point, bool(value)
        raise WriteRejectedError(device.id, point_name, f"a coil takes true/false or 0/1, not {value!r}")
    if value is None or isinstance(value, bool):
        raise WriteRejectedError(device.id, point_name, f"a {point.type} point needs a value, not {value!r}")
    if isinstance(value, float) and not math.isfinite(value):
        raise WriteRejectedError(device.id, point_name, f"{value!r} is not a number a device can act on")
    try:
        registers = encode_value(
            value,
            point.type,
            word_order=point.word_order,
            byte_order=point.byte_order,
            length=point.length,
            encoding=point.encoding,
        )
    except CodecError as err:
        raise WriteRejectedError(device.id, point_name, str(err)) from err
    return point, registers


class ModbusDriver(PollDriver[ModbusBusConfig, ModbusDeviceConfig]):
    """Modbus on one bus. The bus owner is the only caller; transactions run one at a time."""

    def __init__(
        self, bus: ModbusBusConfig, devices: Sequence[ModbusDeviceConfig], state: StateStore | None = None
    ) -> None:
        super().__init__(bus, devices, state)
        self.channel = ModbusChannel(bus)
        # Merged reads a device refused for an unmapped address: read point by point instead.
        self._read_apart: set[tuple[str, str, int, int]] = set()
        self._plans: TableCache[DecodePlan] = TableCache(decode_plan)
        # Read plans by what they depend on (the point objects under their names, the device's
        # interval and limits): the devices of one profile share one plan (~0.3 MB at 1,000).
        # Entries hold the point objects, so their ids are not reused while an entry lives.
        self._requests: dict[Hashable, tuple[tuple[object, ...], tuple[ModbusRequest, ...]]] = {}
        # The decode plan of each request in those plans, by the request's identity (the entry
        # keeps the request alive): one per profile read, not one per device and read.
        self._decodes: dict[int, DecodePlan] = {}

    async def open(self) -> None:
        await self.channel.open()

    async def close(self) -> None:
        await self.channel.close()

    def _timeout(self, device: ModbusDeviceConfig) -> float:
        return device.timeout_s or self.bus.timeout_s

    def plan(self, device: ModbusDeviceConfig) -> Sequence[ModbusRequest]:
        table = tuple(device.points.items())
        key = (
            device.poll_interval_s,
            device.max_request_registers,
            device.max_request_bits,
            device.max_gap,
            tuple((name, id(point)) for name, point in table),
        )
        hit = self._requests.get(key)
        if hit is None:
            if len(self._requests) >= _MAX_PLANS:  # what reloads leave behind
                self._requests.clear()
                self._decodes.clear()
            hit = self._requests[key] = (table, plan_device(device))
            for r in hit[1]:
                self._decodes[id(r)] = decode_plan(device.points, r.points, r.address)
        return hit[1]

    async def read(self, device: ModbusDeviceConfig, request: PollRequest) -> tuple[Sample, ...]:
        try:
            return await self._read(device, request)
        except DeviceExceptionError as err:
            if err.code not in GATEWAY_NO_TARGET:
                raise
            # The gateway's word that the meter is silent: a failure of the device (the owner takes
            # it offline), not an answer (a dead meter stayed online for ever).
            unit, points = device.address, request.points
            raise DeviceUnreachableError(device.id, unit, err.code, err.reason, points) from err

    async def _read(self, device: ModbusDeviceConfig, request: PollRequest) -> tuple[Sample, ...]:
        if not isinstance(request, ModbusRequest):
            raise TypeError(f"ModbusDriver.read needs a ModbusRequest, got {type(request).__name__}")
        key = (device.id, request.table, request.address, request.count)
        if key in self._read_apart:
            return await self._read_points_apart(device, request)
        try:
            return await self._read_request(device, request)
        except DeviceExceptionError as err:
            if err.code != ILLEGAL_DATA_ADDRESS or len(request.points) < 2:
                raise
            # Many devices refuse a read that spans registers they do not have. The merged read
            # is then replaced by reads of the points alone, so one unmapped gap (or one wrong
            # point) does not blank its neighbours; remembered, and logged once.
            log.warning(
                "device %s refuses the %s read %d..%d (illegal data address): reading its %d points "
                "apart from now on (set max_gap = 0 for this device to plan it that way)",
                device.id,
                request.table,
                request.address,
                request.address + request.count - 1,
                len(request.points),
            )
            self._read_apart.add(key)
            return await self._read_points_apart(device, request)

    async def _read_request(self, device: ModbusDeviceConfig, request: ModbusRequest) -> tuple[Sample, ...]:
        unit = device.address
        table, address, count = request.table, request.address, request.count

        method = _READ_METHOD[table]

        def call(client: Any) -> Any:  # the client's coroutine: awaited by the channel
            return getattr(client, method)(address, count=count, device_id=unit)

        reply = await self.channel.transact(
            device.id, unit, request.points, self._timeout(device), call, getattr(device, "reply_unit", None)
        )
        # The transaction layers check the byte count against the request; this holds whatever
        # client answers: exactly `count` registers, or the bytes `count` bits fill.
        have = len(reply.bits) if table in BIT_TABLES else len(reply.registers)
        if have != (8 * ((count + 7) // 8) if table in BIT_TABLES else count):
            raise FrameError(
                self.channel.frame_protocol,
                f"device {device.id} sent {have} values for a read of {count}",
                fault=FrameFault.FUNCTION,
            )
        # Devices of one profile share their point configs: one decode plan per table and read,
        # found by the planned request itself when it was planned for these point objects; a read
        # planned elsewhere (points read apart, a caller's own request) by the device's table.
        plan = self._decodes.get(id(request))
        if plan is None or any(device.points.get(slot.name) is not slot.point for slot in plan.slots):
            plan = self._plans.get((device.id, request), device.points, request.points, request.address)
        return tuple(decode_samples(plan, reply))

    async def _read_points_apart(
        self, device: ModbusDeviceConfig, request: ModbusRequest
    ) -> tuple[Sample, ...]:
        """Read the request's points without gaps (touching points together, then alone).

        A point the device still refuses gets a BAD sample; if it refuses every one, the
        exception is raised (the map is wrong for this device, not one register).
        """
        spans = [
            PointSpan(n, request.table, device.points[n].address, device.points[n].register_count, 0.0)
            for n in request.points
        ]
        limits = Limits(device.max_request_registers, device.max_request_bits, max_gap=0)
        samples: dict[str, Sample] = {}
        refused: DeviceExceptionError | None = None
        queue = [r.points for r in plan_reads(spans, limits)]
        while queue:
            group = queue.pop(0)
            sub = ModbusRequest(
                points=tuple(p.name for p in group),
                interval_s=request.interval_s,
                table=request.table,
                function=request.function,
                address=min(p.address for p in group),
                count=max(p.end for p in group) - min(p.address for p in group),
            )
            try:
                samples.update((s.point, s) for s in await self._read_request(device, sub))
            except DeviceExceptionError as err:
                if err.code != ILLEGAL_DATA_ADDRESS:
                    raise
                if len(group) > 1:
                    queue[:0] = [(p,) for p in group]  # one of them is the refused one: try each
                    continue
                refused = err
                samples[group[0].name] = Sample(group[0].name, None, Quality.BAD)
        if refused is not None and all(s.quality is Quality.BAD for s in samples.values()):
            raise refused
        return tuple(samples[name] for name in request.points)

    async def write(self, device: ModbusDeviceConfig, point: str, value: Value) -> None:
        spec, payload = encode_write(device, point, value)
        unit = device.address
        broadcast = self.channel.broadcast(unit)
        address = spec.address
        single_fc16 = device.single_register_write_fc16

        async def call(client: Any) -> Any:
            if spec.table == "coil":
                return await client.write_coil(
                    address, payload, device_id=unit, no_response_expected=broadcast
                )
            if len(payload) == 1 and not single_fc16:
                return await client.write_register(
                    address, payload[0], device_id=unit, no_response_expected=broadcast
                )
            return await client.write_registers(
                address, list(payload), device_id=unit, no_response_expected=broadcast
            )

        await self.channel.transact(
            device.id, unit, (point,), self._timeout(device), call, getattr(device, "reply_unit", None)
        )

    async def diag(self, action: str, params: Mapping[str, Any]) -> dict[str, Any]:
        return await run_diag(self.channel, self.bus.timeout_s, action, params)

    def diag_steps(self, action: str, params: Mapping[str, Any]) -> DiagSteps | None:
        """A scan runs one unit id per owner job."""
        return scan_steps(self.channel, params, self.bus.timeout_s) if action == "scan" else None
