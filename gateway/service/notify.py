"""systemd's notify protocol (sd_notify) and the watchdog that feeds it only while the gateway works.

The protocol is one datagram of `KEY=VALUE` lines to the AF_UNIX socket in $NOTIFY_SOCKET (a path,
or an abstract name written with a leading '@'); no library needed. The unit (`Type=notify`,
`WatchdogSec=`) makes systemd set NOTIFY_SOCKET and WATCHDOG_USEC.

`Watchdog` sends `WATCHDOG=1` every third of WatchdogSec, but only while every component made progress
within WatchdogSec: the event loop (the pings themselves run on it), the outbox writer (no commit
attempt in flight for longer) and every bus owner (its loop turned; idle waits turn it every few
seconds). A hung component stops the pings; systemd then kills and restarts the gateway
(`Restart=on-failure`), and `STATUS=` says which component hung.
"""

from __future__ import annotations

import asyncio
import logging
import os
import socket
from collections.abc import Callable, Mapping

from citynerve.gateway.api import SYSTEM_CLOCK, Clock
from citynerve.gateway.store import OutboxWriter

log = logging.getLogger("citynerve.service")

MAX_STATUS = 200  # STATUS= text is for `systemctl status`: one short line


class Notifier:
    """Sends sd_notify messages; does nothing when not started by systemd (no NOTIFY_SOCKET)."""

    def __init__(self, env: Mapping[str, str] | None = None) -> None:
        env = os.environ if env is None else env
        self.address = env.get("NOTIFY_SOCKET", "")
        usec = env.get("WATCHDOG_USEC", "")
        pid = env.get("WATCHDOG_PID", "")
        self.watchdog_s: float | None = None
        if usec.isdigit() and int(usec) > 0 and (not pid or pid == str(os.getpid())):
            self.watchdog_s = int(usec) / 1e6
        self.sent = 0
        self.errors = 0

    @property
    def enabled(self) -> bool:
        return bool(self.address) and self.address[0] in "/@"

    def send(self, **fields: str) -> bool:
        """One message, e.g. send(READY="1", STATUS="polling 3 buses"). False when it failed."""
        if not self.enabled:
            return False
        text = "\n".join(f"{k}={_one_line(v)}" for k, v in fields.items())
        addr = self.address
        target = "\0" + addr[1:] if addr.startswith("@") else addr
        try:
            with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC) as s:
                s.sendto(text.encode(), target)
        except OSError as err:
            self.errors += 1
            if self.errors == 1 or self.errors % 100 == 0:
                log.warning("sd_notify to %s failed (%d so far): %s", addr, self.errors, err)
            return False
        self.sent += 1
        return True


def _one_line(value: str) -> str:
    return " ".join(str(value).split())[:MAX_STATUS]


ProgressFn = Callable[[], float]
"""Returns the monotonic time of a component's last progress."""


class WriterProgress:
    """Progress of the outbox writer: it progresses unless one commit attempt has been in flight
    since some time (a failed attempt is progress: the writer keeps its records and retries, and a
    restart would not mend a full disk but lose what waits in memory)."""

    def __init__(self, writer: OutboxWriter, clock: Clock = SYSTEM_CLOCK) -> None:
        self._writer = writer
        self._clock = clock

    def __call__(self) -> float:
        started = self._writer.commit_started
        return self._clock.monotonic() if started is None else started


class Watchdog:
    """Pings systemd's watchdog while every component progresses (see the module doc)."""

    def __init__(
        self,
        notifier: Notifier,
        components: Callable[[], Mapping[str, ProgressFn]],
        *,
        status: Callable[[], str] = lambda: "",
        clock: Clock = SYSTEM_CLOCK,
        stall_s: float | None = None,
    ) -> None:
        self.notifier = notifier
        self.components = components
        self.status = status
        self.clock = clock
        timeout = notifier.watchdog_s or 0.0
        self.stall_s = stall_s if stall_s is not None else timeout
        self.interval_s = max(timeout / 3, 0.05)
        self.pings = 0
        self.hung: list[str] = []

    def stalled(self) -> list[str]:
        """Components that made no progress for `stall_s`."""
        now = self.clock.monotonic()
        return sorted(name for name, last in self.components().items() if now - last() > self.stall_s)

    async def run(self) -> None:
        if self.notifier.watchdog_s is None:
            return
        log.info(
            "systemd watchdog: pinging every %.1f s while every component progresses within %.0f s",
            self.interval_s,
            self.stall_s,
        )
        while True:
            try:
                self._round()
            except Exception:  # a bug here withholds the pings (systemd restarts), never kills the gateway
                log.exception("watchdog: progress check failed; ping withheld")
            await asyncio.sleep(self.interval_s)

    def _round(self) -> None:
        """One look at the components: ping, or say which hung."""
        hung = self.stalled()
        if hung:
            if hung != self.hung:
                log.error(
                    "watchdog: no progress for %.0f s from %s: pings withheld, systemd will restart "
                    "the gateway",
                    self.stall_s,
                    ", ".join(hung),
                )
                self.notifier.send(STATUS=f"hung: {', '.join(hung)}")
        else:
            if self.hung:
                log.warning("watchdog: %s progress again", ", ".join(self.hung))
            self.notifier.send(WATCHDOG="1", STATUS=self.status())
            self.pings += 1
        self.hung = hung
