"""What every command shares without click: exit codes, the default config, error reporting.

`citynerve run` (gateway/cli/_run.py) parses its own arguments and must not import click; the
click commands get these through `_common`.
"""

from __future__ import annotations

import functools
import sys
from pathlib import Path
from typing import TYPE_CHECKING, NoReturn

from citynerve.gateway.api import ConfigError
from citynerve.gateway.config import GatewayConfig, load_config

if TYPE_CHECKING:
    from rich.console import Console

DEFAULT_CONFIG = "/etc/citynerve/gateway.toml"
EXIT_FAILED = 1  # a check failed / the gateway could not do it
EXIT_INVALID = 2  # bad input: invalid config, bad arguments


@functools.cache
def consoles() -> tuple[Console, Console]:
    """stdout and stderr consoles; rich is imported on first use (`run` never needs it)."""
    from rich.console import Console

    return Console(), Console(stderr=True)


def fail(message: str, code: int = EXIT_FAILED) -> NoReturn:
    """One clear line on stderr, no traceback, and a non-zero exit. `message` is plain text: a file
    name or a device's reply with brackets in it is printed as it is, not read as markup."""
    from rich.markup import escape

    consoles()[1].print(f"[bold red]error:[/] {escape(message)}", highlight=False, soft_wrap=True)
    sys.exit(code)


def print_config_issues(err: ConfigError) -> None:
    out = consoles()[1]
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
