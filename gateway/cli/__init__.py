"""The `citynerve` command line.

Commands live in `gateway/cli/cmd_*.py` modules; each imports a group from `_groups` and adds its
commands. `main` (the click group) imports them when a command is looked up. The console entry
point is `entry`: it sends `citynerve run` to its own parser in `_run` (the running gateway never
imports click) and every other command to `main`.
"""

from __future__ import annotations

import importlib
import pkgutil
import sys
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from citynerve.gateway.cli._groups import main


def __getattr__(name: str) -> Any:
    # The click group is imported when asked for, so that `run` (via `entry`) never loads click.
    if name == "main":
        from citynerve.gateway.cli._groups import main

        return main
    raise AttributeError(name)


def entry() -> None:
    """The `citynerve` console script: `run` without click, everything else through click."""
    if sys.argv[1:2] == ["run"]:
        from citynerve.gateway.cli import _run

        _run.main(sys.argv[2:])
        return
    from citynerve.gateway.cli._groups import main

    main()


def load_command_modules() -> None:
    """Import every `cmd_*` module, in name order, so that the groups know all their commands."""
    for mod in sorted(m.name for m in pkgutil.iter_modules(__path__) if m.name.startswith("cmd_")):
        importlib.import_module(f"{__name__}.{mod}")


__all__ = ["entry", "load_command_modules", "main"]
