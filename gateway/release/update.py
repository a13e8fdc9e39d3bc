"""A/B updates with rollback: releases side by side, an atomic switch, a health deadline, and a
watchdog outside the new release that switches back by itself.

Layout under the install root (default /opt/citynerve):

    releases/<version>/     one venv per release (gateway/release/bundle.py installs it)
    current -> releases/V   what the service runs (the unit's ExecStart goes through this link)
    known-good -> releases/V  the last release confirmed healthy; the boot hook runs from it
    update/state.json       the update in progress or the last one (written atomically)

Steps of `apply` and what a power cut at each leaves (the boot hook `citynerve update resume`,
run from `known-good` before the service starts, finishes the job):

1. verify the bundle, install it beside the others: nothing switched; an incomplete release folder
   has no info file and is removed by the next install.
2. state "switching" (from, to, deadline) written; the watchdog is started from the OLD release's
   own folder, detached (a transient systemd unit, or a detached process).
3. the watchdog renames a new `current` link over the old one (atomic) -> "confirming", restarts the
   service and checks its health until the deadline. Power cut here: the boot hook sees an update
   that was never confirmed on this boot and switches `current` back before the service starts.
4. healthy twice, `settle_s` apart -> `known-good` switched too (power cut: the boot hook confirms)
   -> "confirmed" -> the outbox copy deleted (only then: a confirmed update never needs it).
   Not healthy by the deadline (crash loop, hang, buses or uplink down) -> "rolling-back": stop,
   `current` back, the outbox restored if the new release migrated it beyond what the old one reads,
   start -> "rolled-back". Power cut here: the boot hook completes the same rollback. A rollback
   never switches back to a release that cannot open the outbox (migrated, and no copy left): it
   stays on the new release, "failed" with the reason.

A watchdog killed on its own (the box runs on) is noticed by the next update command, a waiting
`apply`, and the running gateway (`recover_interrupted`): the update is finished with the service
stopped first, or by a new watchdog when the caller is the service itself.

Config and outbox are never written by the switch. The outbox is copied (SQLite backup API) before
the switch only when the new release's schema is newer than the file's; see docs/installer-guide.md.
"""

from __future__ import annotations

import contextlib
import fcntl
import logging
import os
import shutil
import sqlite3
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

from citynerve.gateway import __version__, shipped
from citynerve.gateway.api import ConfigError
from citynerve.gateway.release.bundle import (
    RELEASE_INFO,
    BundleError,
    install_release,
    release_info,
    switch_link,
    unpack,
    verify,
)
from citynerve.gateway.release.health import baseline_of, gateway_status, wait_healthy
from citynerve.gateway.release.outbox_copy import (
    copy_outbox,
    restore_outbox,
    restore_reason,
    schema_version,
    set_aside,
    written_after,
)
from citynerve.gateway.release.service import ServiceManager, service_from
from citynerve.gateway.release.state import (
    IN_PROGRESS,
    TERMINAL,
    UpdateError,
    boot_id,
    read_state,
    release_version,
    set_phase,
    started_elsewhere,
    watchdog_alive,
    watching,
    write_state,
)

if TYPE_CHECKING:
    from citynerve.gateway.config import GatewayConfig

log = logging.getLogger(__name__)

INSTALL_FACTOR = 7  # room to install a bundle: its unpacked copy and the release (a venv ~5.5 x it)


@contextlib.contextmanager
def _lock(root: Path) -> Iterator[None]:
    """One update command at a time on a box."""
    if not (root / "releases").is_dir():
        raise UpdateError(f"{root} is not an install root (no releases/): install from a bundle first")
    (root / "update").mkdir(exist_ok=True)
    with (root / "update" / "lock").open("w") as f:
        try:
            fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise UpdateError("another update command is running") from None
        yield


# -- outbox -------------------------------------------------------------------------------------


