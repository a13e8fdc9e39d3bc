"""Resynchronising stream parser for the 68 ... CS 16 framed meter protocols (sans-I/O).

DL/T 645 and CJ/T 188 frames both start at a 68 byte, carry their data length at a fixed offset and
end with a checksum and 16. On a half-duplex line the reader sees FE preambles, leading garbage,
frames split across reads and two frames in one read; this parser finds the frames in all of that.
Each codec subclasses it with its header size, length offset and frame parser.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from typing import ClassVar, Generic, Protocol, TypeVar

from citynerve.gateway.api import FrameError, FrameFault


class _HasRaw(Protocol):
    @property
    def raw(self) -> bytes: ...


F = TypeVar("F", bound=_HasRaw)


class ResyncParser(ABC, Generic[F]):
    """Incremental parser: skips FE and garbage, joins split frames, returns several per read.

    A candidate with a bad checksum or end byte is dropped (kept in `rejected()`) and the search
    resumes at the next 68, so a real frame hidden behind noise that happens to contain 68 is
    still found. The buffer is bounded: a never-ending "frame" cannot eat memory.
    """

    protocol: ClassVar[str]
    header: ClassVar[int]  # bytes from the first 68 through L
    length_at: ClassVar[int]  # offset of L from the first 68

    def __init__(self, max_buffer: int = 1024) -> None:
        self._buf = bytearray()
        self._rejected: list[FrameError] = []
        self._max = max_buffer

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
                self._rejected.append(
                    FrameError(self.protocol, "noise before a frame", bytes(self._buf[:later]))
                )
                del self._buf[:later]
                continue
            if isinstance(frame, FrameError):
                self._rejected.append(frame)
                del self._buf[0]
                continue
            frames.append(frame)
            del self._buf[: len(frame.raw)]
        if len(self._buf) > self._max:
            del self._buf[: len(self._buf) - self._max]
        return frames

    def _complete_at(self, pos: int) -> F | FrameError | None:
        """The frame starting at `pos`, a FrameError if the bytes there cannot be one, None if more
        bytes are needed to tell."""
        buf = self._buf
        early = self.check_header(buf, pos)
        if early is not None:
            return early
        if len(buf) - pos < self.header:
            return None
        total = self.header + buf[pos + self.length_at] + 2
        if len(buf) - pos < total:
            return None
        try:
            return self.parse(bytes(buf[pos : pos + total]))
        except FrameError as err:
            return err

    def _later_frame(self) -> int | None:
        pos = self._buf.find(0x68, 1)
        while pos >= 0:
            found = self._complete_at(pos)
            if found is not None and not isinstance(found, FrameError):
                return pos
            pos = self._buf.find(0x68, pos + 1)
        return None

    def pending(self) -> bytes:
        return bytes(self._buf)

    def rejected(self) -> list[FrameError]:
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
    what is wrong: truncated, missing 68, trailing bytes, checksum mismatch, wrong end byte.
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
    expected = checksum(body[: total - 2])
    if body[total - 2] != expected:
        raise FrameError(
            protocol,
            f"checksum mismatch: expected {expected:02X}, found {body[total - 2]:02X}",
            data,
            fault=FrameFault.CHECKSUM,
        )
    if body[total - 1] != 0x16:
        raise FrameError(protocol, f"end byte is {body[total - 1]:02X}, expected 16", data)
    return bytes(body[:total])
