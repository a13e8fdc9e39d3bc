"""The fire panel listener: reads the printer stream, turns records into events and samples."""

from __future__ import annotations

import logging
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from citynerve.drivers.firepanel.models import FirePanelBusConfig, FirePanelDevice
from citynerve.drivers.firepanel.parsers import PanelParser, PanelRecord, RecordKind, parser_for
from citynerve.drivers.serialio import LineTiming, SerialLine
from citynerve.drivers.serialio.guard import MAX_LINE, LineGuard
from citynerve.gateway.api import (
    Event,
    EventState,
    ListenDriver,
    Quality,
    Sample,
    SampleBatch,
    SampleSink,
    Severity,
    StateStore,
    Value,
    utc_now,
)

log = logging.getLogger(__name__)

IDLE_FLUSH_S = 2.0  # a line the printer never ends (no CR/LF) is taken after this much silence
# The listener reads all the time; this only bounds what piles up while the event loop is held up
# elsewhere (68 s of a 9600-baud printer), oldest bytes dropped and counted (`line_dropped_bytes`).
LISTEN_PENDING = 65_536
MAX_ACTIVE = 4096
"""Raised-and-not-cleared records kept per panel: a large panel has 20 loops of 200 devices, but a
noisy or hostile print stream names any of 10^6 loop-devices per kind, and the table is counted
on every line. Past it a record still raises its event (never lost); it is only not remembered,
so a repeat raises again and its clear is passed on as heard (`untracked`, in `diag` status)."""
_ALARMS = frozenset({RecordKind.FIRE, RecordKind.SMOKE})
_FAULTS = frozenset({RecordKind.PANEL_FAULT, RecordKind.MAINS_FAULT, RecordKind.BATTERY_FAULT})
# Reports, never active: the panel does not print a clear for them.
_REPORTS = frozenset(
    {RecordKind.RESET, RecordKind.SILENCED, RecordKind.SELF_TEST, RecordKind.LINKAGE_FEEDBACK}
)
_LINE_END = re.compile(rb"[\r\n]")  # CR, LF or CRLF end a line (CRLF: an empty line between)
WILDCARD = "*"  # citynerve.gateway.api.Event.subject: every loop-device


def _as_device(device: Any) -> FirePanelDevice:
    if isinstance(device, FirePanelDevice):
        return device
    return FirePanelDevice.model_validate(device.model_dump() if hasattr(device, "model_dump") else device)


@dataclass
class PanelState:
    """What the panel has raised and not cleared, keyed by (kind, loop-device)."""

    active: dict[tuple[RecordKind, str], PanelRecord] = field(default_factory=dict)
    lines: int = 0
    records: int = 0
    raw_lines: int = 0
    parser_errors: int = 0
    untracked: int = 0  # records raised but not remembered: the table was full (MAX_ACTIVE)

    def count(self, kinds: frozenset[RecordKind]) -> int:
        return sum(1 for kind, _ in self.active if kind in kinds)