def _running_config(config: Path) -> GatewayConfig:
    """The config the gateway runs: the watchdog needs its control socket and outbox. Checked
    before anything is installed or switched; a config that does not load is an UpdateError that
    lists its issues (file, key path, what is wrong)."""
    from citynerve.gateway.config import load_config

    try:
        return load_config(config)
    except ConfigError as err:
        issues = "; ".join(str(i) for i in err.issues[:5])
        more = f" (and {len(err.issues) - 5} more)" if len(err.issues) > 5 else ""
        raise UpdateError(
            f"the config does not load, so the gateway's health cannot be checked; nothing was changed "
            f"(`citynerve config check {config}`): {issues}{more}"
        ) from None


def _outbox_file(cfg: GatewayConfig) -> Path | None:
    store = getattr(cfg, "store", None)
    return Path(store.path) if store is not None else None


def _release_schema(release: Path) -> int:
    """The newest outbox schema a release's code knows (asked of that release's own Python)."""
    code = "import citynerve.gateway.store._schema as s, citynerve.gateway.store; print(s.latest_version())"
    # -I: isolated, so neither the working folder nor PYTHONPATH can put other code first.
    proc = subprocess.run([str(release / "bin" / "python"), "-I", "-c", code], capture_output=True, text=True)
    if proc.returncode != 0:
        raise UpdateError(f"cannot ask {release} for its outbox schema: {proc.stderr.strip()[-300:]}")
    return int(proc.stdout.strip())


def min_free_bytes(cfg: GatewayConfig) -> int:
    """Free space an update leaves on the disk: `[update] min_free_bytes`, or its default."""
    from citynerve.gateway.release.config import UpdateConfig

    return int((getattr(cfg, "update", None) or UpdateConfig()).min_free_bytes)


# -- commands -----------------------------------------------------------------------------------


def apply(
    bundle: Path, *, root: Path, config: Path, service: ServiceManager,
    deadline_s: float = 120.0, settle_s: float = 5.0, wait: bool = True, request_id: str = "",
    in_service: bool = False,
) -> dict[str, Any]:  # fmt: skip
    """Verify and install `bundle` beside the running release, then switch to it under a watchdog.

    Returns the final state (with `wait`) or the state once the watchdog has taken over.
    `in_service`: called from the gateway's own process (platform_apply), which must not stop it.
    """
    with _lock(root):
        _settle_interrupted(root, in_service=in_service)
        cfg = _running_config(config)  # before the bundle is installed beside the running release
        prune_releases(root)
        _check_room(bundle, root, keep_free=min_free_bytes(cfg))
        incoming = root / "update" / "incoming"
        shutil.rmtree(incoming, ignore_errors=True)
        incoming.mkdir(parents=True)
        try:
            folder = unpack(bundle, incoming)
            manifest = verify(folder, shipped.release_public_key())
            extras = tuple((release_info(root / "current") or {}).get("extras") or ())
            install_release(folder, manifest, root, extras=extras)
        except BundleError as err:
            raise UpdateError(f"refused {bundle}: {err}") from None
        finally:
            shutil.rmtree(incoming, ignore_errors=True)
        return _switch(root, manifest.version, config=config, cfg=cfg, service=service,
                       deadline_s=deadline_s, settle_s=settle_s, wait=wait, why="apply",
                       request_id=request_id)  # fmt: skip


def rollback_target(root: Path, state: dict[str, Any]) -> str | None:
    """The release `rollback` goes back to: the one the current release was updated from."""
    current = release_version(root / "current")
    past = reversed(state.get("history", []))
    return next((h["from"] for h in past if h.get("to") == current and h.get("from")), None)


def prune_releases(root: Path, *, running: Path | None = None) -> list[str]:
    """Remove the releases no link, rollback or process needs, before an update installs another
    (80 MB each: a box updated monthly by its platform, never visited, would fill its SD card).
    Kept: `current`, `known-good`, the release to roll back to, and the one whose code runs this
    (`running`, default this interpreter's venv). Also removed: folders an install or a removal
    cut short (no info file). Called with no update in progress, under the update lock."""
    releases = root / "releases"
    if not releases.is_dir():
        return []
    keep = {release_version(root / "current"), release_version(root / "known-good")}
    keep.add(rollback_target(root, read_state(root)))
    running = (running or Path(sys.prefix)).resolve()
    for link in ("current", "known-good"):  # an incomplete release a link names is not for us to touch
        keep.add(os.path.basename(os.path.realpath(root / link)))
    removed = []
    for folder in sorted(releases.iterdir()):
        if folder.name in keep or folder.is_symlink() or not folder.is_dir() or folder.resolve() == running:
            continue
        # The info file first: a removal cut short leaves an incomplete folder, never a release
        # that looks whole.
        (folder / RELEASE_INFO).unlink(missing_ok=True)
        shutil.rmtree(folder, ignore_errors=True)
        removed.append(folder.name)
        log.warning("removed release %s (not current, known-good or the one to roll back to)", folder.name)
    return removed


