"""Telemetry blocks: readings stored in a neutral, compact form; encodings render them at publish time.

A block holds readings with consecutive seqs `first_seq..last_seq` (an append's readings get
consecutive seqs). Its body is zlib (level 1, with its Adler-32 checksum) of compact JSON, by
column:

    {"s": [device_id, point, unit, device_id, point, unit, ...],   the series table, flat
     "i": [series index, ...], "t": [ts, ...], "q": [quality index, ...], "v": [value, ...],
     "m": [[row, capture_mono, boot_id], ...]}                         (only when a row is marked)

- the series table names each (device, point, unit) of the block once; `i` points into it;
- `t` is the reading's wall-clock time in seconds exactly as taken (JSON's shortest text that
  reads back as the same double), `q` the index in `QUALITIES`;
- `v` as the reading holds it: ints exact (beyond 64 bits too), floats exact, NaN and the
  infinities as JSON's extension literals (Python's json reads them back), bools, strings, null;
- `m` lists the readings stamped while the wall clock was not synchronised (`ReadingMark`).

No encoding's wire text is stored: the JSON v1 encoding (and any other) renders `ReadingBlock`s
when it publishes them. A full block of 200 readings takes about 11 bytes per reading. Columns
are checked with C-speed passes (a block is read far more often in bulk than row by row). Damage
shows as a decompression or checksum error, a wrong length or a shape that is not the above; the
outbox then drops the block as `damaged` (its seq range announced).
"""

from __future__ import annotations

import json
import zlib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from citynerve.gateway.api import Quality, Reading

CODEC_NEUTRAL_Z = 2
"""Block codec: zlib (level 1) of compact JSON [series table, rows] (this module's docstring).
Codec 1 (schema version 3: JSON v1 fragments) is converted by the migration to schema version 4."""

QUALITIES: tuple[Quality, ...] = (Quality.GOOD, Quality.BAD, Quality.STALE, Quality.SUSPECT)
QUALITY_INDEX: dict[Quality, int] = {q: i for i, q in enumerate(QUALITIES)}
_LEVEL = 1
_dumps = json.JSONEncoder(ensure_ascii=False, separators=(",", ":"), allow_nan=True).encode

Series = tuple[str, str, str]
"""(device_id, point, unit)"""


@dataclass(frozen=True, slots=True)
class ReadingMark:
    """A reading stamped while the wall clock was not synchronised: when it was captured on the
    monotonic clock of boot `boot_id` (so a platform can correct its time from a sync point)."""

    capture_mono: float
    boot_id: str


@dataclass(frozen=True, slots=True)
class MarkedReading(Reading):
    """A reading with its clock mark (citynerve.gateway.timesync.UnsyncedMarks makes these): the
    outbox stores the mark with it and encodings carry it (JSON v1: `clock_unsynced`, ...)."""

    mark: ReadingMark | None = None


class BlockError(ValueError):
    """A stored block that cannot be read back (damaged storage or an unknown codec)."""


@dataclass(frozen=True, slots=True)
class ReadingBlock:
    """Queued readings `first_seq..last_seq` (consecutive seqs) in the neutral form, by column: the
    reading with seq `first_seq + k` is series `series[sidx[k]]`, time `ts[k]`, quality
    `QUALITIES[quality[k]]`, value `values[k]`, and `marks.get(k)` its clock mark."""

    first_seq: int
    last_seq: int
    series: Sequence[Series]
    sidx: Sequence[int]
    ts: Sequence[float]
    quality: Sequence[int]
    values: Sequence[Any]
    marks: Mapping[int, ReadingMark]

    @property
    def count(self) -> int:
        return self.last_seq - self.first_seq + 1

    def after(self, seq: int) -> ReadingBlock:
        """This block without its readings up to `seq`."""
        if seq < self.first_seq:
            return self
        return self.slice(seq + 1 - self.first_seq, self.count)

    def slice(self, start: int, stop: int) -> ReadingBlock:
        """Readings `start..stop-1` (offsets in this block) as a block of their own."""
        marks = {k - start: m for k, m in self.marks.items() if start <= k < stop}
        return ReadingBlock(
            self.first_seq + start,
            self.first_seq + stop - 1,
            self.series,
            self.sidx[start:stop],
            self.ts[start:stop],
            self.quality[start:stop],
            self.values[start:stop],
            marks,
        )

    def readings(self) -> list[tuple[int, Reading]]:
        """(seq, Reading) for each reading (their marks are in `marks`, by offset)."""
        series, first = self.series, self.first_seq
        return [
            (first + k, Reading(d, p, v, u, float(t), QUALITIES[q]))
            for k, ((d, p, u), t, q, v) in enumerate(
                zip((series[i] for i in self.sidx), self.ts, self.quality, self.values, strict=True)
            )
        ]

    def mark_of(self, seq: int) -> ReadingMark | None:
        return self.marks.get(seq - self.first_seq)

    def encode(self) -> tuple[bytes, int]:
        """(body, raw length) of this block as stored; its series table keeps only those used."""
        used = sorted(set(self.sidx))
        sidx: Sequence[int] = self.sidx
        series = self.series
        if len(used) != len(series):
            remap = {old: new for new, old in enumerate(used)}
            series = [series[i] for i in used]
            sidx = [remap[i] for i in sidx]
        return _encode(series, sidx, self.ts, self.quality, self.values, self.marks)


