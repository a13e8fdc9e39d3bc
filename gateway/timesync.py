"""Is the wall clock synchronised? A Pi without an RTC boots with a stale time until NTP steps it.

Sources, in the order `auto` tries them:
  kernel     adjtimex(2) read-only (modes 0): synchronised unless STA_UNSYNC is set. Every NTP
             client that disciplines the kernel (systemd-timesyncd, chrony, ntpd) clears it.
  timesyncd  /run/systemd/timesync/synchronized exists (systemd-timesyncd's own flag).
The config can instead name a flag file kept by another source (`clock.sync = "file"`, e.g. chrony
or gpsd with a script), assert it (`"synced"`: an RTC or GNSS the operator trusts) or deny it
(`"unsynced"`: treat every stamp as unsynchronised).

`ClockSync.check()` is cheap (one syscall) and is called once a second by the runtime. When the clock
becomes synchronised it remembers the monotonic and wall time of that moment, so records captured
before can be re-stamped: wall = sync_wall - (sync_mono - capture_mono).
"""

from __future__ import annotations

import ctypes
import dataclasses
import functools
import logging
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal, Protocol

from citynerve.gateway.api import SYSTEM_CLOCK, Clock, Event, Reading, boot_id
from citynerve.gateway.store import MarkedReading, OutboxRow, ReadingMark

log = logging.getLogger("citynerve.clock")

SyncMode = Literal["auto", "kernel", "timesyncd", "file", "synced", "unsynced"]
STA_UNSYNC = 0x0040
TIME_ERROR = 5
TIMESYNCD_FLAG = Path("/run/systemd/timesync/synchronized")


class _Timex(ctypes.Structure):
    """The head of `struct timex` (glibc, any word size) and room for the rest."""

    _fields_ = [
        ("modes", ctypes.c_uint),
        ("offset", ctypes.c_long),
        ("freq", ctypes.c_long),
        ("maxerror", ctypes.c_long),
        ("esterror", ctypes.c_long),
        ("status", ctypes.c_int),
        ("_rest", ctypes.c_byte * 256),
    ]


@functools.cache
def _libc() -> ctypes.CDLL | None:
    try:  # the C library the interpreter runs on (its symbols are the process's own)
        libc = ctypes.CDLL(None, use_errno=True)
        if hasattr(libc, "adjtimex"):
            return libc
    except OSError:
        pass
    # ctypes.util (and the ldconfig it runs) only where the process's own symbols lack adjtimex:
    # imported here, once per process, not by every running gateway.
    from ctypes.util import find_library

    try:
        return ctypes.CDLL(find_library("c") or "libc.so.6", use_errno=True)
    except OSError:
        return None


def kernel_state() -> tuple[bool | None, float | None]:
    """The kernel's NTP status: (synchronised, maximum error in s); (None, None) when it cannot be
    read (no libc adjtimex, or denied: systemd's ProtectClock= makes even the read-only call fail)."""
    libc = _libc()
    if libc is None:
        return None, None
    try:
        tx = _Timex()
        state = libc.adjtimex(ctypes.byref(tx))
    except AttributeError:
        return None, None
    if state < 0:
        return None, None
    return not (tx.status & STA_UNSYNC) and state != TIME_ERROR, round(tx.maxerror / 1e6, 3)


def kernel_synced() -> bool | None:
    """The kernel's NTP status: True synchronised, False not, None when it cannot be read."""
    return kernel_state()[0]


def timesyncd_synced(flag: Path = TIMESYNCD_FLAG) -> bool | None:
    """systemd-timesyncd's flag file: True when present, None when timesyncd does not run here."""
    if flag.exists():
        return True
    return False if flag.parent.is_dir() else None


@dataclass(frozen=True, slots=True)
class SyncPoint:
    """The moment the wall clock became synchronised, on both clocks."""

    mono: float
    wall: float

    def restamp(self, capture_mono: float) -> float:
        """The wall time of a capture at `capture_mono` (same boot), on the synchronised clock."""
        return self.wall - (self.mono - capture_mono)


