"""The `citynerve` command line.

Commands live in `gateway/cli/cmd_*.py` modules; each imports a group from `_groups` and adds its
commands. They are imported here, in name order, so that `main` knows them all.
"""

from __future__ import annotations

import importlib
import pkgutil

from gateway.cli._groups import main

for _mod in sorted(m.name for m in pkgutil.iter_modules(__path__) if m.name.startswith("cmd_")):
    importlib.import_module(f"{__name__}.{_mod}")

__all__ = ["main"]
