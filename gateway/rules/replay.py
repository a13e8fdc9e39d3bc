"""Replay a site's readings through its rules, off line: which alarms would they have raised?

An installer sets a pack's parameters per household or per device (a resident's wake time, a
meter's no-use window, a dehumidifier's night load). The shipped values are starting points; the
way to check them is the site's own first weeks of readings, exported from the platform as CSV,
replayed through the gateway's real rule engine with the site's config (`citynerve diag rules
replay`). Nothing is written to a device: actions run in dry-run mode and are listed.

The engine is the running gateway's, on the readings' own time: hold times, windows and missing
data behave as they would have. What the file does not carry, the replay does not know: readings
the platform never got (a point with a deadband reports only moves beyond it, and at least every
`max_interval_s`), away flags the operator set, and state from before the file's first reading.
"""

from __future__ import annotations

import csv
import math
import re
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, tzinfo
from pathlib import Path
from typing import TextIO

from citynerve.gateway.api import (
    DeviceConfig,
    Event,
    EventState,
    PermanentError,
    Quality,
    Reading,
    Severity,
    Value,
)
from citynerve.gateway.pipeline.derived import point_names
from citynerve.gateway.rules.actions import ACTION_KIND
from citynerve.gateway.rules.config import RulesConfig
from citynerve.gateway.rules.engine import RuleEngine

MAX_BYTES = 256 * 1024 * 1024
MAX_ROWS = 1_000_000  # a month of 100 meters read every 15 min is 288,000
MAX_FIELD = 256  # characters in one cell
TICK_IDLE_S = 30.0  # between readings with nothing on a hold timer: missing-data rules only
TICK_S = 1.0  # the runtime's tick period
COLUMNS = {
    "ts": ("ts", "time", "timestamp", "时间"),
    "device": ("device", "device_id", "device id", "设备"),
    "point": ("point", "点位"),
    "value": ("value", "值"),
    "quality": ("quality", "质量"),
}
REQUIRED = ("ts", "device", "point", "value")
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")


class ReadingsFileError(PermanentError):
    """A readings file that cannot be read: `path`, `line` (0: the file as a whole) and `reason`."""

    def __init__(self, path: Path, line: int, reason: str) -> None:
        self.path = path
        self.line = line
        self.reason = reason
        super().__init__(f"{path}, line {line}: {reason}" if line else f"{path}: {reason}")


@dataclass(slots=True)
class ReadingsFile:
    """The readings of a file, in time order, and what in it the config does not know."""

    readings: list[Reading]
    unknown_devices: Counter[str] = field(default_factory=Counter)
    unknown_points: Counter[tuple[str, str]] = field(default_factory=Counter)


def read_readings(path: Path, devices: Mapping[str, DeviceConfig], tz: tzinfo | None = None) -> ReadingsFile:
    """Read a CSV export (columns ts, device, point, value[, quality]; `,` `;` or tab) into readings
    of the configured devices, sorted by time. `ts`: seconds since 1970, or ISO 8601 with a UTC offset
    (without one only when `tz` is given, and not a wall time its DST repeats or skips). Rows of
    devices or points the config does not have are counted, not read. Raises ReadingsFileError
    naming the line."""
    try:
        size = path.stat().st_size
        if size > MAX_BYTES:
            why = f"larger than {MAX_BYTES // 1024 // 1024} MiB: export fewer days or devices"
            raise ReadingsFileError(path, 0, why)
        with path.open(encoding="utf-8-sig", newline="") as f:
            return _read(path, f, devices, tz)
    except OSError as err:
        raise ReadingsFileError(path, 0, f"cannot read: {err.strerror or err}") from err
    except UnicodeDecodeError as err:
        raise ReadingsFileError(path, 0, f"not UTF-8 text (save the CSV as UTF-8): {err.reason}") from err


