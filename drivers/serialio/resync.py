"""Resynchronising stream parser for the 68 ... CS 16 framed meter protocols (sans-I/O).

DL/T 645 and CJ/T 188 frames both start at a 68 byte, carry their data length at a fixed offset and
end with a checksum and 16. On a half-duplex line the reader sees FE preambles, leading garbage,
frames split across reads and two frames in one read; this parser finds the frames in all of that.
Each codec subclasses it with its header size, length offset and frame parser.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass
from typing import ClassVar, Generic, Protocol, TypeVar

from citynerve.gateway.api import FrameError, FrameFault


class _HasRaw(Protocol):
    @property
    def raw(self) -> bytes: ...


F = TypeVar("F", bound=_HasRaw)

KEEP_REJECTED = 4
"""Rejected candidates a parser keeps as FrameError over its life (one parser per transaction);
the rest are only counted (`rejected_total`). A line full of 68 noise rejects a candidate at every
byte: keeping each one (a copy, a hex message, a traceback) cost 9.5 MiB for one 5 s poll at 9600
baud."""


@dataclass(frozen=True, slots=True)
class _NoFrameEnd:
    """A candidate whose L points at a byte that is not the end byte 16: noise (or a frame cut by
    noise), not a frame. Cheap to make; a FrameError is built only for the few that are kept."""

    length: int  # the candidate's bytes from its 68, as its L says
    found: int  # the byte where 16 should be

    def error(self, protocol: str, data: bytes) -> FrameError:
        return FrameError(protocol, f"noise: no end byte 16 where L puts it (found {self.found:02X})", data)


class ResyncParser(ABC, Generic[F]):
    """Incremental parser: skips FE and garbage, joins split frames, returns several per read.

    A candidate without its end byte, or with a bad checksum, is dropped and the search resumes at
    the next 68, so a real frame hidden behind noise that happens to contain 68 is still found.
    The first `KEEP_REJECTED` rejects of the parser's life are kept, all are counted in
    `rejected_total`. The buffer is bounded: a never-ending "frame" cannot eat memory.
    """

    protocol: ClassVar[str]
    header: ClassVar[int]  # bytes from the first 68 through L
    length_at: ClassVar[int]  # offset of L from the first 68

    def __init__(self, max_buffer: int = 1024) -> None:
        self._buf = bytearray()
        self._rejected: list[FrameError] = []
        self._max = max_buffer
        self.rejected_total = 0  # every candidate rejected since this parser was made
        self._kept = 0

    @abstractmethod
    def parse(self, data: bytes) -> F:
        """One whole frame (68 ... 16), or FrameError."""

    def check_header(self, buf: bytearray, pos: int) -> FrameError | None:
        """A FrameError as soon as the bytes at `pos` cannot start a frame (before the length is in)."""
        return None

    def feed(self, data: bytes) -> list[F]:
        self._buf += data
        frames: list[F] = []
        while True:
            start = self._buf.find(0x68)
            if start < 0:
                self._buf.clear()
                break
            del self._buf[:start]
            frame = self._complete_at(0)
            if frame is None:
                # The candidate here is incomplete (or not a header): a valid frame further on means
                # it was noise that happened to contain 68, so do not wait for it.
                later = self._later_frame()
                if later is None:
                    break
                self._reject(FrameError(self.protocol, "noise before a frame", bytes(self._buf[:later])))
                del self._buf[:later]
                continue
            if isinstance(frame, _NoFrameEnd):
                keep = self._kept < KEEP_REJECTED
                self._reject(frame.error(self.protocol, bytes(self._buf[: frame.length])) if keep else None)
                del self._buf[0]
                continue
            if isinstance(frame, FrameError):
                self._reject(frame)
                del self._buf[0]
                continue
            frames.append(frame)
            del self._buf[: len(frame.raw)]
        if len(self._buf) > self._max:
            del self._buf[: len(self._buf) - self._max]
        return frames

    def _reject(self, err: FrameError | None) -> None:
        self.rejected_total += 1
        if err is not None and self._kept < KEEP_REJECTED:
            self._kept += 1
            self._rejected.append(err)

    def _complete_at(self, pos: int) -> F | FrameError | _NoFrameEnd | None:
        """The frame starting at `pos`, a FrameError (or _NoFrameEnd) if the bytes there cannot be
        one, None if more bytes are needed to tell."""
        buf = self._buf
        early = self.check_header(buf, pos)
        if early is not None:
            return early
        if len(buf) - pos < self.header:
            return None
        total = self.header + buf[pos + self.length_at] + 2
        if len(buf) - pos < total:
            return None
        end = buf[pos + total - 1]
        if end != 0x16:  # checked before parsing: noise fails here at every byte, cheaply
            return _NoFrameEnd(total, end)
        try:
            return self.parse(bytes(buf[pos : pos + total]))
        except FrameError as err:
            return err

    def _later_frame(self) -> int | None:
        pos = self._buf.find(0x68, 1)
        while pos >= 0:
            found = self._complete_at(pos)
            if found is not None and not isinstance(found, FrameError | _NoFrameEnd):
                return pos
            pos = self._buf.find(0x68, pos + 1)
        return None

    def pending(self) -> bytes:
        return bytes(self._buf)

    def rejected(self) -> list[FrameError]:
        """Rejected candidates not handed out yet, of the first `KEEP_REJECTED` of the parser's
        life (all are counted in `rejected_total`)."""
        out, self._rejected = self._rejected, []
        return out


def checksum(data: bytes) -> int:
    """DL/T 645 and CJ/T 188 checksum: the sum of the bytes, mod 256."""
    return sum(data) & 0xFF


def frame_body(
    data: bytes, *, protocol: str, header: int, length_at: int, second_68_at: int | None = None
) -> bytes:
    """Check one whole `[FE...] 68 ... L DATA CS 16` frame and return it from its first 68.

    Leading FE preamble bytes are skipped. The checksum is the sum of every byte from the first 68
    through the last data byte, mod 256 (DL/T 645 and CJ/T 188 alike). Raises FrameError naming
    what is wrong: truncated, missing 68, trailing bytes, wrong end byte, checksum mismatch.
    """
    start = 0
    while start < len(data) and data[start] == 0xFE:
        start += 1
    body = data[start:]
    if len(body) < header + 2:
        raise FrameError(protocol, f"truncated: {len(body)} bytes, a frame has at least {header + 2}", data)
    if body[0] != 0x68 or (second_68_at is not None and body[second_68_at] != 0x68):
        where = (
            "no 68 start byte"
            if second_68_at is None
            else f"no 68 start bytes at offsets 0 and {second_68_at}"
        )
        raise FrameError(protocol, where, data)
    length = body[length_at]
    total = header + length + 2
    if len(body) < total:
        raise FrameError(protocol, f"truncated: L={length} needs {total} bytes, got {len(body)}", data)
    if len(body) > total:
        raise FrameError(protocol, f"{len(body) - total} bytes after the end of the frame", data)
    # the end byte first: bytes without it are not a frame, and their checksum means nothing
    if body[total - 1] != 0x16:
        raise FrameError(protocol, f"end byte is {body[total - 1]:02X}, expected 16", data)
    expected = checksum(body[: total - 2])
    if body[total - 2] != expected:
        raise FrameError(
            protocol,
            f"checksum mismatch: expected {expected:02X}, found {body[total - 2]:02X}",
            data,
            fault=FrameFault.CHECKSUM,
        )
    return bytes(body[:total])
