"""What the CLI commands share: the config option, error reporting, JSON output."""

from __future__ import annotations

import functools
import json
import sys
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any, NoReturn, TypeVar

import click

from citynerve.gateway.api import ConfigError, ConfigIssue, GatewayError
from citynerve.gateway.config import GatewayConfig, load_config

F = TypeVar("F", bound=Callable[..., Any])

DEFAULT_CONFIG = "/etc/citynerve/gateway.toml"
EXIT_FAILED = 1  # a check failed / the gateway could not do it
EXIT_INVALID = 2  # bad input: invalid config, bad arguments

if TYPE_CHECKING:
    from rich.console import Console

    console: Console
    err_console: Console


@functools.cache
def _consoles() -> tuple[Console, Console]:
    from rich.console import Console

    return Console(), Console(stderr=True)


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


def fail(message: str, code: int = EXIT_FAILED) -> NoReturn:
    """One clear line on stderr, no traceback, and a non-zero exit."""
    _consoles()[1].print(f"[bold red]error:[/] {message}", highlight=False, soft_wrap=True)
    sys.exit(code)


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


def print_config_issues(err: ConfigError) -> None:
    out = _consoles()[1]
    out.print(f"[bold red]{len(err.issues)} problem(s) in the config:[/]", highlight=False)
    for issue in err.issues:
        out.print(f"  {issue}", highlight=False, soft_wrap=True, markup=False)


def load_or_exit(path: Path, *, allow_insecure_secrets: bool = False) -> GatewayConfig:
    """Load a config; on any problem print every issue and exit 2."""
    try:
        return load_config(path, allow_insecure_secrets=allow_insecure_secrets)
    except ConfigError as err:
        print_config_issues(err)
        sys.exit(EXIT_INVALID)


def print_json(obj: Any) -> None:
    click.echo(json.dumps(obj, ensure_ascii=False, indent=2, default=str))


def gateway_error_exit(err: GatewayError) -> NoReturn:
    fail(str(err))