def _check_room(bundle: Path, root: Path, *, keep_free: int) -> None:
    """Refuse a bundle the disk has no room to install (and `keep_free` bytes besides): the running
    gateway writes its outbox on the same disk."""
    need, free = INSTALL_FACTOR * bundle.stat().st_size, shutil.disk_usage(root).free
    if free - keep_free < need:
        raise UpdateError(
            f"no room to install {bundle.name}: about {need} bytes ({INSTALL_FACTOR} x the bundle: its "
            f"unpacked copy and the release), {free} free and {keep_free} kept free (min_free_bytes); "
            f"nothing was installed"
        )


def rollback(
    *, root: Path, config: Path, service: ServiceManager, to: str | None = None,
    deadline_s: float = 120.0, settle_s: float = 5.0, wait: bool = True,
) -> dict[str, Any]:  # fmt: skip
    """Switch back to the release before the current one (or `to`), under the same watchdog."""
    with _lock(root):
        interrupted = read_state(root).get("phase") in IN_PROGRESS
        state = _settle_interrupted(root, in_service=False)
        if interrupted and to is None and state.get("phase") == "rolled-back":
            return state  # the update its watchdog left was the one to go back from: done
        current = release_version(root / "current")
        target = to or rollback_target(root, state)
        if target is None or target == current:
            raise UpdateError(f"no earlier release to roll back to (current: {current})")
        if release_info(root / "releases" / target) is None:
            raise UpdateError(f"release {target} is not installed")
        cfg = _running_config(config)
        return _switch(root, target, config=config, cfg=cfg, service=service,
                       deadline_s=deadline_s, settle_s=settle_s, wait=wait, why="rollback")  # fmt: skip


def _switch(
    root: Path, to: str, *, config: Path, cfg: GatewayConfig, service: ServiceManager, deadline_s: float,
    settle_s: float, wait: bool, why: str, request_id: str = "",
) -> dict[str, Any]:  # fmt: skip
    current = release_version(root / "current")
    if current is None:
        raise UpdateError(f"{root / 'current'} is not an installed release")
    if current == to:
        raise UpdateError(f"{to} is already the current release")
    socket = Path(cfg.control.socket)
    baseline = baseline_of(gateway_status(socket))
    outbox = _outbox_file(cfg)
    backup = None
    for stale in (root / "update").glob("outbox-before-*.db"):  # a cut before an earlier update's end
        stale.unlink()
    if outbox is not None and outbox.exists():
        try:
            file_schema = schema_version(outbox)
        except sqlite3.Error as err:
            raise UpdateError(f"cannot read the outbox {outbox}: {err}; nothing was switched") from err
        if _release_schema(root / "releases" / to) > file_schema:
            backup = root / "update" / f"outbox-before-{to}.db"
            copy_outbox(outbox, backup, keep_free=min_free_bytes(cfg))
    old = read_state(root)
    state = {
        "phase": "switching", "why": why, "request_id": request_id[:64],
        "from": current, "to": to, "started": time.time(),
        "deadline_s": deadline_s, "settle_s": settle_s, "config": str(config.resolve()),
        "socket": str(socket), "baseline": baseline, "service": service.describe(),
        "outbox": str(outbox) if outbox else None, "outbox_backup": str(backup) if backup else None,
        "from_schema": _release_schema(root / "releases" / current) if backup else None,
        "boot_id": boot_id(), "spawned": time.monotonic(), "watchdog_pid": None, "reason": "",
        "history": old.get("history", []),
    }  # fmt: skip
    write_state(root, state)
    service.spawn_watchdog(_watchdog_argv(root, current), root / "update" / "watch.log")
    if not wait:
        return state
    limit = time.monotonic() + 2 * deadline_s + 120
    while time.monotonic() < limit:
        state = read_state(root)
        if state.get("phase") in TERMINAL:
            return state
        if not watchdog_alive(root, state):  # killed: finished from here (not the service's process)
            return _settle_interrupted(root, in_service=False)
        time.sleep(0.5)
    return read_state(root)


