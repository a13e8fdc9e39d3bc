"""Remote configuration with commit-confirm (docs/fleet.md, "Remote configuration").

`config_apply` validates the document like `config check` (and refuses one that would take the
sending key away: lockout.py), snapshots the running config, writes
the new one with a pending marker, answers, then applies it: a hot reload for buses and devices, a
new uplink for `[upstream]`, a service restart for the rest. A health check follows: the
destination the change came through connected (commands, and a change back, still reach the
gateway), every enabled destination connected that was, no bus down that was up, no device
faulted that was not. Healthy within `confirm_s`:
confirmed. Not: the snapshot goes back in place, applied the same way, and the gateway reports
why, as an event and as a second result of the same command. A restart in the middle (crash,
power cut) finds the pending marker: the check runs again from the start; after
MAX_PENDING_STARTS starts without a verdict the snapshot is put back before the config is loaded.
"""

from __future__ import annotations

import asyncio
import logging
import math
import time
import tomllib
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any, Protocol

import tomli_w

from citynerve.gateway.api import (
    SYSTEM_CLOCK,
    Clock,
    ConfigError,
    Event,
    EventState,
    GatewayError,
    Severity,
)
from citynerve.gateway.config import GatewayConfig
from citynerve.gateway.remoteconfig.document import (
    ChunkAssembler,
    DocumentError,
    check_hash,
    issues_text,
    redacted,
    validate,
)
from citynerve.gateway.remoteconfig.history import ConfigHistory, HistoryError, sha256_text, state_digest
from citynerve.gateway.remoteconfig.lockout import lockout
from citynerve.gateway.remoteconfig.profiles import candidate
from citynerve.gateway.uplink.commands import Caller, Chunked, RemoteAction
from citynerve.gateway.uplink.config import UpstreamConfig
from citynerve.gateway.uplink.encoding import CommandOutcome, CommandResult, RejectReason
from citynerve.gateway.uplink.errors import CommandRejectedError
from citynerve.gateway.uplink.permissions import Permission

log = logging.getLogger("citynerve.remoteconfig")

CONFIG_KIND = "config"
CONFIG_RULE = "config"
DEFAULT_CONFIRM_S = 120.0
MIN_CONFIRM_S, MAX_CONFIRM_S = 5.0, 1800.0
SETTLE_S = 3.0  # at least this long after applying before a verdict (devices polled once more)
APPLY_DELAY_S = 0.5  # the answer leaves before the uplink may be replaced
MAX_PENDING_STARTS = 3  # starts of a pending config without a verdict, then it is reverted unseen
UNWRITTEN = "unwritten"  # pending marker state: the write failed and so did putting the old one back
HOT_SECTIONS = frozenset({"upstream"})  # restart_needed_for entries handled without a restart
_VERSION_CHARS = frozenset("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789._:-")


class Reconfigurable(Protocol):
    """What the runtime offers (citynerve.gateway.runtime.Gateway)."""

    config: GatewayConfig

    async def reload(self) -> dict[str, Any]: ...

    async def restart_uplink(self) -> None: ...

    async def config_confirmed(self) -> None: ...

    def request_restart(self, delay_s: float) -> None: ...

    def uplink_state(self) -> dict[str, Any] | None: ...

    def bus_stats(self) -> list[dict[str, Any]]: ...

    async def publish_result(self, result: CommandResult, destination: str | None = None) -> bool: ...


