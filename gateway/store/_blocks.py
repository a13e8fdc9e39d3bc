"""Telemetry blocks: readings stored as ready-to-send JSON v1 reading fragments, compressed.

The telemetry lane is drained far more often in bulk (a backlog after an outage) than it is read
row by row, so each reading is rendered once, when it is written, and a drain only decompresses
and concatenates. A block holds readings with consecutive seqs `first_seq..last_seq` (an append's
readings get consecutive seqs), as

    {"seq":..,"device_id":..,"point":..,"value":..,"unit":..,"ts_ms":..,"quality":..},{"seq":..}

compressed (raw deflate, level 1, 4 KiB window): about 12 bytes per reading in a full block of 200
(a block of one reading barely shrinks), against ~40 for the row of columns this replaced.
Rendering and compressing cost ~3 us per reading when written; a drain then only decompresses
(~0.25 us per reading, on the outbox's thread) and wraps the bytes into messages.

Each body is "," + the fragments, compressed by a fresh compressor and ended with a sync flush
(no final block): the bodies of consecutive blocks, concatenated, are one valid deflate stream, so a
drain decompresses a whole read (dozens of blocks, as SQLite hands them over in one row) in one
call: one release of the GIL instead of one per block. Raw deflate has no checksum: each row keeps
its raw length, and damage shows as a decompression error, a wrong length or a text that is not
fragments (the drain then decodes that read block by block and skips only the damaged ones).

Splitting a block back into fragments needs no JSON parser: a fragment starts with `{"seq":`, and
those bytes cannot occur inside a JSON string (a quote there is escaped), so `,{"seq":` occurs
in a block exactly between two fragments.

`CODEC_JSON_V1_Z` is stored with every block: another encoding (Sparkplug B) can read blocks back as
`Reading`s (`decode_readings`) and, later, store blocks of its own under another codec id.
"""

from __future__ import annotations

import json
import math
import zlib
from collections.abc import Sequence
from dataclasses import dataclass

from citynerve.gateway.api import Quality, Reading

CODEC_JSON_V1_Z = 1
"""Block codec: "," + JSON v1 reading fragments joined by commas, raw deflate (level 1, 4 KiB
window) ending in a sync flush, so that consecutive blocks decompress as one stream."""

FRAGMENT_START = b'{"seq":'
_SPLIT = b',{"seq":'
_BLOCK_START = b"," + FRAGMENT_START  # a block's raw text starts so ...
_BRACE = ord("}")  # ... and ends so
_WBITS = 12
_LEVEL = 1
_FINAL_BLOCK = b"\x03\x00"  # an empty final deflate block (fixed Huffman, end of block)

_dumps = json.JSONEncoder(ensure_ascii=False, separators=(",", ":"), allow_nan=False).encode

_SERIES_CACHE_MAX = 50_000
_series_parts_cache: dict[tuple[str, str, str], tuple[str, str]] = {}
_QUALITY_TAIL = {q: f',"quality":"{q.value}"}}' for q in Quality}
_QUALITY_BY_NAME = {q.value: q for q in Quality}


class BlockError(ValueError):
    """A stored block that cannot be read back (damaged storage or an unknown codec)."""


def _series_parts(device_id: str, point: str, unit: str) -> tuple[str, str]:
    # The JSON around a reading's value depends only on its series; build it once per series.
    key = (device_id, point, unit)
    parts = _series_parts_cache.get(key)
    if parts is None:
        if len(_series_parts_cache) >= _SERIES_CACHE_MAX:
            _series_parts_cache.clear()
        parts = (
            f',"device_id":{_dumps(device_id)},"point":{_dumps(point)},"value":',
            f',"unit":{_dumps(unit)},"ts_ms":',
        )
        _series_parts_cache[key] = parts
    return parts


def value_json(v: object) -> str:
    """A reading value as JSON: the shortest text that reads back as the same float, ints exact
    (beyond 64 bits too), NaN and infinities as null (JSON has neither; the quality says why)."""
    t = type(v)
    if t is float:
        return repr(v) if math.isfinite(v) else "null"  # type: ignore[arg-type]
    if t is int:
        return repr(v)
    if v is None:
        return "null"
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, float):  # float subclasses
        return repr(float(v)) if math.isfinite(v) else "null"
    if isinstance(v, int):  # IntEnum and other int subclasses
        return repr(int(v))
    if isinstance(v, str):
        return _dumps(str(v))
    raise TypeError(f"unsupported reading value type {type(v).__name__}: {v!r}")


def reading_fragment(seq: int, r: Reading) -> str:
    """One reading as compact JSON: {"seq","device_id","point","value","unit","ts_ms","quality"}.

    Hand-assembled (it runs for every stored reading); hypothesis tests check it against json.loads.
    `ts_ms` is round(ts * 1000), half to even. Raises TypeError/ValueError for what JSON cannot carry.
    """
    head, mid = _series_parts(r.device_id, r.point, r.unit)
    return f'{{"seq":{seq}{head}{value_json(r.value)}{mid}{round(r.ts * 1000)}{_QUALITY_TAIL[r.quality]}'


def encode_block(first_seq: int, readings: Sequence[Reading]) -> tuple[bytes, int]:
    """(stored body, raw length) of a block: `readings` with seqs first_seq, first_seq + 1, ..."""
    text = ",".join([reading_fragment(first_seq + i, r) for i, r in enumerate(readings)])
    return compress_fragments(text.encode())


Fragments = bytes | memoryview
"""Comma-joined fragments: bytes, or a view into the text of a whole read (no copy per block)."""