def _watchdog_argv(root: Path, release: str) -> list[str]:
    """The watchdog runs from the old release's own folder, never through `current`."""
    return [str(root / "releases" / release / "bin" / "citynerve"), "update", "watch", "--root", str(root)]


def _settle_interrupted(root: Path, *, in_service: bool) -> dict[str, Any]:
    """Refuse while an update runs; finish one whose watchdog died before it goes on.

    "switching": the new release never ran, it is rolled back in place. Otherwise the service may
    run the unconfirmed release on the outbox: it is rolled back with the service stopped first, by
    a new watchdog when the caller is the service's own process (`in_service`: it would stop itself
    halfway), which refuses meanwhile.
    """
    state = read_state(root)
    if state.get("phase") not in IN_PROGRESS:
        return state
    if watchdog_alive(root, state):
        raise UpdateError(f"an update to {state.get('to')} is in progress")
    if in_service and state.get("phase") != "switching":
        done = recover_interrupted(root)
        if done is None and read_state(root).get("phase") not in IN_PROGRESS:
            return read_state(root)  # its watchdog ended it meanwhile
        raise UpdateError(
            f"an update to {state.get('to')} was interrupted (its watchdog is gone): "
            f"{done or 'left to the boot hook'}; send the update again once it has ended"
        )
    with watching(root, wait=False) as ours:
        state = read_state(root)
        if not ours:
            raise UpdateError(f"an update to {state.get('to')} is in progress")
        if state.get("phase") not in IN_PROGRESS:
            return state
        service = service_from(state.get("service") or {}, root)
        return _roll_back(root, state, service, "interrupted before the new release was confirmed (the "
                          "watchdog was killed)", restart=state["phase"] != "switching")  # fmt: skip


MAX_WATCHDOG_SPAWNS = 3  # for one update: one that dies at once every time is left to the boot hook


def recover_interrupted(root: Path) -> str | None:
    """Finish an update whose watchdog died while the box ran on (the running gateway checks for
    one; so does `update_start`): "switching" is rolled back in place (the new release never ran),
    "confirming" or "rolling-back" get a new watchdog, which restarts the service and confirms or
    rolls back with it stopped, as the first would have. Returns what was done, or None."""
    state = read_state(root)
    if state.get("phase") not in IN_PROGRESS or watchdog_alive(root, state):
        return None
    if state["phase"] == "switching":
        return f"rolled back: {resume(root).get('phase')}"
    spawns = int(state.get("watchdog_spawns") or 0)
    if spawns >= MAX_WATCHDOG_SPAWNS:
        return None
    state.update(boot_id=boot_id(), spawned=time.monotonic(), watchdog_pid=None, watch_lock=False,
                 watchdog_spawns=spawns + 1)  # fmt: skip
    write_state(root, state)
    service = service_from(state.get("service") or {}, root)
    try:
        service.spawn_watchdog(_watchdog_argv(root, state["from"]), root / "update" / "watch.log")
    except Exception as err:  # reported; the boot hook still rolls back
        return f"a new watchdog could not be started: {type(err).__name__}: {err}"
    return f"a new watchdog finishes it ({state['phase']})"


def watch(root: Path) -> dict[str, Any]:
    """The watchdog: switch, restart, confirm within the deadline or switch back. Runs detached,
    holding update/watch.lock: a second watchdog waits, then finds the update ended."""
    with watching(root, wait=True):
        return _watch(root)