def health(gateway: Reconfigurable) -> dict[str, Any]:
    """The figures a change is judged on: the command uplink connected, the destinations meant to
    run (enabled) not connected, the JSON v1 ones connected with commands enabled (commands can
    come through them),
    buses down, devices faulted, devices not yet polled."""
    up = gateway.uplink_state()
    states = (up or {}).get("destinations") or {}
    cfg = gateway.config
    configs = cfg.destinations or ((cfg.upstream,) if cfg.upstream is not None else ())
    running = [c for c in configs if c.enabled]  # a disabled destination runs nothing: not judged
    linked = {c.id for c in running if (states.get(c.id) or {}).get("connected")}
    faulted, unknown, down = [], [], []
    for bus in gateway.bus_stats():
        if bus.get("channel") == "down":
            down.append(bus["id"])
        for dev in bus.get("devices", []):
            if dev.get("online"):
                continue
            if dev.get("consecutive_failures") or dev.get("errors"):
                faulted.append(dev["id"])
            else:
                unknown.append(dev["id"])
    return {
        "uplink": None if up is None else bool(up.get("connected")),
        "destinations_down": sorted(c.id for c in running if c.id not in linked),
        "command_links": sorted(c.id for c in running if c.id in linked and _takes_commands(c)),
        "buses_down": sorted(down),
        "faulted": sorted(faulted),
        "unpolled": sorted(unknown),
    }


def _takes_commands(destination: UpstreamConfig) -> bool:
    """Whether commands (and a change back) can come through this destination once connected."""
    return destination.encoding == "json-v1" and destination.commands.enabled


def verdict(
    before: Mapping[str, Any],
    now: Mapping[str, Any],
    *,
    require_polled: bool = True,
    via: str | None = None,
) -> str | None:
    """None when `now` is healthy compared with `before`, else why not. `require_polled`: devices
    not polled yet count against it (the first half of the window; a device that reports rarely,
    a radio sensor, must not fail a change by keeping quiet). `via`: the destination the change
    came through; it must still carry commands, connected, or the platform that sent the change
    could not reach the gateway any more (not even to send it back)."""
    if via is not None:
        if via not in now.get("command_links", ()):
            return f"uplink not connected: destination {via} (the change came through it)"
    elif now["uplink"] is False:  # a change from before `via` was recorded: the command uplink
        return "uplink not connected"
    new_unlinked = sorted(set(now.get("destinations_down", [])) - set(before.get("destinations_down", [])))
    if new_unlinked:  # a destination added or changed (its own credentials) that does not connect
        return f"destinations not connected: {', '.join(new_unlinked)}"
    new_down = sorted(set(now["buses_down"]) - set(before.get("buses_down", [])))
    if new_down:
        return f"buses down: {', '.join(new_down)}"
    new_faults = sorted(set(now["faulted"]) - set(before.get("faulted", [])))
    if new_faults:
        return f"devices faulted: {', '.join(new_faults[:20])}"
    if require_polled and now["unpolled"]:
        return f"devices not polled yet: {', '.join(now['unpolled'][:20])}"
    return None


def prepare_start(config_path: Path) -> str | None:
    """Before `citynerve run` loads its config: count a start of a pending (unconfirmed) config;
    past MAX_PENDING_STARTS, put its snapshot back (a config that keeps the gateway from running
    long enough to confirm is a bad config). Returns what was done, for the log."""
    hist = ConfigHistory(config_path)
    try:
        pending = hist.pending()
        if pending is None or pending.get("state") == "reverted":
            return None
        starts = int(pending.get("starts", 0)) + 1
        unwritten = pending.get("state") == UNWRITTEN
        if starts <= MAX_PENDING_STARTS and not unwritten:
            hist.set_pending({**pending, "starts": starts})
            return f"config {pending.get('version')} pending confirmation (start {starts})"
        text, profiles = hist.snapshot_state(hist.find_seq(int(pending["snapshot"])))
        hist.write_state(text, profiles)
        prev = pending.get("previous") or {}
        hist.set_current(str(prev.get("version", "local")), state_digest(text, profiles))
        if unwritten:
            reason = f"its write failed ({pending.get('reason')})"
        else:
            reason = f"not confirmed after {MAX_PENDING_STARTS} starts"
        hist.note("reverted", str(pending.get("version")), str(pending.get("sha256")), reason=reason)
        hist.set_pending({**pending, "state": "reverted", "reason": reason, "starts": starts})
        return f"config {pending.get('version')} reverted: {reason}"
    except (HistoryError, OSError, ValueError, KeyError) as err:
        return f"pending config change unreadable: {err}"