def compress_fragments(fragments: Fragments) -> tuple[bytes, int]:
    """(body, raw length) for comma-joined fragments: "," + fragments as raw deflate ending in a
    sync flush, so that consecutive bodies concatenated are one deflate stream (`chunk_text`)."""
    z = zlib.compressobj(_LEVEL, zlib.DEFLATED, -_WBITS)
    raw = b"," + fragments
    return z.compress(raw) + z.flush(zlib.Z_SYNC_FLUSH), len(raw)


def block_fragments(codec: int, body: bytes, count: int, raw_len: int) -> bytes:
    """The comma-joined fragments of a stored block of `count` readings (decompressed, checked)."""
    if codec != CODEC_JSON_V1_Z:
        raise BlockError(f"unknown block codec {codec}")
    try:
        out = zlib.decompressobj(-_WBITS).decompress(body)
    except (zlib.error, TypeError) as err:
        raise BlockError(f"cannot decompress: {err}") from err
    return _checked(out, count, raw_len)[1:]


def _is_block_text(text: bytes, start: int, raw_len: int) -> bool:
    # Raw deflate has no checksum: damage shows as a decompression error, a wrong length or a
    # shape that is not fragments. (Counting the fragments would cost more than decompressing
    # them: `decode_readings` and `split_fragments` check the count.)
    return (
        raw_len > len(_BLOCK_START)
        and text.startswith(_BLOCK_START, start)
        and text[start + raw_len - 1] == _BRACE
    )


def _checked(text: bytes, count: int, raw_len: int) -> bytes:
    if count < 1 or len(text) != raw_len or not _is_block_text(text, 0, raw_len):
        raise BlockError(f"block of {count} readings is not JSON fragments")
    return text


def fragments_in(text: bytes, view: memoryview, start: int, raw_len: int, count: int) -> memoryview:
    """The fragments of the block whose raw text starts at `start` in the text `chunk_text` made
    of a whole read (`view` is a memoryview of it): a view, not a copy (checked as one block is)."""
    if not _is_block_text(text, start, raw_len):
        raise BlockError(f"block of {count} readings is not JSON fragments")
    return view[start + 1 : start + raw_len]


def chunk_text(bodies: bytes, raw_lens: Sequence[int]) -> bytes | None:
    """Consecutive blocks' bodies, concatenated, decompressed in ONE call (one release of the GIL
    for a whole read instead of one per block): their raw texts back to back, or None when that
    fails (a damaged block in there: decode them one by one to find it)."""
    total = sum(raw_lens)
    try:
        # Ended by an empty final block, the stream decompresses in one call into one buffer of
        # the exact size: the GIL is released once (growing a buffer takes it back each time).
        out = zlib.decompress(bodies + _FINAL_BLOCK, -_WBITS, max(total, 1))
    except (zlib.error, TypeError):
        return None
    return out if len(out) == total else None


def split_fragments(fragments: Fragments, count: int) -> list[bytes]:
    """Comma-joined fragments of `count` readings -> one bytes per reading, in order."""
    parts = bytes(fragments).split(_SPLIT)
    if len(parts) != count:
        raise BlockError(f"{len(parts)} fragments where {count} readings are stored")
    return [parts[0], *(FRAGMENT_START + p for p in parts[1:])]


def join_fragments(parts: Sequence[bytes]) -> bytes:
    return b",".join(parts)


def decode_readings(first_seq: int, fragments: Fragments, count: int) -> list[tuple[int, Reading]]:
    """(seq, Reading) for each of the `count` fragments. What JSON does not keep comes back as JSON
    gave it: NaN and infinities as None, `ts` in whole milliseconds."""
    try:
        items = json.loads(b"[" + fragments + b"]")
        if not isinstance(items, list) or len(items) != count:
            raise BlockError(f"block holds {len(items)} readings, {count} are stored")
        out = []
        for i, f in enumerate(items):
            seq = f["seq"]
            if seq != first_seq + i or not isinstance(seq, int):
                raise BlockError(f"fragment {i} has seq {seq}, expected {first_seq + i}")
            dev, point, unit = f["device_id"], f["point"], f["unit"]
            if not (isinstance(dev, str) and isinstance(point, str) and isinstance(unit, str)):
                raise BlockError(f"fragment seq {seq}: names are not strings")
            value = f["value"]
            if isinstance(value, list | dict):
                raise BlockError(f"fragment seq {seq}: value is not a scalar")
            ts_ms = f["ts_ms"]
            if not isinstance(ts_ms, int) or isinstance(ts_ms, bool):
                raise BlockError(f"fragment seq {seq}: ts_ms is not an integer")
            out.append((seq, Reading(dev, point, value, unit, ts_ms / 1000, _QUALITY_BY_NAME[f["quality"]])))
        return out
    except BlockError:
        raise
    except (ValueError, KeyError, TypeError, IndexError, RecursionError) as err:
        raise BlockError(f"cannot decode fragments: {err!r}") from err


@dataclass(frozen=True, slots=True)
class TelemetryBlock:
    """Queued readings `first_seq..last_seq` (consecutive seqs) as comma-joined JSON v1 fragments."""

    first_seq: int
    last_seq: int
    fragments: Fragments

    @property
    def count(self) -> int:
        return self.last_seq - self.first_seq + 1

    def after(self, seq: int) -> TelemetryBlock:
        """This block without its readings up to `seq` (first_seq <= seq < last_seq)."""
        if seq < self.first_seq:
            return self
        parts = split_fragments(self.fragments, self.count)
        return TelemetryBlock(seq + 1, self.last_seq, join_fragments(parts[seq + 1 - self.first_seq :]))


@dataclass(slots=True)
class TelemetryCursor:
    """Where chained telemetry reads go on (`Outbox.peek_telemetry_next`): each read starts at
    `after` and moves it; once a read comes back short (the lane caught up), `more` turns false
    and the reads queued behind it return nothing (a reader then starts afresh)."""

    after: int
    more: bool = True
