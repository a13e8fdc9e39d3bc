"""`citynerve service install | unit`: run the gateway as a hardened systemd service."""

from __future__ import annotations

from pathlib import Path

import click

from citynerve.gateway.cli._common import EXIT_INVALID, console, esc, fail, json_option, print_json
from citynerve.gateway.cli._groups import main
from citynerve.gateway.service import StepKind, install, plan_install, render_unit
from citynerve.gateway.service.install import ServiceInstallError, citynerve_command
from citynerve.gateway.service.unit import UnitValueError


@main.group()
def service() -> None:
    """Install the gateway as a systemd service (user, folders, hardened unit)."""


@service.command("install")
@click.option("--dry-run", is_flag=True, help="Print every step; change nothing.")
@click.option(
    "--prefix",
    type=click.Path(file_okay=False, path_type=Path),
    default=Path("/"),
    show_default=True,
    help="Install under this folder instead of / (images, tests): no user is created.",
)
@click.option(
    "--config",
    "config",
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    help="Config to copy to /etc/citynerve/gateway.toml (never replaces an existing one); a relative or "
    "unset [store] path / [control] socket becomes /var/lib/citynerve/outbox.db / "
    "/run/citynerve/control.sock in the copy.",
)
@click.option("--exec", "exec_start", help="Path of the citynerve command in the unit (default: this one).")
@click.option("--user", default="citynerve", show_default=True, help="Service user.")
@click.option("--no-enable", is_flag=True, help="Write files only; do not enable or start.")
@json_option
def install_cmd(
    dry_run: bool,
    prefix: Path,
    config: Path | None,
    exec_start: str | None,
    user: str,
    no_enable: bool,
    as_json: bool,
) -> None:
    """Create the user `citynerve` (groups dialout, bluetooth), /etc/citynerve and /var/lib/citynerve,
    write the hardened unit and enable it.

    Safe to re-run for upgrades: the old unit is kept as .bak, the config is never replaced and
    nothing inside /var/lib/citynerve (the outbox) is touched.
    """
    try:
        plan = plan_install(
            prefix=prefix, config=config, exec_start=exec_start, user=user, enable=not no_enable
        )
        if not dry_run:
            install(plan)
    except UnitValueError as err:
        fail(str(err), EXIT_INVALID)
    except ServiceInstallError as err:
        fail(str(err))
    if as_json:
        print_json({"dry_run": dry_run, **plan.to_dict()})
        return
    for step in plan.steps:
        if step.kind is StepKind.SKIP:
            mark = "[dim]skip[/]"
        elif step.kind is StepKind.WARN:
            mark = "[yellow]warning:[/]"
        else:
            mark = "[yellow]would[/]" if dry_run else "[green]done:[/]"
        cmd = f"  [dim]$ {esc(' '.join(step.command))}[/]" if step.command and dry_run else ""
        console.print(f"{mark} {esc(step.what)}{cmd}", highlight=False)


@service.command("unit")
@click.option("--exec", "exec_start", help="Path of the citynerve command (default: this one).")
@click.option("--user", default="citynerve", show_default=True, help="Service user.")
def unit_cmd(exec_start: str | None, user: str) -> None:
    """Print the systemd unit that `service install` writes (for review or config management)."""
    try:
        click.echo(render_unit(exec_start or citynerve_command(), user=user), nl=False)
    except UnitValueError as err:
        fail(str(err), EXIT_INVALID)
    except ServiceInstallError as err:
        fail(str(err))