class ClockSync:
    """Tracks whether the wall clock is synchronised (see the module doc)."""

    def __init__(self, mode: SyncMode = "auto", clock: Clock = SYSTEM_CLOCK, sync_file: str = "") -> None:
        self.mode = mode
        self.sync_file = Path(sync_file) if sync_file else None
        self.clock = clock
        self.synced: bool | None = None
        self.source = ""
        self.since_mono: float | None = None  # when `synced` last changed
        self.sync_point: SyncPoint | None = None  # the last change to synchronised
        self.changes = 0
        self.boot_id = boot_id()
        self.check()

    def read(self) -> tuple[bool | None, str]:
        """(synchronised?, which source said so). Override in tests to play a sync arriving."""
        if self.mode == "synced":
            return True, "config"
        if self.mode == "unsynced":
            return False, "config"
        if self.mode == "file":
            return bool(self.sync_file and self.sync_file.exists()), "file"
        if self.mode in ("auto", "kernel"):
            k = kernel_synced()
            if k is not None and (k or self.mode == "kernel"):
                return k, "kernel"
            if self.mode == "kernel":
                return None, "kernel"
        t = timesyncd_synced()
        if t is not None:
            return t, "timesyncd"
        if self.mode == "auto":
            k = kernel_synced()
            if k is not None:
                return k, "kernel"
        return None, ""

    def check(self) -> bool:
        """Read the sources; True when the state changed."""
        synced, source = self.read()
        self.source = source
        if synced == self.synced:
            return False
        before, self.synced = self.synced, synced
        now_mono = self.clock.monotonic()
        self.since_mono = now_mono
        if synced:
            self.sync_point = SyncPoint(now_mono, self.clock.wall())
        if before is not None or synced is not True:
            self.changes += 1
            level = logging.INFO if synced else logging.WARNING
            log.log(level, "wall clock %s (source %s)", _word(synced), source or "none")
        return True

    @property
    def unsynced(self) -> bool:
        """Stamps taken now are suspect (not synchronised, or nobody can tell)."""
        return self.synced is not True

    def wire(self) -> dict[str, Any]:
        """What the platform needs to correct stamps marked `clock_unsynced` (upstream contract)."""
        sp = self.sync_point
        return {
            "synchronized": self.synced,
            "source": self.source or None,
            "boot_id": self.boot_id,
            "sync_mono": None if sp is None else round(sp.mono, 3),
            "sync_wall": None if sp is None else round(sp.wall, 3),
        }

    def restamp(self, row: OutboxRow) -> OutboxRow:
        """An event row stamped before the sync, on this boot, sent after it: its time on the
        synchronised clock (`ts_corrected` and the original `ts_unsynced` in attrs). Other rows as
        they are."""
        rec, sp = row.record, self.sync_point
        if sp is None or not isinstance(rec, Event) or rec.attrs.get("clock_unsynced") is not True:
            return row
        mono = rec.attrs.get("capture_mono")
        if rec.attrs.get("boot_id") != self.boot_id or not self.boot_id or not isinstance(mono, int | float):
            return row
        if mono > sp.mono:  # captured after the sync (marked while a source still said unsynced)
            return row
        ts = sp.restamp(float(mono))
        attrs = {**rec.attrs, "ts_corrected": True, "ts_unsynced": rec.ts}
        return dataclasses.replace(row, ts=ts, record=dataclasses.replace(rec, ts=ts, attrs=attrs))

    def to_dict(self) -> dict[str, Any]:
        since = None
        if self.since_mono is not None:
            since = round(self.clock.monotonic() - self.since_mono, 1)
        return {
            "synchronized": self.synced,
            "state": _word(self.synced),
            "source": self.source or None,
            "mode": self.mode,
            "for_s": since,
            "changes": self.changes,
        }


def _word(synced: bool | None) -> str:
    return "synchronized" if synced else ("unsynchronized" if synced is False else "unknown")


class RecordSink(Protocol):
    """Where the pipeline delivers records (the outbox writer)."""

    def put_readings(self, readings: Sequence[Reading]) -> None: ...

    def put_event(self, event: Event) -> None: ...


class UnsyncedMarks:
    """Between the pipeline and the outbox writer: events stamped while the wall clock is not
    synchronised get `clock_unsynced`, their monotonic capture time and the boot id in their attrs,
    so that the platform can correct them with the status message's sync point
    (wall = sync_wall - (sync_mono - capture_mono), same boot). Readings likewise, one by one, as
    `MarkedReading`s (the outbox keeps the mark; JSON v1 carries it as extra keys of the reading)."""

    def __init__(self, sink: RecordSink, sync: ClockSync) -> None:
        self.sink = sink
        self.sync = sync
        self.marked_events = 0
        self.unsynced_readings = 0

    def put_readings(self, readings: Sequence[Reading]) -> None:
        if self.sync.unsynced:
            self.unsynced_readings += len(readings)
            clock = self.sync.clock
            offset = clock.wall() - clock.monotonic()  # a stamp on this boot's monotonic clock
            boot = self.sync.boot_id
            readings = [
                MarkedReading(
                    r.device_id, r.point, r.value, r.unit, r.ts, r.quality,
                    ReadingMark(round(r.ts - offset, 3), boot),
                )
                if isinstance(r.ts, int | float)
                else r
                for r in readings
            ]  # fmt: skip
        self.sink.put_readings(readings)

    def put_event(self, event: Event) -> None:
        if self.sync.unsynced:
            clock = self.sync.clock
            capture_mono = event.ts - (clock.wall() - clock.monotonic())  # its stamp, on this boot's clock
            event.attrs["clock_unsynced"] = True
            event.attrs["capture_mono"] = round(capture_mono, 3)
            event.attrs["boot_id"] = self.sync.boot_id
            self.marked_events += 1
        self.sink.put_event(event)