def _read(path: Path, f: TextIO, devices: Mapping[str, DeviceConfig], tz: tzinfo | None) -> ReadingsFile:
    head = f.read(4096)
    f.seek(0)
    try:
        dialect: type[csv.Dialect] | csv.Dialect = csv.Sniffer().sniff(head, delimiters=",;\t")
    except csv.Error:
        dialect = csv.excel
    rows = csv.reader(f, dialect)
    try:
        header = next(rows, None)
    except csv.Error as err:
        raise ReadingsFileError(path, 1, f"not CSV: {err}") from err
    if header is None:
        raise ReadingsFileError(path, 0, "empty: expected a header row (ts, device, point, value)")
    col = _columns(path, header)
    units = {d.id: {p: c.unit for p, c in d.points.items()} for d in devices.values()}
    # one string per device and point, not one per row (a month of a building is ~10^5 rows)
    known = {d.id: (d.id, {p: p for p in point_names(d)}) for d in devices.values()}
    out = ReadingsFile([])
    n = 0
    line = end = rows.line_num
    try:
        for cells in rows:
            line, end = end + 1, rows.line_num  # the row's first line (a quoted cell may span more)
            if not any(c.strip() for c in cells):
                continue
            n += 1
            if n > MAX_ROWS:
                why = f"more than {MAX_ROWS:,} rows: export fewer days or devices"
                raise ReadingsFileError(path, line, why)
            if len(cells) < len(header) or any(len(c) > MAX_FIELD for c in cells):
                raise ReadingsFileError(
                    path, line, f"expected {len(header)} cells of at most {MAX_FIELD} characters each"
                )
            if any(_CONTROL.search(c) for c in cells):
                raise ReadingsFileError(path, line, "a control character in a cell: not a text export")
            dev, point = cells[col["device"]].strip(), cells[col["point"]].strip()
            if (entry := known.get(dev)) is None:
                out.unknown_devices[dev] += 1
                continue
            dev, points = entry
            if (point := points.get(point, "")) == "":
                out.unknown_points[(dev, cells[col["point"]].strip())] += 1
                continue
            ts = _ts(path, line, cells[col["ts"]], tz)
            value, quality = _value(path, line, cells[col["value"]])
            if "quality" in col and (q := cells[col["quality"]].strip().lower()):
                try:
                    quality = Quality(q)
                except ValueError:
                    raise ReadingsFileError(
                        path, line, f"quality {q!r}: one of {', '.join(x.value for x in Quality)}"
                    ) from None
            out.readings.append(Reading(dev, point, value, units[dev].get(point, ""), ts, quality))
    except csv.Error as err:
        raise ReadingsFileError(path, line, f"not CSV: {err}") from err
    out.readings.sort(key=lambda r: r.ts)
    return out


def _columns(path: Path, header: Sequence[str]) -> dict[str, int]:
    names = [" ".join(h.strip().lower().replace("_", " ").split()) for h in header]
    col: dict[str, int] = {}
    for key, aliases in COLUMNS.items():
        for i, name in enumerate(names):
            if name in {a.replace("_", " ") for a in aliases}:
                col.setdefault(key, i)
    missing = [k for k in REQUIRED if k not in col]
    if missing:
        raise ReadingsFileError(path, 1, f"no {', '.join(missing)} column in the header {list(header)!r}")
    return col


def _ts(path: Path, line: int, text: str, tz: tzinfo | None) -> float:
    text = text.strip()
    try:
        ts = float(text)
    except ValueError:
        ts = _iso_ts(path, line, text, tz)
    if not 0 <= ts < 4102444800:  # 2100-01-01
        raise ReadingsFileError(path, line, f"time {text!r} is not between 1970 and 2100")
    return ts


def _iso_ts(path: Path, line: int, text: str, tz: tzinfo | None) -> float:
    try:
        when = datetime.fromisoformat(text)
    except ValueError:
        raise ReadingsFileError(
            path, line, f"time {text!r}: seconds since 1970 or ISO 8601 (2026-09-14T08:00:00+08:00)"
        ) from None
    if when.tzinfo is None:
        if tz is None:
            why = f"time {text!r} has no UTC offset: say which zone it is in (--tz Asia/Shanghai)"
            raise ReadingsFileError(path, line, why)
        when = _local(path, line, text, when, tz)
    return when.timestamp()


def _local(path: Path, line: int, text: str, when: datetime, tz: tzinfo) -> datetime:
    """A wall time in `tz`, refused where the zone's DST makes it two instants or none: taking one
    silently put a repeated hour's second pass on its first (a meter's totals then out of order)."""
    first, second = when.replace(tzinfo=tz, fold=0), when.replace(tzinfo=tz, fold=1)
    if first.utcoffset() == second.utcoffset():
        return first
    ask = "write it with its UTC offset or as seconds since 1970"
    if first.astimezone(UTC).astimezone(tz).replace(tzinfo=None) != when:
        why = f"time {text!r} does not exist in {tz} (the clocks jumped over it when DST began); {ask}"
        raise ReadingsFileError(path, line, why)
    passes = f"{first.isoformat()} or {second.isoformat()}"
    why = f"time {text!r} happens twice in {tz} (the hour repeated when DST ends: {passes}); {ask}"
    raise ReadingsFileError(path, line, why)


