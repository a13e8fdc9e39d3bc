"""The gateway's keys and certificates, as the runtime holds them: expiry of the uplink's
certificates (status, metrics, birth, warning alarm), TLS client key rotation and command-key
rotation, and the platform actions for them (docs/fleet.md, "Keys and certificates").

Files live in the credentials folder next to the store (`<store dir>/credentials`, 0700; keys 0600).
"""

from __future__ import annotations

import asyncio
import logging
import math
import time
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from citynerve.gateway.api import Event, Severity
from citynerve.gateway.uplink.certexpiry import CertWatch, DestinationWatches
from citynerve.gateway.uplink.commands import Caller, KeyValueState, RemoteAction
from citynerve.gateway.uplink.config import TlsConfig, UpstreamConfig
from citynerve.gateway.uplink.encoding import RejectReason
from citynerve.gateway.uplink.errors import CommandRejectedError
from citynerve.gateway.uplink.keyrotation import CommandKeyRotation
from citynerve.gateway.uplink.permissions import Permission
from citynerve.gateway.uplink.tlsrotate import TlsRotation

if TYPE_CHECKING:
    from citynerve.gateway.alarms import ActiveAlarm
    from citynerve.gateway.uplink import Uplink

log = logging.getLogger(__name__)

_NO_TLS = TlsConfig()
CHECK_INTERVAL_S = 3600.0  # certificates are checked at start and then hourly


