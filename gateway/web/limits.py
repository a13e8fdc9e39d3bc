"""Limits of the status page: how many connections, per client and in all, and login throttling.

The page must never take the descriptors the gateway needs for its uplink, buses and outbox: its
connection limit is sized from RLIMIT_NOFILE at start, well under it. Connections over a limit are
closed before a byte of their request is read. Failed logins are logged (once per client and
interval) and throttled per client with a doubling backoff. Durations use the monotonic clock.
"""

from __future__ import annotations

import resource
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass

MAX_CLIENTS = 32  # a Pi serving a few phones; more open connections than this is a misbehaving client
MAX_PER_CLIENT = 8  # one browser opens up to 6 connections to a host
FD_RESERVE = 64  # descriptors always left to the gateway: uplink, buses, outbox, log, control socket
REQUEST_DEADLINE_S = 5.0  # the whole request head must arrive within this (slowloris)
WRITE_DEADLINE_S = 10.0  # a client that does not read its answer is dropped
LOGIN_FREE_FAILURES = 5  # failures before the backoff starts (typos happen)
LOGIN_BACKOFF_S = (1.0, 300.0)  # first and longest wait after failures
MAX_TRACKED = 1024  # clients remembered for login throttling (oldest forgotten first)


def connection_limit(preferred: int = MAX_CLIENTS) -> int:
    """The page's connection limit: `preferred`, but at most a quarter of what RLIMIT_NOFILE leaves
    after the gateway's reserve (and at least 2, so a technician can always get in)."""
    soft, _ = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft == resource.RLIM_INFINITY:
        return preferred
    return max(2, min(preferred, (soft - FD_RESERVE) // 4))


@dataclass(slots=True)
class _Failures:
    count: int = 0
    blocked_until: float = 0.0
    last_logged: float = -1e9
    unlogged: int = 0


class LoginThrottle:
    """Per-client failed-login backoff. `wait(client)`: seconds the client must still wait (0: may
    try); a try while blocked restarts the wait, so a client that hammers stays blocked and one that
    honours Retry-After gets its next try. `failed(client)`: record a failure; returns the log line
    to write, or None when this client's failures were already logged within the interval (they
    are counted into the next)."""

    def __init__(self, *, log_interval_s: float = 60.0, clock: Callable[[], float] = time.monotonic) -> None:
        self._clients: OrderedDict[str, _Failures] = OrderedDict()
        self._clock = clock
        self._log_interval = log_interval_s
        self.failures = 0
        self.throttled = 0

    def wait(self, client: str) -> float:
        f = self._clients.get(client)
        if f is None:
            return 0.0
        now = self._clock()
        if f.blocked_until <= now:
            return 0.0
        self.throttled += 1
        f.blocked_until = now + _backoff(f.count)
        return f.blocked_until - now

    def failed(self, client: str) -> str | None:
        self.failures += 1
        f = self._clients.pop(client, None) or _Failures()
        self._clients[client] = f  # most recent last
        while len(self._clients) > MAX_TRACKED:
            self._clients.popitem(last=False)
        f.count += 1
        now = self._clock()
        if f.count > LOGIN_FREE_FAILURES:
            f.blocked_until = now + _backoff(f.count)
        if now - f.last_logged < self._log_interval:
            f.unlogged += 1
            return None
        more = f" (+{f.unlogged} not logged)" if f.unlogged else ""
        f.last_logged, f.unlogged = now, 0
        wait = max(0.0, f.blocked_until - now)
        return f"failed login from {client}: {f.count} in a row{more}; next try in {wait:.0f} s"

    def succeeded(self, client: str) -> None:
        self._clients.pop(client, None)


def _backoff(failures: int) -> float:
    """The wait after `failures` failed logins in a row (over the free ones): 1, 2, 4 … 300 s."""
    first, longest = LOGIN_BACKOFF_S
    return float(min(longest, first * 2 ** max(0, failures - LOGIN_FREE_FAILURES - 1)))


class ClientCount:
    """Open connections in all and per client address."""

    def __init__(self, limit: int, per_client: int = MAX_PER_CLIENT) -> None:
        self.limit = limit
        self.per_client = min(per_client, limit)
        self._by: dict[str, int] = {}
        self.total = 0
        self.refused = 0

    def enter(self, client: str) -> bool:
        """Count a new connection in; False (and not counted) when a limit is reached."""
        if self.total >= self.limit or self._by.get(client, 0) >= self.per_client:
            self.refused += 1
            return False
        self.total += 1
        self._by[client] = self._by.get(client, 0) + 1
        return True

    def leave(self, client: str) -> None:
        self.total -= 1
        n = self._by.get(client, 0) - 1
        if n > 0:
            self._by[client] = n
        else:
            self._by.pop(client, None)


__all__ = [
    "MAX_CLIENTS",
    "REQUEST_DEADLINE_S",
    "WRITE_DEADLINE_S",
    "ClientCount",
    "LoginThrottle",
    "connection_limit",
]