class PanelStream:
    """Sans-I/O core of the listener: bytes in, events and sample batches out (testable alone)."""

    def __init__(self, device: FirePanelDevice, parser: PanelParser | None = None) -> None:
        self.device = device
        self.parser = parser or parser_for(device.panel_model, date_order=device.date_order)
        self.state = PanelState()
        self.guard = LineGuard(f"panel {device.id}")
        self._buf = bytearray()
        self._fields: dict[str, list[str]] = {}
        for name, point in device.points.items():
            if point.enabled:
                self._fields.setdefault(point.field, []).append(name)

    def feed(self, data: bytes) -> list[Event | SampleBatch]:
        """Complete lines in `data` (CR, LF or CRLF end a line) -> what to deliver."""
        buf = bytes(self._buf + data)
        out: list[Event | SampleBatch] = []
        start = 0
        for end in _LINE_END.finditer(buf):  # one pass: re-slicing the rest per line was quadratic
            out += self.line(buf[start : end.start()])
            start = end.end()
        self._buf = bytearray(buf[start:])
        if len(self._buf) > 2 * MAX_LINE:  # no line end: keep the newest MAX_LINE (a line arriving)
            self.guard.discard(len(self._buf) - MAX_LINE)
            del self._buf[:-MAX_LINE]
        return out

    def flush(self) -> list[Event | SampleBatch]:
        """Take a pending unterminated line (after silence, or on close)."""
        raw, self._buf = bytes(self._buf), bytearray()
        return self.line(raw) if raw.strip() else []

    def line(self, raw: bytes) -> list[Event | SampleBatch]:
        text = raw.decode(self.device.encoding, errors="replace").strip("\x00\x0c \t")
        if not text.strip():
            return []
        head = 0
        if len(raw) > MAX_LINE:
            # Noise without a line end (a replugged cable's NULs, interference's 0xff) sticks to the
            # front of the panel's next line, and the panel's record is at the line's end: an
            # over-long line is parsed on its last MAX_LINE bytes, and is garbage if no record is there.
            head, raw = len(raw) - MAX_LINE, raw[-MAX_LINE:]
            text = raw.decode(self.device.encoding, errors="replace").strip("\x00\x0c \t")
        # Parse before judging the text: one noise byte (U+FFFD after decoding) in a real alarm's
        # location text must not drop the alarm. Only lines no parser knew are judged and limited.
        try:
            record = self.parser.parse_line(text)
        except Exception:  # a plugin bug must not stop the listener: keep the line as raw
            log.exception("panel %s: parser %s failed on %r", self.device.id, self.parser.model, text)
            self.state.parser_errors += 1
            record = None
        if head:  # counted and reported: the noise in front of a record, or the whole line
            self.guard.discard(head if record is not None else head + len(raw))
            if record is None:
                return []
        if record is None and not self.guard.text_ok(raw, text):  # counted, never stored
            return []
        self.state.lines += 1
        if record is None:
            if not self.guard.admit_raw(len(raw)):  # unparsed text over the rate: counted only
                return []
            self.state.raw_lines += 1
            return self._batch([("raw", text)])
        self.state.records += 1
        return [*self._events(record), *self._batch(self._values(record))]

    def _events(self, record: PanelRecord) -> list[Event | SampleBatch]:
        now = utc_now()
        active = self.state.active
        out: list[Event | SampleBatch] = []
        if record.kind is RecordKind.RESET:
            # a reset clears everything the panel had raised: one CLEARED per raised event
            for earlier in list(active.values()):
                out.append(self._event(earlier, EventState.CLEARED, now, cleared_by=record))
            active.clear()
            out.append(self._event(record, EventState.RAISED, now, wildcard=True))
            return out
        key = (record.kind, record.point_key)
        if record.state is EventState.CLEARED:
            if key in active:
                del active[key]
            elif record.point_key == "panel":
                # some panels print 故障恢复 without the device: it clears every fault of that kind
                for stale in [k for k in active if k[0] is record.kind]:
                    del active[stale]
                out.append(self._event(record, EventState.CLEARED, now, wildcard=True))
                return out
            out.append(self._event(record, EventState.CLEARED, now))
            return out
        if key in active and record.kind not in (RecordKind.SILENCED, RecordKind.SELF_TEST):
            active[key] = record  # the panel repeats an active alarm: no second RAISED
            return out
        if record.kind not in (RecordKind.SILENCED, RecordKind.SELF_TEST, RecordKind.LINKAGE_FEEDBACK):
            if len(active) < MAX_ACTIVE:
                active[key] = record
            else:
                if not self.state.untracked:
                    log.warning(
                        "panel %s: %d records raised and not cleared: later ones are passed on, not kept",
                        self.device.id,
                        MAX_ACTIVE,
                    )
                self.state.untracked += 1
        out.append(self._event(record, EventState.RAISED, now))
        return out

    def _event(
        self,
        record: PanelRecord,
        state: EventState,
        ts: float,
        cleared_by: PanelRecord | None = None,
        *,
        wildcard: bool = False,
    ) -> Event:
        """`wildcard`: the record clears (a reset: raises) for every loop-device, not just its own;
        the gateway's alarm registry then clears what the panel raised before a restart too."""
        words = " ".join(
            p
            for p in (
                record.event_text,
                record.point_key if record.loop is not None else "",
                record.device_type,
                record.location,
            )
            if p
        )
        attrs: dict[str, Any] = {
            "panel": self.device.address,
            "panel_event": record.event_text,
            "location_text": record.location,
            "device_type": record.device_type,
            "loop": record.loop,
            "device": record.device,
            "panel_time": record.panel_time,
            "raw": record.raw,
        }
        if cleared_by is not None:
            attrs["cleared_by"] = cleared_by.event_text
            words = f"{cleared_by.event_text}: {words}"
        return Event(
            device_id=self.device.id,
            kind=str(record.kind),
            state=state,
            severity=record.severity if state is EventState.RAISED else Severity.INFO,
            ts=ts,
            rule=f"panel:{self.parser.model}",
            value=record.point_key,
            message=words,
            attrs=attrs,
            subject=WILDCARD if wildcard else record.point_key,
            one_shot=record.kind in _REPORTS,
        )

    def _values(self, record: PanelRecord) -> list[tuple[str, Value]]:
        return [
            ("fire_alarm", self.state.count(_ALARMS) > 0),
            ("alarms_active", self.state.count(_ALARMS)),
            ("faults_active", self.state.count(_FAULTS)),
            ("last_event", record.event_text),
        ]

    def _batch(self, values: list[tuple[str, Value]]) -> list[Event | SampleBatch]:
        samples = tuple(
            Sample(name, value, Quality.GOOD)
            for field_name, value in values
            for name in self._fields.get(field_name, ())
        )
        return [SampleBatch(self.device.id, utc_now(), samples)] if samples else []