def _value(path: Path, line: int, text: str) -> tuple[Value, Quality]:
    text = text.strip()
    low = text.lower()
    if not text:
        return None, Quality.BAD
    if low in ("true", "false"):
        return low == "true", Quality.GOOD
    try:
        number = float(text)
    except ValueError:
        return text, Quality.GOOD
    if not math.isfinite(number):
        return None, Quality.BAD  # what the pipeline makes of NaN and infinity
    whole = number.is_integer() and "." not in text and "e" not in low
    return (int(number) if whole else number), Quality.GOOD


@dataclass(frozen=True, slots=True)
class ReplayedAlarm:
    """One alarm the rules raised during the replay, and when it cleared (None: still active at the end)."""

    device_id: str
    rule: str
    kind: str
    severity: Severity
    raised: float
    cleared: float | None
    message: str
    subject: str = ""


@dataclass(slots=True)
class Replayed:
    alarms: list[ReplayedAlarm]
    actions: list[Event]  # action reports (dry run: nothing written)
    readings: int
    first: float
    last: float


def replay(
    rules: RulesConfig,
    devices: Iterable[DeviceConfig],
    readings: Sequence[Reading],
    away: Sequence[tuple[str, float, float]] = (),
) -> Replayed:
    """Feed the readings (in time order) to a fresh rule engine on their own time, ticking like the
    runtime (about once a second while a hold time runs, else every 30 s); `away`: (device, from,
    to) periods a household was marked away. Actions are not carried out (dry run)."""
    engine_cfg = rules.model_copy(update={"dry_run_actions": True})
    clock = [readings[0].ts if readings else 0.0]
    engine = RuleEngine(engine_cfg, devices, clock=lambda: clock[0])
    events: list[Event] = []
    marks = sorted([(a, dev, True) for dev, a, _ in away] + [(b, dev, False) for dev, _, b in away])
    mi = 0
    next_tick = clock[0]
    i, n = 0, len(readings)
    while i < n:
        ts, dev = readings[i].ts, readings[i].device_id
        j = i + 1
        while j < n and readings[j].ts == ts and readings[j].device_id == dev:
            j += 1
        while next_tick < ts:
            while mi < len(marks) and marks[mi][0] <= next_tick:
                engine.set_away(marks[mi][1], marks[mi][2])
                mi += 1
            clock[0] = next_tick
            events += engine.tick(next_tick)
            next_tick = next_tick_after(engine, next_tick)
        clock[0] = ts
        events += engine.evaluate(readings[i:j])
        if engine.waiting:
            next_tick = min(next_tick, on_second(engine.next_deadline(ts)))
        i = j
    end = clock[0] + 60  # let hold timers run out, not the missing-data rules after the data ends
    while next_tick < end:
        clock[0] = next_tick
        events += engine.tick(next_tick)
        next_tick = next_tick_after(engine, next_tick)
    return Replayed(
        _alarms(events),
        [e for e in events if e.kind == ACTION_KIND],
        n,
        readings[0].ts if readings else math.nan,
        readings[-1].ts if readings else math.nan,
    )


def on_second(t: float) -> float:
    """The runtime ticks about once a second: a deadline is seen at the next whole second."""
    return math.ceil(t) if math.isfinite(t) else t


def next_tick_after(engine: RuleEngine, now: float) -> float:
    """The next tick: every TICK_IDLE_S, sooner when a hold time runs out (what a 1 s tick would see)."""
    return min(now + TICK_IDLE_S, max(now + TICK_S, on_second(engine.next_deadline(now))))


def _alarms(events: Sequence[Event]) -> list[ReplayedAlarm]:
    """Pair each raise with its clear (by device, kind, rule and subject; subject "*" clears all)."""
    open_: dict[tuple[str, str, str, str], int] = {}
    out: list[ReplayedAlarm] = []
    for e in events:
        if e.kind == ACTION_KIND or e.one_shot:
            continue
        key = (e.device_id, e.kind, e.rule, e.subject)
        if e.state is EventState.RAISED:
            open_[key] = len(out)
            alarm = ReplayedAlarm(e.device_id, e.rule, e.kind, e.severity, e.ts, None, e.message, e.subject)
            out.append(alarm)
            continue
        keys = [k for k in open_ if k[:3] == key[:3]] if e.subject == "*" else [key] if key in open_ else []
        for k in keys:
            at = open_.pop(k)
            out[at] = replace(out[at], cleared=e.ts)
    return out