def change_waiting(config_path: Path) -> bool:
    """At start, before the credentials load: a remote change applied before the restart waits for
    its health check (what it replaced, a rotated TLS client pair, is kept for a revert). An
    unreadable marker counts as waiting: keeping a key is safe, deleting one may not be."""
    try:
        pending = ConfigHistory(config_path).pending()
    except (HistoryError, OSError):
        return True
    return pending is not None and pending.get("state") != "reverted"


class RemoteConfig:
    """The gateway's side of remote configuration: its remote actions and the health check."""

    def __init__(
        self,
        gateway: Reconfigurable,
        *,
        events: Callable[[Event], None],
        spawn: Callable[[Any, str], Any],
        clock: Clock = SYSTEM_CLOCK,
        rotation_waiting: Callable[[], str | None] = lambda: None,
    ) -> None:
        self.gateway = gateway
        self._rotation_waiting = rotation_waiting  # the credentials': why a change must wait, or None
        self.history = ConfigHistory(gateway.config.source)
        self._events = events
        self._spawn = spawn  # starts a task in the gateway's task group
        self._clock = clock
        self.chunks = ChunkAssembler(clock=clock.monotonic)
        self._busy = False
        self.last: dict[str, Any] | None = None
        self.pending: dict[str, Any] | None = None
        try:
            self.current = self.history.current()
        except (HistoryError, OSError) as err:
            log.error("config history unreadable: %s", err)
            self.current = {"version": "local", "sha256": ""}

    # -- status ----------------------------------------------------------------------------------

    def refresh(self) -> None:
        """After a reload: the version and hash of what is on disk now (a local `config rollback`),
        unless a remote change is in progress (its own bookkeeping holds)."""
        if self.pending is not None or self._busy:
            return
        try:
            self.current = self.history.current()
        except (HistoryError, OSError) as err:
            log.error("config history unreadable: %s", err)

    @property
    def waiting(self) -> bool:
        """A change is being written, or waits for its health check (a TLS rotation must wait)."""
        return self._busy or self.pending is not None

    def snapshot(self) -> dict[str, Any]:
        """For status and the birth message."""
        out: dict[str, Any] = {"version": self.current["version"], "sha256": self.current["sha256"]}
        if self.pending is not None:
            out["pending"] = {
                k: self.pending.get(k) for k in ("version", "sha256", "command_id", "confirm_s", "applied")
            }
        if self.last is not None:
            out["last"] = self.last
        return out

    # -- remote actions ----------------------------------------------------------------------------

    def actions(self) -> dict[str, RemoteAction]:
        return {
            "config_chunk": RemoteAction(Permission.CONFIGURE, self._chunk),
            "config_apply": RemoteAction(Permission.CONFIGURE, self._apply),
            "config_get": RemoteAction(Permission.READ, self._get),
        }

    async def _chunk(self, args: dict[str, Any], caller: Caller) -> Mapping[str, Any]:
        upload, index, count, data = (args.get(k) for k in ("upload", "index", "count", "data"))
        if not isinstance(upload, str) or not 0 < len(upload) <= 64:
            raise CommandRejectedError(RejectReason.BAD_VALUE, "upload must be a short string")
        if not _is_int(index) or not _is_int(count) or not isinstance(data, str):
            raise CommandRejectedError(
                RejectReason.BAD_VALUE, "index, count (int) and data (base64) are required"
            )
        assert isinstance(index, int) and isinstance(count, int)
        try:
            return self.chunks.add(upload, index, count, data)
        except DocumentError as err:
            raise CommandRejectedError(RejectReason.BAD_VALUE, err.detail) from err

    async def _get(self, args: dict[str, Any], caller: Caller) -> Chunked:
        from citynerve.gateway.fleet import chunked

        text, profiles = self.history.read_config(), self.history.read_profiles()
        shown = redacted(text)
        if profiles:  # as a whole document carries them: [profiles.<id>] tables
            shown += "\n" + tomli_w.dumps({"profiles": {k: tomllib.loads(v) for k, v in profiles.items()}})
        out = chunked(shown.encode("utf-8"), caller.command_id)
        summary = {
            **out.summary,
            "version": self.current["version"],
            "config_sha256": sha256_text(text),
            "profiles": sorted(profiles),
        }
        return Chunked(summary, out.parts)

    async def _apply(self, args: dict[str, Any], caller: Caller) -> Mapping[str, Any]:
        def bad(detail: str) -> CommandRejectedError:
            return CommandRejectedError(RejectReason.BAD_VALUE, detail)

        version, mode = args.get("version"), args.get("mode", "replace")
        confirm_s = args.get("confirm_s", DEFAULT_CONFIRM_S)
        if not isinstance(version, str) or not 0 < len(version) <= 64 or set(version) - _VERSION_CHARS:
            raise bad("version must be a short string (letters, digits, . _ : -)")
        if version == "local":
            raise bad("version 'local' is reserved for configs written by hand")
        if (
            isinstance(confirm_s, bool)
            or not isinstance(confirm_s, int | float)
            or not math.isfinite(confirm_s)
        ):
            raise bad("confirm_s must be a number")
        if not MIN_CONFIRM_S <= confirm_s <= MAX_CONFIRM_S:
            raise bad(f"confirm_s must be in {MIN_CONFIRM_S:g}..{MAX_CONFIRM_S:g}")
        # Before the upload is taken: "send the change after it" must find its chunks still there.
        if self._busy or self.pending is not None:
            raise bad("another config change is waiting for its health check")
        if (rotating := self._rotation_waiting()) is not None:
            raise bad(rotating)
        if "document" in args:
            doc = args["document"]
            if not isinstance(doc, str):
                raise bad("document must be a string")
            data = doc.encode("utf-8")
        elif isinstance(args.get("upload"), str):
            try:
                data = self.chunks.take(args["upload"])
            except DocumentError as err:
                raise bad(err.detail) from err
        else:
            raise bad("give the document inline (document) or as chunks (upload)")
        self._busy = True
        try:
            check_hash(data, args.get("sha256"))
            running, running_profiles = self.history.read_config(), self.history.read_profiles()
            text, profiles = candidate(running, running_profiles, data, str(mode))
            digest = state_digest(text, profiles)
            try:
                cfg = await asyncio.to_thread(
                    validate, self.gateway.config.source, text, self.gateway.config, profiles
                )
            except ConfigError as err:
                detail = f"invalid config: {issues_text(err)}"
                self._report("rejected", version, digest, caller, detail, Severity.WARNING)
                raise bad(detail) from err
            if digest == state_digest(running, running_profiles):
                self.current = {"version": version, "sha256": digest}
                self.history.set_current(version, digest)
                return {"version": version, "sha256": digest, "state": "unchanged"}
            # Up front: the health check would confirm it (the destination still connects).
            if (locked := await asyncio.to_thread(lockout, self.gateway.config, cfg, caller)) is not None:
                self._report("rejected", version, digest, caller, locked, Severity.WARNING)
                raise bad(locked)
            snap = self.history.snapshot(running, self.current["version"], running_profiles)
            pending = {
                "command_id": caller.command_id,
                "by": caller.key_id,
                "via": caller.destination,
                "version": version,
                "sha256": digest,
                "previous": dict(self.current),
                "snapshot": snap.seq,
                "confirm_s": float(confirm_s),
                "baseline": health(self.gateway),
                "starts": 0,
                "state": "pending",
            }
            try:
                self.history.set_pending(pending)
                self.history.write_state(text, profiles)
                self.history.set_current(version, digest)
                self.history.note("applied", version, digest, by=f"platform key {caller.key_id}")
            except (HistoryError, OSError) as err:
                self._put_back(running, running_profiles, pending, err)
                raise
        except DocumentError as err:
            raise bad(err.detail) from err
        except (HistoryError, OSError) as err:
            raise CommandRejectedError(RejectReason.INTERNAL, f"cannot write the config: {err}") from err
        finally:
            self._busy = False
        self.pending = pending
        self.current = {"version": version, "sha256": digest}
        self._spawn(self._apply_and_check(pending), "config.apply")
        log.warning(
            "config %s (%s) written by platform key %s; applying", version, digest[:12], caller.key_id
        )
        return {"version": version, "sha256": digest, "state": "pending", "confirm_s": float(confirm_s)}

    def _put_back(
        self, text: str, profiles: Mapping[str, str], pending: dict[str, Any], err: Exception
    ) -> None:
        """A write of a new config failed half way (disk full, I/O error): the previous config and
        managed profiles go back, and the pending marker with them (else the next start would check
        the mixed state and confirm a change the platform was told failed). When that fails too,
        the marker says so and the next start puts the snapshot back before loading the config."""
        version, digest = str(pending["version"]), str(pending["sha256"])
        try:
            self.history.put_back(text, profiles)
            self.history.set_current(self.current["version"], self.current["sha256"])
            self.history.clear_pending()
            self.history.note("failed", version, digest, reason=f"cannot write the config: {err}")
            log.error("config %s: cannot write it (%s); the previous config is in place", version, err)
        except (HistoryError, OSError) as again:
            log.critical(
                "config %s: cannot write it (%s) and cannot put the previous config back (%s): the "
                "config and its profiles may be mixed; the next start puts snapshot %s back",
                version,
                err,
                again,
                pending["snapshot"],
            )
            try:
                self.history.set_pending({**pending, "state": UNWRITTEN, "reason": str(err)})
            except (HistoryError, OSError) as third:
                log.critical("config %s: cannot mark the failed write either: %s", version, third)

    # -- applying and the health check ---------------------------------------------------------------

    async def resume(self) -> None:
        """At start: a pending change (the process restarted in the middle) is checked again, or
        reported when prepare_start reverted it."""
        try:
            pending = self.history.pending()
        except HistoryError as err:
            log.error("%s", err)
            return
        if pending is None:
            return
        if pending.get("state") == "reverted":
            self.history.clear_pending()
            await self._verdict(pending, str(pending.get("reason")), reverted=True)
            return
        self.pending = pending
        log.warning("config %s pending confirmation after a restart: checking health", pending.get("version"))
        await self._check(pending, self._clock.monotonic())

    async def _apply_and_check(self, pending: dict[str, Any]) -> None:
        await asyncio.sleep(APPLY_DELAY_S)
        started = self._clock.monotonic()
        try:
            applied = await self._apply_file()
        except (GatewayError, OSError) as err:
            await self._revert(pending, f"cannot apply: {err}")
            return
        if applied == "restart":
            return  # the next start checks health (resume)
        pending["applied"] = applied
        await self._check(pending, started)

    async def _apply_file(self) -> str:
        """Apply the config file now in place: `hot`, `uplink` or `restart` (requested)."""
        outcome = await self.gateway.reload()
        needs = set(outcome.get("restart_needed_for", []))
        if needs - HOT_SECTIONS:
            log.warning("config change needs a restart (%s): restarting", ", ".join(sorted(needs)))
            self.gateway.request_restart(0.5)
            return "restart"
        if "upstream" in needs:
            await self.gateway.restart_uplink()
            return "uplink"
        return "hot"

    async def _check(self, pending: dict[str, Any], started: float) -> None:
        deadline = started + float(pending.get("confirm_s", DEFAULT_CONFIRM_S))
        baseline = pending.get("baseline") or {}
        why: str | None = "no verdict"
        while True:
            now = self._clock.monotonic()
            window = float(pending.get("confirm_s", DEFAULT_CONFIRM_S))
            polled = now - started < window / 2
            why = verdict(baseline, health(self.gateway), require_polled=polled, via=pending.get("via"))
            if why is None and now - started >= SETTLE_S:
                break
            if now >= deadline:
                await self._revert(
                    pending, f"health not confirmed within {pending.get('confirm_s'):g} s: {why}"
                )
                return
            await asyncio.sleep(0.5)
        self.history.clear_pending()
        self.history.note("confirmed", str(pending["version"]), str(pending["sha256"]))
        self.pending = None
        try:  # what the change replaced may go now (else at the next start)
            await self.gateway.config_confirmed()
        except Exception:  # the verdict goes out all the same
            log.exception(
                "config %s: confirmed; what it replaced stays until a start", pending.get("version")
            )
        await self._verdict(pending, "healthy", reverted=False)

    async def _revert(self, pending: dict[str, Any], reason: str) -> None:
        log.error("config %s: %s; reverting to %s", pending.get("version"), reason, pending.get("previous"))
        try:
            text, profiles = self.history.snapshot_state(self.history.find_seq(int(pending["snapshot"])))
            self.history.write_state(text, profiles)
            prev = pending.get("previous") or {}
            self.current = {
                "version": str(prev.get("version", "local")),
                "sha256": state_digest(text, profiles),
            }
            self.history.set_current(self.current["version"], self.current["sha256"])
            self.history.note("reverted", str(pending["version"]), str(pending["sha256"]), reason=reason)
            self.history.set_pending({**pending, "state": "reverted", "reason": reason})
            applied = await self._apply_file()
        except (GatewayError, OSError, KeyError, ValueError) as err:
            log.exception("config %s: the revert failed", pending.get("version"))
            reason = f"{reason}; the revert failed: {err}"
            applied = "failed"
        if applied == "restart":
            return  # reported after the restart (resume sees state reverted)
        self.history.clear_pending()
        self.pending = None
        await self._verdict(pending, reason, reverted=True)

    async def _verdict(self, pending: Mapping[str, Any], reason: str, *, reverted: bool) -> None:
        what = "reverted" if reverted else "confirmed"
        version, digest = str(pending.get("version")), str(pending.get("sha256"))
        self.last = {
            "command_id": pending.get("command_id"),
            "version": version,
            "sha256": digest,
            "outcome": what,
            "reason": reason,
            "at": round(self._clock.wall(), 3),
        }
        self.pending = None
        caller = Caller(str(pending.get("by", "?")), str(pending.get("command_id", "")))
        self._report(what, version, digest, caller, reason, Severity.WARNING if reverted else Severity.INFO)
        result = CommandResult(
            str(pending.get("command_id")),
            "config_apply",
            CommandOutcome.FAILED if reverted else CommandOutcome.OK,
            RejectReason.DEVICE_ERROR if reverted else None,
            reason if reverted else "",
            result={
                "version": version,
                "sha256": digest,
                "state": what,
                "reason": reason,
                "running": self.current,
            },
        )
        # The platform hears the verdict as a second result of the same command, once the uplink
        # (the old one, after a revert) is connected; the event is the durable record.
        self._spawn(self._publish_late(result, pending.get("via")), "config.result")

    async def _publish_late(self, result: CommandResult, via: str | None) -> None:
        end = time.monotonic() + 600.0
        while time.monotonic() < end:
            try:  # back through the destination the change came through (its platform)
                if await self.gateway.publish_result(result, via):
                    return
            except Exception as err:  # a broken link: try again while the window lasts
                log.debug("config result not published yet: %s", err)
            await asyncio.sleep(1.0)
        log.warning(
            "config result for %s not published: no uplink for 600 s (the event carries it)",
            result.command_id,
        )

    def _report(
        self, what: str, version: str, digest: str, caller: Caller, reason: str, severity: Severity
    ) -> None:
        attrs = {"what": what, "version": version, "sha256": digest, "command_id": caller.command_id}
        if reason:
            attrs["reason"] = reason[:2000]
        attrs["who"] = f"platform key {caller.key_id}"
        log.warning("config %s %s: %s", version, what, reason)
        self._events(
            Event(
                self.gateway.config.gateway.id,
                CONFIG_KIND,
                EventState.RAISED,
                severity,
                self._clock.wall(),
                CONFIG_RULE,
                None,
                f"config {version} {what}" + (f": {reason[:200]}" if reason else ""),
                attrs,
                one_shot=True,
            )
        )


def _is_int(v: object) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)