def _encode(
    series: Sequence[Series],
    sidx: Sequence[int],
    ts: Sequence[float],
    quality: Sequence[int],
    values: Sequence[Any],
    marks: Mapping[int, ReadingMark],
) -> tuple[bytes, int]:
    doc: dict[str, Any] = {
        "s": [name for s in series for name in s],
        "i": list(sidx),
        "t": list(ts),
        "q": list(quality),
        "v": list(values),
    }
    if marks:
        doc["m"] = [[k, m.capture_mono, m.boot_id] for k, m in sorted(marks.items())]
    raw = _dumps(doc).encode()
    return zlib.compress(raw, _LEVEL), len(raw)


def encode_block(
    readings: Sequence[Reading], marks: Sequence[ReadingMark | None] | None = None
) -> tuple[bytes, int]:
    """(body, raw length) of a block holding `readings` in order (`marks[k]`: reading k's mark)."""
    index: dict[Series, int] = {}
    sidx = []
    for r in readings:
        key = (r.device_id, r.point, r.unit)
        i = index.get(key)
        if i is None:
            i = index[key] = len(index)
        sidx.append(i)
    if marks is None:
        marks = [r.mark if isinstance(r, MarkedReading) else None for r in readings]
    marked = {k: m for k, m in enumerate(marks) if m is not None}
    return _encode(
        list(index),
        sidx,
        [float(r.ts) for r in readings],
        [QUALITY_INDEX[r.quality] for r in readings],
        [r.value for r in readings],
        marked,
    )


def decode_block(first_seq: int, last_seq: int, codec: int, body: bytes, raw_len: int) -> ReadingBlock:
    """The stored block, checked column by column (types, lengths, indexes in range)."""
    if codec != CODEC_NEUTRAL_Z:
        raise BlockError(f"unknown block codec {codec}")
    count = last_seq - first_seq + 1
    try:
        raw = zlib.decompress(body)
        if len(raw) != raw_len:
            raise BlockError(f"{len(raw)} bytes where {raw_len} are stored")
        doc = json.loads(raw)
        flat, sidx, ts, quality, values = doc["s"], doc["i"], doc["t"], doc["q"], doc["v"]
        if not (
            type(flat) is list
            and len(flat) % 3 == 0
            and set(map(type, flat)) <= _STR
            and len(sidx) == len(ts) == len(quality) == len(values) == count
            and set(map(type, sidx)) <= _INT
            and set(map(type, quality)) <= _INT
            and set(map(type, ts)) <= _NUMBER
            and not set(map(type, values)) & _CONTAINERS
            and (count == 0 or (min(sidx) >= 0 and max(sidx) < len(flat) // 3))
            and (count == 0 or (min(quality) >= 0 and max(quality) < len(QUALITIES)))
        ):
            raise BlockError("columns are not readings")
        marks = {
            int(k): ReadingMark(float(mono), str(boot))
            for k, mono, boot in doc.get("m", ())
            if 0 <= k < count
        }
    except BlockError:
        raise
    except (zlib.error, ValueError, TypeError, KeyError, IndexError, RecursionError) as err:
        raise BlockError(f"cannot decode: {err!r}") from err
    series = list(zip(flat[0::3], flat[1::3], flat[2::3], strict=True))
    return ReadingBlock(first_seq, last_seq, series, sidx, ts, quality, values, marks)


_STR = {str}
_INT = {int}
_NUMBER = {int, float}
_CONTAINERS = {list, dict}
