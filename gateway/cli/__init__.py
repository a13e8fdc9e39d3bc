"""The `citynerve` command line.

Commands live in `gateway/cli/cmd_*.py` modules; each imports a group from `_groups` and adds its
commands. `main` imports them when a command is looked up (all of them, except for the service's
own `run`, which loads only its module to keep the running gateway small).
"""

from __future__ import annotations

import importlib
import pkgutil

from citynerve.gateway.cli._groups import main


def load_command_modules() -> None:
    """Import every `cmd_*` module, in name order, so that the groups know all their commands."""
    for mod in sorted(m.name for m in pkgutil.iter_modules(__path__) if m.name.startswith("cmd_")):
        importlib.import_module(f"{__name__}.{mod}")


__all__ = ["load_command_modules", "main"]
