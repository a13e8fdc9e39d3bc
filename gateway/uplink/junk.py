"""Rate limit for rejected commands nobody authenticated (junk): log and answer once per interval.

A client allowed to publish on the command topic can send thousands of malformed, unsigned or
badly signed commands a second. Each is still checked and counted, but only the first of every
`interval_s` is logged and answered; that answer and log line carry the counts suppressed since
the previous one, so the log and the result topic grow by at most one line per interval.
"""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Callable

from citynerve.gateway.uplink.encoding import RejectReason

JUNK_REASONS = frozenset(
    {
        RejectReason.MALFORMED,
        RejectReason.WRONG_GATEWAY,
        RejectReason.DISABLED,
        RejectReason.UNSIGNED,
        RejectReason.BAD_SIGNATURE,
    }
)
"""Rejections decided before the signature verified: nobody authenticated these. Rejections of a
command signed with the platform's key (expired, replayed, unknown point, device errors) are
always answered: the platform is waiting for them."""

DEFAULT_INTERVAL_S = 10.0


class JunkLimiter:
    """`admit(reason)`: None when this rejection is only counted, else the summary text to log and
    answer with ("" when nothing was suppressed since the last answer). Monotonic clock."""

    def __init__(
        self, interval_s: float = DEFAULT_INTERVAL_S, *, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self.interval_s = interval_s
        self._clock = clock
        self._last: float | None = None
        self._held: Counter[str] = Counter()
        self.suppressed = 0  # rejections neither logged nor answered, since start

    def admit(self, kind: str) -> str | None:
        """`kind`: what was refused (a `RejectReason`, or a short word), counted in the summary."""
        now = self._clock()
        if self._last is not None and now - self._last < self.interval_s:
            self._held[str(kind)] += 1
            self.suppressed += 1
            return None
        summary = ""
        if self._held:
            total = sum(self._held.values())
            parts = ", ".join(f"{k}={v}" for k, v in sorted(self._held.items()))
            since = f"{now - self._last:.0f}" if self._last is not None else "?"
            summary = f"{total} more rejected and not logged in the last {since} s ({parts})"
        self._held.clear()
        self._last = now
        return summary


__all__ = ["DEFAULT_INTERVAL_S", "JUNK_REASONS", "JunkLimiter"]
