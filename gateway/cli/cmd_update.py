"""`citynerve update ...`: A/B updates from offline bundles, with automatic rollback."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import click

from citynerve.gateway.cli._common import (
    EXIT_FAILED,
    FiniteRange,
    config_option,
    fail,
    json_option,
    print_json,
)
from citynerve.gateway.cli._groups import main

DEFAULT_ROOT = "/opt/citynerve"


@main.group()
def update() -> None:
    """Install a release bundle beside the running one, switch, and roll back if it is not healthy."""


def _root_option(f: Any) -> Any:
    return click.option(
        "--root",
        type=click.Path(file_okay=False, path_type=Path),
        default=DEFAULT_ROOT,
        envvar="CITYNERVE_ROOT",
        show_default=True,
        show_envvar=True,
        help="Install root: releases/<version>, the current and known-good links, update/state.json.",
    )(f)


def _switch_options(f: Any) -> Any:
    f = click.option(
        "--service",
        "service_kind",
        type=click.Choice(["systemd", "process"]),
        default="systemd",
        show_default=True,
        help="What runs the gateway: the systemd unit, or a detached `citynerve run` (no systemd).",
    )(f)
    f = click.option("--deadline", type=FiniteRange(1, 86400), default=120.0, show_default=True,
                     help="Seconds the new release has to become healthy.")(f)  # fmt: skip
    f = click.option("--settle", type=FiniteRange(0, 3600), default=5.0, show_default=True,
                     help="Seconds between the two health checks that confirm it.")(f)  # fmt: skip
    f = click.option("--no-wait", is_flag=True, help="Return once the watchdog has taken over.")(f)
    f = click.option("--request-id", default="", help="Id of the platform command that asked.")(f)
    return f


def _service(kind: str, root: Path, config: Path) -> Any:
    from citynerve.gateway.release.service import ProcessService, SystemdService

    return ProcessService(root, config.resolve()) if kind == "process" else SystemdService()


def _report(state: dict[str, Any], as_json: bool, *, waited: bool) -> None:
    if as_json:
        print_json(state)
    else:
        click.echo(f"{state.get('phase')}: {state.get('from')} -> {state.get('to')}")
        if state.get("reason"):
            click.echo(f"  {state['reason']}")
    # Waited for: only a confirmed release is success. Not waited for: handed to the watchdog.
    if state.get("phase") not in (("confirmed",) if waited else ("confirmed", "switching", "confirming")):
        sys.exit(EXIT_FAILED)


@update.command()
@click.argument("bundle", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@_root_option
@config_option
@_switch_options
@json_option
def apply(
    bundle: Path, root: Path, config_path: Path, service_kind: str, deadline: float, settle: float,
    no_wait: bool, request_id: str, as_json: bool,
) -> None:  # fmt: skip
    """Verify BUNDLE (signature, hashes), install it beside the running release, switch, restart.

    A watchdog outside the new release checks its health (service up, buses polling, outbox
    writable, uplink connected if it was) and switches back by itself if it is not healthy by the
    deadline. Config and outbox are not touched. Exit 0 only when the new release is confirmed.
    """
    from citynerve.gateway.release.update import UpdateError, apply

    try:
        service = _service(service_kind, root, config_path)
        state = apply(bundle, root=root, config=config_path, service=service,
                      deadline_s=deadline, settle_s=settle, wait=not no_wait,
                      request_id=request_id)  # fmt: skip
    except (UpdateError, OSError) as err:  # OSError: not root, disk full, missing root folder
        fail(str(err))
    _report(state, as_json, waited=not no_wait)


@update.command()
@_root_option
@config_option
@_switch_options
@click.option("--to", "to", help="Release to go back to (default: the one before the current).")
@json_option
def rollback(
    root: Path, config_path: Path, service_kind: str, deadline: float, settle: float, no_wait: bool,
    request_id: str, to: str | None, as_json: bool,
) -> None:  # fmt: skip
    """Switch back to the previous release (installed beside), under the same health watchdog."""
    from citynerve.gateway.release.update import UpdateError, rollback

    try:
        state = rollback(root=root, config=config_path, service=_service(service_kind, root, config_path),
                         to=to, deadline_s=deadline, settle_s=settle, wait=not no_wait)  # fmt: skip
    except (UpdateError, OSError) as err:  # OSError: not root, disk full, missing root folder
        fail(str(err))
    _report(state, as_json, waited=not no_wait)


@update.command()
@_root_option
@json_option
def status(root: Path, as_json: bool) -> None:
    """Installed releases, the current and known-good ones, and the last update's state."""
    from citynerve.gateway.release.update import status as update_status

    result = update_status(root)
    if as_json:
        print_json(result)
        return
    click.echo(f"current: {result['current']}  known-good: {result['known_good']}")
    click.echo(f"installed: {', '.join(result['releases']) or '-'}")
    upd = result["update"]
    if upd.get("phase") != "idle":
        click.echo(
            f"last update: {upd.get('phase')} {upd.get('from')} -> {upd.get('to')} {upd.get('reason', '')}"
        )


@update.command(hidden=True)
@_root_option
def watch(root: Path) -> None:
    """The update watchdog (started by apply/rollback, detached; not for people)."""
    from citynerve.gateway.release.update import watch as run_watch

    state = run_watch(root)
    sys.exit(0 if state.get("phase") == "confirmed" else EXIT_FAILED)


@update.command()
@_root_option
@json_option
def resume(root: Path, as_json: bool) -> None:
    """Boot hook: roll back an update that a power cut interrupted before it was confirmed.

    Run from the known-good release before the service starts (the unit's ExecStartPre).
    """
    from citynerve.gateway.release.update import resume as run_resume

    state = run_resume(root)
    if as_json:
        print_json(state)
    else:
        click.echo(f"{state.get('phase')}: {state.get('reason', '')}")


@update.command()
def key() -> None:
    """Print the release public key installed with this gateway (PEM): bundles must verify against it."""
    from citynerve.gateway import shipped

    sys.stdout.buffer.write(shipped.release_public_key())
