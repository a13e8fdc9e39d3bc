"""`citynerve config check | history | rollback | reload`."""

from __future__ import annotations

import asyncio
import getpass
import sys
import time
from pathlib import Path

import click

from citynerve.gateway.api import ConfigError
from citynerve.gateway.cli._common import (
    EXIT_FAILED,
    EXIT_INVALID,
    allow_insecure_secrets_option,
    config_option,
    console,
    err_console,
    esc,
    fail,
    issue_dict,
    json_option,
    load_or_exit,
    print_config_issues,
    print_json,
)
from citynerve.gateway.cli._groups import config
from citynerve.gateway.config import load_config


@config.command("check")
@click.argument("file", type=click.Path(dir_okay=False, path_type=Path))
@allow_insecure_secrets_option
@json_option
def check(file: Path, allow_insecure_secrets: bool, as_json: bool) -> None:
    """Validate a gateway config FILE and the profiles it uses.

    Exits 0 when valid. Otherwise exits 2 and lists every problem (not just the first) with the
    file, the key path (e.g. devices[3] (id 'wm-3').points.flow.scale) and what was expected.
    Settings that are allowed but weaken security (tls.verify = false, a password over plain
    mqtt://) are listed as warnings; secret files that group or others may read are refused
    unless --allow-insecure-secrets (or [security] allow_insecure_secret_files) makes them warnings.
    A secret file (password, key) that does not exist or cannot be read is refused.
    """
    try:
        cfg = load_config(file, allow_insecure_secrets=allow_insecure_secrets, secrets_must_exist=True)
    except ConfigError as err:
        if as_json:
            print_json({"valid": False, "issues": [issue_dict(i) for i in err.issues]})
        else:
            print_config_issues(err)
        sys.exit(EXIT_INVALID)
    points = sum(len(d.points) for d in cfg.devices)
    summary = {
        "valid": True,
        "gateway_id": cfg.gateway.id,
        "buses": len(cfg.buses),
        "devices": len(cfg.devices),
        "points": points,
        "profiles": sorted(cfg.profiles),
        "warnings": [issue_dict(i) for i in cfg.warnings],
    }
    if as_json:
        print_json(summary)
        return
    for warning in cfg.warnings:
        err_console.print(str(warning), style="yellow", highlight=False, markup=False, soft_wrap=True)
    console.print(
        f"[green]valid[/]: gateway {esc(cfg.gateway.id)}, {len(cfg.buses)} buses, "
        f"{len(cfg.devices)} devices, {points} points, "
        f"profiles: {esc(', '.join(sorted(cfg.profiles)) or 'none')}",
        highlight=False,
    )


@config.command("history")
@config_option
@json_option
def history(config_path: Path, as_json: bool) -> None:
    """List the config's snapshots and what happened to it (remote changes applied, confirmed,
    reverted; local rollbacks), from the history folder beside the config (FILE.history/)."""
    from citynerve.gateway.remoteconfig import ConfigHistory, HistoryError  # not for `config check`

    hist = ConfigHistory(config_path)
    try:
        current, snaps, events, pending = hist.current(), hist.snapshots(), hist.log(), hist.pending()
    except (HistoryError, OSError) as err:
        fail(str(err))
    if as_json:
        print_json(
            {"current": current, "pending": pending, "snapshots": [s.to_dict() for s in snaps], "log": events}
        )
        return
    console.print(
        f"running: version {current['version']} sha256 {current['sha256'][:16]}",
        highlight=False,
        markup=False,
    )
    if pending:
        console.print(
            f"pending health check: version {pending.get('version')}", highlight=False, markup=False
        )
    for s in reversed(snaps):
        console.print(
            f"snapshot {s.seq:4d}  {_when(s.saved_at)}  version {s.version}  {s.sha256[:16]}",
            highlight=False,
            markup=False,
        )
    for e in reversed(events[-20:]):
        why = f"  ({e['reason']})" if e.get("reason") else ""
        who = f"  by {e['by']}" if e.get("by") else ""
        console.print(
            f"{_when(e['at'])}  {e['what']:9}  version {e['version']}{who}{why}",
            highlight=False,
            markup=False,
        )