def _watch(root: Path) -> dict[str, Any]:
    state = read_state(root)
    if state.get("phase") not in IN_PROGRESS:
        return state
    state.update(watchdog_pid=os.getpid(), boot_id=boot_id(), watch_lock=True)
    service = service_from(state.get("service") or {}, root)
    if state["phase"] == "rolling-back":  # a watchdog started again after one died rolling back
        return _roll_back(root, state, service, str(state.get("reason") or "rolling back"), restart=True)
    socket = Path(state["socket"])
    deadline = time.monotonic() + float(state["deadline_s"])
    try:
        if state["phase"] == "switching":
            switch_link(root / "current", f"releases/{state['to']}")
            set_phase(root, state, "confirming")
        else:
            write_state(root, state)
        service.restart()
        problems = wait_healthy(service, socket, version=state["to"], baseline=state["baseline"],
                                deadline=deadline, settle_s=float(state["settle_s"]))  # fmt: skip
    except Exception as err:  # whatever goes wrong here, the way out is the rollback below
        problems = [f"{type(err).__name__}: {err}"]
    if not problems:
        return _confirm(root, state, "healthy")
    return _roll_back(root, state, service, "; ".join(problems), restart=True)


def _confirm(root: Path, state: dict[str, Any], reason: str) -> dict[str, Any]:
    switch_link(root / "known-good", f"releases/{state['to']}")
    # Confirmed first, the copy removed after: a power cut between the two leaves a confirmed
    # update and a stale copy, never an unconfirmed one without its copy (rolled back at boot
    # to a release that cannot read the migrated outbox).
    set_phase(root, state, "confirmed", reason=reason)
    backup = state.get("outbox_backup")
    if backup:
        Path(backup).unlink(missing_ok=True)
    return state


def _unreadable_by_old(state: dict[str, Any]) -> str | None:
    """Why the release rolled back to could not open the outbox (None: it can): the new release
    migrated it beyond the old one's schema and the pre-update copy is gone."""
    backup, outbox, from_schema = state.get("outbox_backup"), state.get("outbox"), state.get("from_schema")
    if not (backup and outbox and isinstance(from_schema, int)) or Path(backup).exists():
        return None
    if not Path(outbox).exists():
        return None
    try:
        schema = schema_version(Path(outbox))
    except sqlite3.Error:
        return None  # not readable by either: the old release moves it aside as corrupt
    if schema <= from_schema:
        return None
    return (
        f"the outbox has schema {schema}, newer than {state['from']} reads ({from_schema}), and its "
        f"pre-update copy is gone"
    )


def _roll_back(
    root: Path, state: dict[str, Any], service: ServiceManager, reason: str, *, restart: bool
) -> dict[str, Any]:
    if state["phase"] == "confirming" and release_version(root / "known-good") == state["to"]:
        # Found healthy (known-good is switched only then), cut before "confirmed" was written: a
        # rollback would put the outbox copy back over what the new release stored since.
        return _confirm(root, state, "healthy; its confirmation was interrupted, finished now")
    stuck = _unreadable_by_old(state)
    if stuck is not None:
        return _stay(root, state, service, f"{reason}; not rolled back: {stuck}", restart=restart)
    set_phase(root, state, "rolling-back", reason=reason)
    if restart:
        with contextlib.suppress(Exception):
            service.stop()
    switch_link(root / "current", f"releases/{state['from']}")
    backup, outbox = state.get("outbox_backup"), state.get("outbox")
    restored = False
    why = None
    if backup and outbox:
        why = restore_reason(Path(str(outbox)), Path(str(backup)), int(state.get("from_schema") or 0))
    if why == "newer":
        age = written_after(Path(str(outbox)), Path(str(backup)))
        if age > float(state["deadline_s"]) + STALE_COPY_MARGIN_S:  # its watchdog had stopped long before
            reason += (
                f"; the outbox copy put back is {age:.0f} s older than the outbox's last write, past the "
                f"{float(state['deadline_s']):.0f} s deadline: what {state['to']} stored since is lost"
            )
    elif why is not None:  # not a database any more: the copy holds every row stored before the update
        reason += f"; the outbox was {why}: moved aside as {set_aside(Path(str(outbox)))}, the copy put back"
    if why is not None:
        restore_outbox(Path(str(backup)), Path(str(outbox)))
        restored = True
    old_healthy = None
    if restart:
        try:
            service.start()
            deadline = time.monotonic() + float(state["deadline_s"])
            baseline = {**state["baseline"], "uplink_connected": False}  # the old one gets time to connect
            old_healthy = not wait_healthy(service, Path(state["socket"]), version=state["from"],
                                           baseline=baseline, deadline=deadline,
                                           settle_s=float(state["settle_s"]))  # fmt: skip
        except Exception as err:
            reason += f"; restarting the old release: {err}"
    set_phase(root, state, "rolled-back", reason=reason, outbox_restored=restored, old_healthy=old_healthy)
    if backup:  # restored or not needed: as large as the outbox, not to be kept for good
        Path(backup).unlink(missing_ok=True)
    return state


