"""Per-device and per-bus health as a bus owner sees it: the basis of online/offline and status."""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass, field
from typing import Any

FLAPS_KEPT = 16  # offline times kept per device: more within the window would change no hold


@dataclass(slots=True)
class DeviceHealth:
    """Mutable, owned by one bus owner task; read by status snapshots."""

    device_id: str
    online: bool | None = None  # None until the first success or the first offline verdict
    consecutive_failures: int = 0
    probe_failed: bool = False  # the first request of its plan failed since the last success
    transactions: int = 0
    errors: int = 0
    last_success: float | None = None
    last_error: str | None = None
    last_error_ts: float | None = None
    backoff_s: float = 0.0
    last_seen: float | None = None  # listening buses: when the device was last heard
    faulted: str | None = None  # why the gateway's own handling of it raised (plan, decode, rules)
    faults: int = 0
    fault_backoff_s: float = 0.0
    # The error text last logged per request (plan entry index, so at most one per request of its
    # plan), forgotten when that request answers: a request failing alike at every poll logs once.
    logged_errors: dict[int, str] = field(default_factory=dict)
    # Hysteresis of the device_offline alarm (states.py): raised and not cleared yet, the monotonic
    # times the device went offline lately, the steady answering its clear waits for, and since when
    # it answers (None: not answering, or no wait).
    offline_alarm: bool = False
    offlines: deque[float] = field(default_factory=lambda: deque(maxlen=FLAPS_KEPT))
    offline_hold_s: float = 0.0
    answering_since: float | None = None

    def to_dict(self) -> dict[str, Any]:
        return {
            "id": self.device_id,
            "online": self.online,
            "consecutive_failures": self.consecutive_failures,
            "transactions": self.transactions,
            "errors": self.errors,
            "last_success": self.last_success,
            "last_error": self.last_error,
            "last_error_ts": self.last_error_ts,
            "backoff_s": round(self.backoff_s, 3),
            "faulted": self.faulted,
            "faults": self.faults,
            "offline_alarm": self.offline_alarm,
            "offline_hold_s": self.offline_hold_s,
        }


@dataclass(slots=True)
class BusCounters:
    transactions: int = 0
    errors: int = 0
    timeouts: int = 0
    frame_errors: int = 0
    exceptions: int = 0
    channel_errors: int = 0
    latency_sum_s: float = 0.0
    latency_count: int = 0
    by_error: dict[str, int] = field(default_factory=dict)

    def count_error(self, kind: str) -> None:
        self.errors += 1
        self.by_error[kind] = self.by_error.get(kind, 0) + 1

    def to_dict(self) -> dict[str, Any]:
        mean = self.latency_sum_s / self.latency_count if self.latency_count else None
        return {
            "transactions": self.transactions,
            "errors": self.errors,
            "timeouts": self.timeouts,
            "frame_errors": self.frame_errors,
            "exceptions": self.exceptions,
            "channel_errors": self.channel_errors,
            "latency_mean_ms": None if mean is None else round(mean * 1000, 3),
            "latency_sum_s": self.latency_sum_s,
            "latency_count": self.latency_count,
        }