@config.command("rollback")
@click.argument("version", required=False)
@config_option
@click.option(
    "--no-reload", is_flag=True, help="Only write the file; do not ask a running gateway to reload."
)
@json_option
def rollback(version: str | None, config_path: Path, no_reload: bool, as_json: bool) -> None:
    """Put back the snapshot of VERSION (default: the newest snapshot) as the config. The snapshot is
    checked first, as `config check` would (one that no longer loads is refused, exit 2, and nothing
    changes); the config it replaces is snapshotted. A running gateway is then asked to reload;
    sections a reload cannot change ([upstream], [rules], ...) need `systemctl restart citynerve`."""
    from citynerve.gateway.commissioning import ask_reload
    from citynerve.gateway.remoteconfig import ConfigHistory, HistoryError
    from citynerve.gateway.remoteconfig.document import validate

    hist = ConfigHistory(config_path)
    try:
        running = load_config(config_path)
    except ConfigError:
        running = None  # a broken config is what a rollback mends: only the snapshot must load

    def check(text: str, profiles: dict[str, str]) -> None:
        validate(config_path, text, running, profiles)

    try:
        if hist.pending():
            fail("a remote config change is waiting for its health check; wait for its verdict")
        snap, before = hist.rollback(version, by=f"local user {getpass.getuser()}", check=check)
    except (HistoryError, OSError) as err:
        fail(str(err))
    except ConfigError as err:
        print_config_issues(err)
        err_console.print(f"{config_path} was not changed (the snapshot does not load)", markup=False)
        sys.exit(EXIT_INVALID)
    cfg = load_or_exit(config_path)
    report = None if no_reload else asyncio.run(ask_reload(Path(cfg.control.socket)))
    out = {
        "version": snap.version,
        "sha256": snap.sha256,
        "replaced": before,
        "reload": report.outcome.value if report else "not_asked",
        "restart_needed_for": list(report.restart_for) if report else [],
    }
    if as_json:
        print_json(out)
        return
    reloaded = report.message() if report else "not reloaded"
    console.print(
        f"config rolled back to version {snap.version} (was {before['version']}); {reloaded}", markup=False
    )
    if out["restart_needed_for"]:
        console.print(f"restart needed for: {', '.join(out['restart_needed_for'])}", markup=False)


@config.command("reload")
@config_option
@json_option
def reload_(config_path: Path, as_json: bool) -> None:
    """Ask the running gateway to re-read its config (what `systemctl reload citynerve` runs).

    The file is checked first: an invalid config exits 2 with every problem and the running gateway
    keeps its config. Exits 0 when the gateway took the change, 3 when it took it but names sections
    ([upstream], [rules], ...) that apply only after `systemctl restart citynerve`, and 1 when no
    gateway answers or it could not reload.
    """
    from citynerve.gateway.commissioning import ReloadOutcome, ask_reload

    cfg = load_or_exit(config_path)
    report = asyncio.run(ask_reload(Path(cfg.control.socket)))
    if as_json:
        print_json(report.to_dict())
    elif report.outcome is ReloadOutcome.RELOADED:
        console.print(report.message(), highlight=False, markup=False)
    else:
        err_console.print(report.message(), highlight=False, markup=False)
    sys.exit(_RELOAD_EXIT[report.outcome.value])


EXIT_RESTART_NEEDED = 3  # `config reload`: taken, but a section applies only after a restart
_RELOAD_EXIT = {
    "reloaded": 0,
    "restart_needed": EXIT_RESTART_NEEDED,
    "not_running": EXIT_FAILED,
    "unsupported": EXIT_FAILED,
    "failed": EXIT_FAILED,
}


def _when(ts: float) -> str:
    return time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(ts))