STALE_COPY_MARGIN_S = 180.0  # a rollback's own time past the deadline: spawn, stop, restore


def _stay(
    root: Path, state: dict[str, Any], service: ServiceManager, reason: str, *, restart: bool
) -> dict[str, Any]:
    """Keep the new release: the old one would exit at every start on the migrated outbox (a dead
    box). The update ends `failed`; the reason says why it was not rolled back."""
    switch_link(root / "current", f"releases/{state['to']}")
    if restart:
        try:
            service.restart()
        except Exception as err:
            reason += f"; restarting {state['to']}: {err}"
    set_phase(root, state, "failed", reason=reason, outbox_restored=False, old_healthy=None)
    return state


def resume(root: Path) -> dict[str, Any]:
    """Boot hook (before the service starts, from `known-good`): finish an update a power cut or a
    killed watchdog interrupted. An update not confirmed by its watchdog is rolled back."""
    state = read_state(root)
    if state.get("phase") not in IN_PROGRESS or started_elsewhere(state):
        return state
    with watching(root, wait=False) as ours:
        state = read_state(root)  # as the watchdog that held the lock until now may have left it
        if not ours or state.get("phase") not in IN_PROGRESS:
            return state
        service = service_from(state.get("service") or {}, root)
        return _roll_back(root, state, service, "interrupted before the new release was confirmed "
                          "(power loss or the watchdog was killed)", restart=False)  # fmt: skip


def status(root: Path) -> dict[str, Any]:
    """Releases, links and the last update, for `citynerve update status --json`."""
    state = read_state(root)
    releases = root / "releases"
    installed = sorted(p.name for p in releases.iterdir() if release_info(p)) if releases.is_dir() else []
    return {
        "root": str(root),
        "running_code": __version__,
        "current": release_version(root / "current"),
        "known_good": release_version(root / "known-good"),
        "releases": installed,
        "update": {k: v for k, v in state.items() if k != "history"},
        "in_progress": state.get("phase") in IN_PROGRESS and watchdog_alive(root, state),
        "history": state.get("history", []),
    }


# -- platform-driven updates (the fleet transport calls these) ---------------------------------


def platform_apply(
    bundle: Path, *, root: Path, config: Path, service: ServiceManager, request_id: str,
    deadline_s: float = 120.0, settle_s: float = 5.0,
) -> dict[str, Any]:  # fmt: skip
    """Start an update that a signed, verified platform command asked for; returns at once.

    The same path as `citynerve update apply` (the bundle is verified against the release key
    again: the command's signature says who asked, the bundle's says what runs). The outcome is
    read later with `platform_report`, by `request_id`.
    """
    try:
        apply(bundle, root=root, config=config, service=service, deadline_s=deadline_s,
              settle_s=settle_s, wait=False, request_id=request_id, in_service=True)  # fmt: skip
    except UpdateError as err:
        return {"request_id": request_id, "phase": "failed", "reason": err.reason[:500]}
    return platform_report(root)


def platform_report(root: Path) -> dict[str, Any]:
    """The update's state for the platform: small, bounded, JSON (phase, versions, reason)."""
    state = read_state(root)
    phase = state.get("phase", "idle")
    if phase in IN_PROGRESS and not watchdog_alive(root, state) and state.get("watchdog_pid"):
        phase = "interrupted"
    return {
        "request_id": str(state.get("request_id") or ""),
        "phase": phase,
        "from": state.get("from"),
        "to": state.get("to"),
        "reason": str(state.get("reason") or "")[:500],
        "current": release_version(root / "current"),
        "known_good": release_version(root / "known-good"),
        "updated": state.get("updated"),
    }
