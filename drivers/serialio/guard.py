"""Limits of a listening serial bus (a port a device prints to): line length, rate, garbage.

A printer port can carry anything: a disconnected wire's noise, a wrong baud rate, an attacker on
the RS-232 cable. `LineGuard` sorts every line before it can become a row in the outbox:

- longer than `MAX_LINE` bytes: the fire panel parses only its last `MAX_LINE` bytes, since noise
  without a line end sticks to the front of the panel's next line, and counts the bytes in front as
  garbage (the whole line when no record is there: `discard`);
- then the parser: a line it knows is a record, never limited, so a real fire alarm in the middle
  of a flood, or with a noise byte in its location text, still gets through;
- a line no parser knew that is mostly not text (invalid encoding, control characters): garbage
  (`text_ok`);
- text no parser knew ("raw" lines): kept, but at most `raw_per_s` a second (burst `raw_burst`);
  more than that is garbage too (`admit_raw`).

Garbage is counted (lines and bytes, in the bus's status) and reported in one log line per
`log_interval_s`, never stored line by line. Durations use the monotonic clock.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable

log = logging.getLogger(__name__)

MAX_LINE = 512  # bytes; panel printer lines are under 100
RAW_PER_S = 1.0
RAW_BURST = 20
LOG_INTERVAL_S = 60.0
_TEXT_SHARE = 0.8  # a line with less printable text than this is garbage


def is_text(line: str) -> bool:
    """Mostly printable text (any script), no decoding replacement characters."""
    if not line or "\ufffd" in line:
        return False
    printable = sum(1 for c in line if c.isprintable() or c == "\t")
    return printable >= _TEXT_SHARE * len(line)


class LineGuard:
    """Per listening bus; see the module doc. `owner` names the bus (or device) in the log."""

    def __init__(
        self,
        owner: str,
        *,
        raw_per_s: float = RAW_PER_S,
        raw_burst: int = RAW_BURST,
        log_interval_s: float = LOG_INTERVAL_S,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.owner = owner
        self._rate = raw_per_s
        self._burst = float(raw_burst)
        self._tokens = float(raw_burst)
        self._clock = clock
        self._refill_t = clock()
        self._log_interval = log_interval_s
        self._logged_t = clock() - log_interval_s
        self._unlogged_lines = 0
        self._unlogged_bytes = 0
        self.garbage_lines = 0
        self.garbage_bytes = 0
        self.raw_dropped = 0  # text lines over the raw rate (also counted as garbage)

    def text_ok(self, raw: bytes, text: str) -> bool:
        """False (and counted) when a line no parser knew is not mostly text."""
        if not is_text(text):
            self.discard(len(raw))
            return False
        return True

    def admit_raw(self, nbytes: int) -> bool:
        """May an unparsed text line be stored now? False (and counted) over the raw rate."""
        now = self._clock()
        self._tokens = min(self._burst, self._tokens + (now - self._refill_t) * self._rate)
        self._refill_t = now
        if self._tokens >= 1.0:
            self._tokens -= 1.0
            return True
        self.raw_dropped += 1
        self.discard(nbytes)
        return False

    def discard(self, nbytes: int) -> None:
        """Count `nbytes` of garbage; log a summary at most once per interval."""
        self.garbage_lines += 1
        self.garbage_bytes += nbytes
        self._unlogged_lines += 1
        self._unlogged_bytes += nbytes
        now = self._clock()
        if now - self._logged_t >= self._log_interval:
            log.warning(
                "%s: %d garbage lines (%d bytes) not stored in the last %.0f s "
                "(too long, not text, or unparsed text over %g/s); %d since start",
                self.owner,
                self._unlogged_lines,
                self._unlogged_bytes,
                min(now - self._logged_t, self._log_interval),
                self._rate,
                self.garbage_lines,
            )
            self._logged_t = now
            self._unlogged_lines = self._unlogged_bytes = 0

    def status(self) -> dict[str, int]:
        return {
            "garbage_lines": self.garbage_lines,
            "garbage_bytes": self.garbage_bytes,
            "raw_dropped": self.raw_dropped,
        }


__all__ = ["LOG_INTERVAL_S", "MAX_LINE", "LineGuard", "is_text"]
