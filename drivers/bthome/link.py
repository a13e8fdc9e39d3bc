"""Per-node link health of the BTHome driver (what was accepted, refused and why, when last heard)
and the advertisers heard nearby (for `diag ble scan`)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from citynerve.drivers.bthome.errors import RejectReason

ADVERTS_PER_S = 2.0
ADVERTS_BURST = 20
"""Fresh adverts delivered per node: a node advertises every few seconds (faster only while an
alarm changes); more than this is a spoofer (plaintext nodes) or a broken node, and is counted
(`rate_limited`), not stored advert by advert. Nodes repeat their state in every advert."""
LOG_INTERVAL_S = 60.0
"""A node whose adverts flap between refused and accepted logs at most one rejected / accepted-again
pair per interval; the changes in between are counted in its next "rejected" line."""


@dataclass(slots=True)
class DeviceLinkStats:
    """Per-node link health: what was accepted, what was refused and why, when it was last heard."""

    accepted: int = 0
    duplicates: int = 0
    rejected: dict[RejectReason, int] = field(default_factory=dict)
    last_seen: float | None = None  # utc time of the last accepted (fresh) advert
    last_rssi: int | None = None
    last_counter: int | None = None
    last_packet_id: int | None = None
    last_error: str = ""
    failing: bool = False
    rate_limited: int = 0  # fresh adverts over ADVERTS_PER_S: counted, not delivered
    counter_restarted: bool = False  # the last replay refused was far below the counter (reflashed?)
    _tokens: float = float(ADVERTS_BURST)
    _refill_t: float | None = None
    _unlogged_fails: int = 0  # changes from accepted to rejected not logged yet
    _fail_logged_t: float | None = None  # monotonic time of the last "rejected" line
    _fail_logged: bool = False  # the log's last word on this node is "rejected"

    def fail(self, reason: RejectReason, error: str, now: float) -> int:
        """Count a refused advert (monotonic `now`). Returns the changes from accepted to rejected
        to log now, or 0: at most one line per LOG_INTERVAL_S, a flapping node must not flood the log."""
        self.rejected[reason] = self.rejected.get(reason, 0) + 1
        self.last_error = error
        if not self.failing:
            self.failing = True
            self._unlogged_fails += 1
        logged_t = self._fail_logged_t
        if not self._unlogged_fails or (logged_t is not None and now - logged_t < LOG_INTERVAL_S):
            return 0
        changes, self._unlogged_fails = self._unlogged_fails, 0
        self._fail_logged_t, self._fail_logged = now, True
        return changes

    def recover(self) -> bool:
        """An advert delivered: True when the log should say so (only after a logged "rejected")."""
        logged, self._fail_logged, self.failing = self._fail_logged, False, False
        self.counter_restarted = False
        return logged

    def forgive_replays(self) -> None:
        """The node's counter was reset: its refusals as replays no longer describe it."""
        self.rejected.pop(RejectReason.REPLAY, None)
        self.counter_restarted = False

    def admit(self, now: float) -> bool:
        """Token bucket of fresh adverts (monotonic `now`); False (and counted) over the rate."""
        if self._refill_t is not None:
            self._tokens = min(float(ADVERTS_BURST), self._tokens + (now - self._refill_t) * ADVERTS_PER_S)
        self._refill_t = now
        if self._tokens >= 1.0:
            self._tokens -= 1.0
            return True
        self.rate_limited += 1
        return False

    @property
    def rejected_total(self) -> int:
        return sum(self.rejected.values())

    def as_dict(self) -> dict[str, Any]:
        return {
            "accepted": self.accepted,
            "duplicates": self.duplicates,
            "rejected": {str(k): v for k, v in sorted(self.rejected.items())},
            "rate_limited": self.rate_limited,
            "last_seen": self.last_seen,
            "last_rssi": self.last_rssi,
            "last_counter": self.last_counter,
            "last_error": self.last_error,
            "counter_restarted": self.counter_restarted,
        }


@dataclass(slots=True)
class NearbyNode:
    """A BTHome advertiser heard on this adapter, configured or not (for `diag ble scan`)."""

    address: str
    rssi: int | None
    payload: bytes
    ts: float  # utc time last heard: shown, never compared (the wall clock may step)
    mono: float  # monotonic time last heard: "heard during this scan", the longest unheard
    device_id: str | None
    count: int = 1