class Credentials:
    """Keys and certificates of one running gateway (one per Gateway with an [upstream])."""

    def __init__(
        self,
        upstream: UpstreamConfig,  # the command destination's (gateway/uplinks.command_destination)
        *,
        gateway_id: str,
        state: KeyValueState,
        directory: Path,
        events: Callable[[Event], None],
        wall: Callable[[], float] = time.time,
        confirm_s: float | None = None,
        config_waiting: Callable[[], bool] = lambda: False,
    ) -> None:
        self._configured = upstream
        # A remote config change is being written or waits for its health check (remoteconfig):
        # no new TLS pair meanwhile, as no change while a pair waits (rotation_waiting).
        self._config_waiting = config_waiting
        self._installing = False
        self.uplink: Uplink | None = None
        self._confirm_given = confirm_s
        # How long the uplink has to connect with a new TLS client certificate before it goes back.
        self.confirm_s = confirm_s if confirm_s is not None else max(60.0, 4 * upstream.connect_timeout_s)
        self._guard: asyncio.Task[None] | None = None
        self.tls = TlsRotation(
            state=state,
            directory=directory,
            gateway_id=gateway_id,
            upstream=self.upstream,
            switch=self._switch,
            events=events,
            configured=lambda: self._configured,
        )
        self.command_keys = CommandKeyRotation(
            state=state,
            directory=directory,
            gateway_id=gateway_id,
            config=lambda: self._configured.commands,
            events=events,
            wall=wall,
        )
        self.watch = CertWatch(
            # A disabled command destination (no JSON v1 one is enabled) uses no certificate.
            lambda: self.upstream().tls if self._configured.enabled else _NO_TLS,
            gateway_id=gateway_id,
            warn_days=upstream.tls.expiry_warning_days,
            events=events,
            wall=wall,
        )
        self.others = DestinationWatches(gateway_id=gateway_id, events=events, wall=wall)

    async def load(self, *, settle: bool = True) -> None:
        """What was rotated before the restart. `settle`: no remote config change waits for its
        health check, so a TLS client certificate provisioned again wins now (else at `settle()`
        once the change is confirmed: a revert goes back to the rotated pair)."""
        await self.tls.load()
        if settle:
            await self.settle()
        await self.command_keys.load()

    async def settle(self) -> None:
        """A remote config change passed its health check: the rotated TLS client pair it replaced
        with a configured one is forgotten now (audited `tls_configured`). Only a JSON v1 destination's
        certificate replaces it: a Sparkplug one's (no JSON v1 destination runs) is its own pair."""
        if self._configured.encoding == "json-v1":
            await self.tls.provisioned_again(self._configured)

    def upstream(self) -> UpstreamConfig:
        """The [upstream] in force: the uplink's own (after a rotation), or the configured one."""
        if self.uplink is not None:
            return self.uplink.config
        if self._configured.encoding != "json-v1":  # no JSON v1 destination: nothing rotated in use
            return self._configured
        return self.tls.effective(self._configured)

    async def reconfigure(self, upstream: UpstreamConfig) -> None:
        """The [upstream] a remote config change puts in force without a restart (the runtime's
        `restart_uplink`), before its uplinks are made: a command key provisioned again in it wins
        over a recorded rotation, so does a TLS client certificate (its uplink connects with it;
        the rotated pair is kept until the change is confirmed, `settle`, for a revert), and the
        expiry warning and the confirmation window follow it, as after a restart."""
        self._configured = upstream
        if self.tls.replaced_by(upstream):  # a switch waiting for its connection is not judged now
            self.tls.previous = None
        self.watch.warn_days = upstream.tls.expiry_warning_days
        if self._confirm_given is None:
            self.confirm_s = max(60.0, 4 * upstream.connect_timeout_s)

    def attach(self, uplink: Uplink | None) -> None:
        """The uplink of the destination they belong to (the runtime's `uplink`), once per uplink;
        None: no JSON v1 destination runs (nothing to rotate, no stopped uplink held)."""
        self.uplink = uplink
        self.command_keys.attach(uplink.key_ring if uplink is not None else None)

    def adopt(self, restored: Iterable[ActiveAlarm]) -> None:
        """Expiry alarms still active from before a restart, each to the watch that raises it,
        judged again at its first check. The end of the certificate an alarm was raised for: its
        raise time plus the days left then (its value)."""
        raised: dict[str, tuple[Severity, float]] = {}
        for a in restored:
            days = a.value if isinstance(a.value, int | float) and not isinstance(a.value, bool) else math.nan
            raised[a.subject] = (a.severity, a.raised_at + days * 86400)
        self.watch.adopt({k: v for k, v in raised.items() if self.watch.owns(k)})
        self.others.adopt({k: v for k, v in raised.items() if not self.watch.owns(k)})

    def rearm(self) -> None:
        """The wall clock is synchronised now: the command keys' overlaps end at their stored wall
        ends, and the certificates' days left are judged again (not an hour later)."""
        self.command_keys.rearm()
        try:
            self.watch.check()
            self.others.check()
        except Exception:  # a bug here must not stop the gateway
            log.exception("certificate check failed")

    def _switch(self, upstream: UpstreamConfig) -> None:
        if self.uplink is None:
            return
        self.uplink.config = upstream
        uplink = self.uplink
        sessions = uplink.snapshot().reconnects
        # After the answer is out: the answer travels on the session that is about to end.
        asyncio.get_running_loop().call_later(1.0, uplink.reconnect, "new TLS client certificate")
        self.watch.check()  # an expiry alarm of the old certificate clears now
        if self._guard is not None:
            self._guard.cancel()
        self._guard = asyncio.get_running_loop().create_task(self._confirm(sessions), name="credentials.tls")

    async def _confirm(self, sessions: int) -> None:
        """The uplink must connect with the new pair within `confirm_s` (the trial connection
        passed, but the broker or the network may have changed since); else back to the old pair."""
        deadline = time.monotonic() + self.confirm_s
        while time.monotonic() < deadline:
            await asyncio.sleep(0.2)
            if self.uplink is None:  # no JSON v1 destination any more: nothing to confirm on
                return
            snap = self.uplink.snapshot()
            if snap.connected and snap.reconnects > sessions:
                self.tls.confirmed()
                return
        if self.uplink is None:
            return
        before = await self.tls.fall_back(
            self.uplink.snapshot().last_error or f"not within {self.confirm_s:g} s"
        )
        if before is not None and self.uplink is not None:
            self.uplink.config = before
            self.uplink.reconnect("back to the previous TLS client certificate")
            self.watch.check()

    def rotation_waiting(self) -> str | None:
        """Why a remote config change must wait (None: it need not): a new TLS client pair is being
        tried, or the uplink has yet to connect with it. The change would rebuild the uplinks under
        the confirmation, which would then fall back to the [upstream] from before the change."""
        if self._installing or (self._guard is not None and not self._guard.done()):
            return (
                "a TLS client certificate rotation waits for the uplink to connect with the new pair "
                f"(at most {self.confirm_s:g} s); send the change after it"
            )
        return None

    async def _install(self, args: dict[str, Any], caller: Caller) -> dict[str, Any]:
        """`tls_install_cert`, refused while a remote config change waits for its health check: its
        revert would rebuild the uplinks under the new pair's confirmation, which would then fall
        back to the change's [upstream], the one reverted."""
        if self._config_waiting():
            raise CommandRejectedError(
                RejectReason.BAD_VALUE,
                "a config change waits for its health check; send the certificate after its verdict",
            )
        self._installing = True  # set before the first await: a change arriving now is refused
        try:
            return await self.tls.install(args, caller)
        finally:
            self._installing = False

    def status(self) -> dict[str, Any]:
        out = self.watch.status()
        if self.others.watches:  # the other destinations' certificates, by destination
            out["destinations"] = {d: w.status() for d, w in self.others.watches.items()}
        if self.tls.active is not None and self.upstream().tls.cert_file == self.tls.active[0]:
            out["tls_client_rotated"] = str(self.tls.active[0])
        rotations = self.command_keys.status()
        if rotations:
            out["command_keys"] = rotations
        return out

    async def run(self) -> None:
        """Check the certificates now and then (raise or clear the expiry alarms)."""
        try:
            while True:
                try:
                    self.watch.check()
                    self.others.check()
                except Exception:  # a bug here must not stop the gateway
                    log.exception("certificate check failed")
                await asyncio.sleep(CHECK_INTERVAL_S)
        finally:
            if self._guard is not None:
                self._guard.cancel()

    def remote_actions(self) -> dict[str, RemoteAction]:
        return {
            "tls_csr": RemoteAction(Permission.CONFIGURE, self.tls.make_csr),
            "tls_install_cert": RemoteAction(Permission.CONFIGURE, self._install),
            "rotate_command_key": RemoteAction(Permission.CONFIGURE, self.command_keys.rotate),
            "diag_certs": RemoteAction(Permission.READ, self._diag_certs),
        }

    async def _diag_certs(self, args: dict[str, Any], caller: Any) -> dict[str, Any]:
        return self.status()
