"""The DL/T 645 poll driver: several meters on one RS-485 line, one transaction per DI."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from citynerve.drivers.dlt645 import codec
from citynerve.drivers.dlt645.models import Dlt645Device, Dlt645Point, resolve_item
from citynerve.drivers.dlt645.registry import DataItem
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
    ConfigError,
    ConfigIssue,
    FrameError,
    PermanentError,
    PollDriver,
    PollRequest,
    Quality,
    Sample,
    StateStore,
)

MAX_FOLLOWUPS = 16  # a reply split over more frames than this is a meter stuck in a loop
DEFAULT_INTERVAL_S = 60.0
# What a meter search asks every meter: its total forward active energy (2007: 00010000, 1997: 9010).
PROBE_DI = {"2007": 0x00010000, "1997": 0x9010}


@dataclass(frozen=True, slots=True)
class DiRequest(PollRequest):
    """Read one DI of one meter (one transaction, plus follow-ups if the meter says more follow)."""

    item: DataItem | None = None


def _as_device(device: Any) -> Dlt645Device:
    if isinstance(device, Dlt645Device):
        return device
    return Dlt645Device.model_validate(device.model_dump() if hasattr(device, "model_dump") else device)


class Dlt645Driver(PollDriver[SerialBusConfig, Dlt645Device]):
    """DL/T 645 meters on one serial line. The bus owner schedules; this driver only transacts."""

    def __init__(
        self, bus: SerialBusConfig, devices: Sequence[Dlt645Device], state: StateStore | None = None
    ) -> None:
        devices = [_as_device(d) for d in devices]
        super().__init__(bus, devices, state)
        issues: list[ConfigIssue] = []
        self._items: dict[tuple[str, str], DataItem] = {}
        for device in devices:
            for name, point in device.points.items():
                try:
                    self._items[(device.id, name)] = resolve_item(device, point)
                except ValueError as err:
                    issues.append(
                        ConfigIssue(f"bus {bus.id}", f"devices.{device.id}.points.{name}.di", str(err))
                    )
        if issues:
            raise ConfigError(issues)
        self.line = SerialLine(bus.id, bus.serial, timing=LineTiming(gap_s=bus.gap_s))
        self._trace: list[tuple[bytes, bytes]] | None = None  # exchanges of a diagnostic read

    async def open(self) -> None:
        await self.line.open()

    async def close(self) -> None:
        await self.line.close()

    def plan(self, device: Dlt645Device) -> Sequence[PollRequest]:
        """One transaction per DI (DL/T 645 reads one DI at a time); points that share a DI (a
        status word and its bit flags) share the transaction, at the shortest of their intervals."""
        device = _as_device(device)
        default = device.poll_interval_s or DEFAULT_INTERVAL_S
        groups: dict[DataItem, list[tuple[str, float]]] = {}
        for name, point in device.points.items():
            if point.enabled:
                groups.setdefault(self._items[(device.id, name)], []).append(
                    (name, point.poll_interval_s or default)
                )
        return [
            DiRequest(tuple(n for n, _ in members), min(i for _, i in members), item)
            for item, members in groups.items()
        ]

    async def read(self, device: Dlt645Device, request: PollRequest) -> tuple[Sample, ...]:
        device = _as_device(device)
        item = request.item if isinstance(request, DiRequest) and request.item else None
        if item is None:
            item = self._items[(device.id, request.points[0])]
        value = await self.read_item(device, item, request.points)
        samples = []
        for name in request.points:
            bit = device.points[name].bit
            point_value = bool(int(value) >> bit & 1) if bit is not None else value
            samples.append(Sample(name, point_value, Quality.GOOD))
        return tuple(samples)

    async def read_item(
        self, device: Dlt645Device, item: DataItem, points: tuple[str, ...] = ()
    ) -> float | int | str:
        """Read one DI (with follow-up frames) and decode it."""
        data = await self._read_di(device, item.di, points)
        return item.decode(data)

    async def _read_di(self, device: Dlt645Device, di: int, points: tuple[str, ...]) -> bytes:
        version = device.version
        di_raw = codec.di_bytes(di, version)
        request = codec.build_read(device.address, di, version, preamble=device.preamble)
        frame = await self._transact(device, request, points)
        payload = self._payload(device, frame, di_raw, points)
        seq = 0
        while frame.more_follows and version == "2007":
            seq += 1
            if seq > MAX_FOLLOWUPS:
                raise FrameError(
                    codec.PROTOCOL, f"more than {MAX_FOLLOWUPS} follow-up frames for DI {di:08X}"
                )
            request = codec.build_read_followup(device.address, di, seq, preamble=device.preamble)
            frame = await self._transact(device, request, points)
            part = self._payload(device, frame, di_raw, points)
            # follow-up replies end with the SEQ byte they answer
            payload += part[:-1] if frame.function == codec.Function.READ_FOLLOWUP and part else part
        return payload

    def _payload(
        self, device: Dlt645Device, frame: codec.Frame, di_raw: bytes, points: tuple[str, ...]
    ) -> bytes:
        codec.check_reply(frame, device.id, points, device.version)
        if frame.data[: len(di_raw)] != di_raw:
            got = frame.data[: len(di_raw)][::-1].hex().upper()
            raise FrameError(
                codec.PROTOCOL,
                f"reply carries DI {got}, asked {di_raw[::-1].hex().upper()}",
                frame.raw,
            )
        return frame.data[len(di_raw) :]

    async def _transact(self, device: Dlt645Device, request: bytes, points: tuple[str, ...]) -> codec.Frame:
        address = device.address

        def ours(frame: codec.Frame) -> bool:
            # skip our own echo (adapters that hear themselves) and other meters' late replies
            return frame.is_reply and (frame.address == address or address == codec.WILDCARD)

        try:
            return await self.line.transact(
                request, codec.StreamParser(), timeout_s=self.bus.timeout_s, accept=ours
            )
        except ReplyTimeout as err:
            raise err.as_error(codec.PROTOCOL, device.id, points) from err
        finally:
            if self._trace is not None:
                self._trace.append(self.line.last_exchange)

    async def diag(self, action: str, params: Mapping[str, Any]) -> dict[str, Any]:
        """`read-address` (one meter on the bus: AA..AA wildcard, function 13) and `read-di`
        (params: address, di, optional version/length/decimals/signed/format)."""
        if action == "read-address":
            if len(self.devices) > 1:
                raise PermanentError(
                    f"bus {self.bus.id}: read-address uses the wildcard address; "
                    f"it is only valid with one meter on the bus ({len(self.devices)} configured)"
                )
            request = codec.build_read_address()
            try:
                frame = await self.line.transact(
                    request,
                    codec.StreamParser(),
                    timeout_s=self.bus.timeout_s,
                    accept=lambda f: f.is_reply and f.function == codec.Function.READ_ADDRESS,
                )
            except ReplyTimeout as err:
                raise wildcard_reply_error(err, codec.PROTOCOL, "AAAAAAAAAAAA") from err
            codec.check_reply(frame, "AAAAAAAAAAAA")
            address = codec.decode_address(frame.data[:6]) if len(frame.data) >= 6 else frame.address
            return {"address": address, "frame": frame.raw.hex(" ").upper()}
        if action == "probe":
            return (await self.probe(params)).to_dict()
        if action == "identify":
            return await self.identify_version(str(params.get("address", "")))
        if action == "read-di":
            device = self._adhoc_device(params)
            keys = ("di", "length", "decimals", "signed", "format")
            try:
                point = Dlt645Point.model_validate({k: params[k] for k in keys if params.get(k) is not None})
                item = resolve_item(device, point)
            except ValueError as err:  # pydantic's ValidationError is a ValueError too
                raise PermanentError(f"bad DI request: {_first_line(err)}") from err
            self._trace = [] if params.get("frames") else None
            try:
                value = await self.read_item(device, item)
                out: dict[str, Any] = {
                    "address": device.address,
                    "di": item.di_hex,
                    "name": item.name,
                    "value": value,
                    "unit": item.unit,
                }
                if self._trace is not None:
                    out["frames"] = frames_of(codec.PROTOCOL, self._trace)
                return out
            finally:
                self._trace = None
        return await super().diag(action, params)

    async def probe(self, params: Mapping[str, Any]) -> search.ProbeResult:
        """One step of a meter search: read the total energy at an address pattern (A: any digit).
        The answering meter's address is in its reply, an error reply included."""
        pattern = search.check_pattern(params.get("pattern"), 12)
        version = str(params.get("version", "2007"))
        di = PROBE_DI[version] if version in PROBE_DI else PROBE_DI["2007"]
        timeout = search.probe_timeout_s(params, self.bus.timeout_s)
        request = codec.build_read(pattern, di, version)
        try:
            frame = await self.line.transact(
                request,
                codec.StreamParser(),
                timeout_s=timeout,
                accept=lambda f: f.is_reply and search.fits(pattern, f.address),
            )
        except ReplyTimeout as err:
            return search.from_timeout(err)
        return search.ProbeResult(
            search.Probe.ONE,
            frame.address,
            {"error_reply": frame.is_error, "frame": frame.raw.hex(" ").upper()},
        )

    async def identify_version(self, address: str) -> dict[str, Any]:
        """2007 or 1997, by asking: the meter that answers a read of its total energy with data
        (not an error reply) speaks that version. Evidence for each question is reported."""
        search.check_pattern(address, 12)
        evidence: dict[str, str] = {}
        version = None
        for v in ("2007", "1997"):
            try:
                frame = await self.line.transact(
                    codec.build_read(address, PROBE_DI[v], v),
                    codec.StreamParser(),
                    timeout_s=self.bus.timeout_s,
                    accept=lambda f: f.is_reply and f.address == address,
                )
            except ReplyTimeout as err:
                evidence[v] = "garbled reply" if err.heard_data else "no reply"
                continue
            if frame.is_error:
                evidence[v] = f"error reply (ERR {frame.data[:1].hex().upper() or '?'})"
                continue
            evidence[v] = f"data reply to DI {PROBE_DI[v]:0{8 if v == '2007' else 4}X}"
            version = v
            break
        return {"address": address, "version": version, "evidence": evidence}

    def _adhoc_device(self, params: Mapping[str, Any]) -> Dlt645Device:
        address = str(params.get("address", ""))
        for device in self.devices.values():
            if device.id == address or device.address == address:
                return device
        version = str(params.get("version", "2007"))
        try:
            return Dlt645Device.model_validate(
                {
                    "id": f"meter-{address}",
                    "bus": self.bus.id,
                    "profile": "adhoc",
                    "address": address,
                    "version": version,
                    "location": {"address_code": "000000"},
                }
            )
        except ValueError as err:
            raise PermanentError(f"bad meter request: {_first_line(err)}") from err


def _first_line(err: Exception) -> str:
    """Pydantic errors span lines; a diag answer is one line."""
    errors = getattr(err, "errors", None)
    if callable(errors):
        first = errors()[0]
        where = ".".join(str(p) for p in first.get("loc", ())) or "request"
        return f"{where}: {first.get('msg', err)}"
    return str(err)