class FirePanelDriver(ListenDriver[FirePanelBusConfig, FirePanelDevice]):
    """Listens to one panel's printer port. Never writes to the port."""

    def __init__(
        self, bus: FirePanelBusConfig, devices: Sequence[FirePanelDevice], state: StateStore | None = None
    ) -> None:
        devices = [_as_device(d) for d in devices]
        super().__init__(bus, devices, state)
        self.line = SerialLine(bus.id, bus.serial, timing=LineTiming(gap_s=0.0), max_pending=LISTEN_PENDING)
        self.streams = [PanelStream(d) for d in devices if d.enabled]

    async def open(self) -> None:
        await self.line.open()

    async def close(self) -> None:
        await self.line.close()

    async def diag(self, action: str, params: Mapping[str, Any]) -> dict[str, Any]:
        """`status`: per panel, lines heard, records parsed, raw lines, parser errors and what is
        raised now (kind, loop-device, location text)."""
        if action != "status":
            return await super().diag(action, params)
        return {
            "panels": [
                {
                    "device": stream.device.id,
                    "panel_model": stream.parser.model,
                    "lines": stream.state.lines,
                    "records": stream.state.records,
                    "raw_lines": stream.state.raw_lines,
                    "parser_errors": stream.state.parser_errors,
                    "untracked": stream.state.untracked,
                    **stream.guard.status(),
                    "active": [
                        {
                            "kind": str(kind),
                            "point": point,
                            "location_text": record.location,
                            "panel_event": record.event_text,
                        }
                        for (kind, point), record in stream.state.active.items()
                    ],
                }
                for stream in self.streams
            ]
        }

    def input_stats(self) -> dict[str, int]:
        """Garbage lines and bytes refused on this printer port (all panels on it), and bytes the
        line dropped because the listener fell behind."""
        out: dict[str, int] = {"garbage_lines": 0, "garbage_bytes": 0, "raw_dropped": 0}
        for stream in self.streams:
            for key, n in stream.guard.status().items():
                out[key] += n
        out["line_dropped_bytes"] = self.line.stats().dropped_bytes
        return out

    async def listen(self, sink: SampleSink) -> None:
        """Deliver until cancelled. Raises ChannelError when the port goes (the owner reopens)."""
        # with no enabled panel the port is still read (and discarded) so a lost port still shows
        # one printer port carries one panel; several configured panels share the stream (ids differ)
        while True:
            chunk = await self.line.receive(IDLE_FLUSH_S)
            for stream in self.streams:
                items = stream.feed(chunk) if chunk else stream.flush()
                for item in items:
                    if isinstance(item, Event):
                        sink.event(item)
                    else:
                        sink.submit(item)
