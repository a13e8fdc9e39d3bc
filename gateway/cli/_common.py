"""What the CLI commands share: the config option, error reporting, JSON output."""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any, NoReturn, TypeVar

import click

from citynerve.gateway.api import ConfigIssue, GatewayError
from citynerve.gateway.cli._exit import (
    DEFAULT_CONFIG,
    EXIT_FAILED,
    EXIT_INVALID,
    fail,
    load_or_exit,
    print_config_issues,
)
from citynerve.gateway.cli._exit import consoles as _consoles

F = TypeVar("F", bound=Callable[..., Any])

if TYPE_CHECKING:
    from rich.console import Console

    console: Console
    err_console: Console


def __getattr__(name: str) -> Any:
    # rich is imported on first use: the long-running `citynerve run` never needs it.
    if name == "console":
        return _consoles()[0]
    if name == "err_console":
        return _consoles()[1]
    raise AttributeError(name)


def config_option(f: F) -> F:
    return click.option(
        "-c",
        "--config",
        "config_path",
        type=click.Path(dir_okay=False, path_type=Path),
        default=DEFAULT_CONFIG,
        envvar="CITYNERVE_CONFIG",
        show_default=True,
        show_envvar=True,
        help="Gateway config file (TOML).",
    )(f)


def json_option(f: F) -> F:
    return click.option("--json", "as_json", is_flag=True, help="Print one JSON object for programs.")(f)


def issue_dict(issue: ConfigIssue) -> dict[str, str]:
    """A config issue for --json output."""
    out = {"file": issue.file, "path": issue.path, "shown": issue.shown, "message": issue.message}
    if issue.subject:
        out["id"] = issue.subject
    return out


allow_insecure_secrets_option = click.option(
    "--allow-insecure-secrets",
    is_flag=True,
    help="Accept secret files that group or others may read, with a warning (else refused).",
)


def print_json(obj: Any) -> None:
    click.echo(json.dumps(obj, ensure_ascii=False, indent=2, default=str))


def esc(value: object) -> str:
    """`value` as plain text inside rich markup: a device's, a file's or an operator's words with
    brackets in them (`[/]`, `[east]`) print as they are instead of crashing or vanishing."""
    from rich.markup import escape

    return escape(str(value))


def corrupt_copy_line(copy: dict[str, Any]) -> str:
    """A store document's `corrupt_copy` in words (plain text): the file a technician may look at,
    how much of the disk it takes, and that it does not stay for ever."""
    when = time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime(copy["mtime"]))
    return (
        f"corrupt outbox kept aside: {copy['path']} ({copy['bytes'] / 1e6:.1f} MB with its -wal/-shm, "
        f"last written {when}); only the newest is kept, deleted first when the disk fills up"
    )


def gateway_error_exit(err: GatewayError) -> NoReturn:
    fail(str(err))


__all__ = [
    "DEFAULT_CONFIG",
    "EXIT_FAILED",
    "EXIT_INVALID",
    "allow_insecure_secrets_option",
    "config_option",
    "corrupt_copy_line",
    "esc",
    "fail",
    "gateway_error_exit",
    "issue_dict",
    "json_option",
    "load_or_exit",
    "print_config_issues",
    "print_json",
]


class FiniteRange(click.FloatRange):
    """A float option within bounds that is also a number: click's FloatRange lets `nan` through
    (every comparison with NaN is false), and a NaN timeout or duration hangs or spins the command."""

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> Any:
        rv = super().convert(value, param, ctx)
        if isinstance(rv, float) and rv != rv:
            self.fail(f"{value!r} is not a number", param, ctx)
        return rv
