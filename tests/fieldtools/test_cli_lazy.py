"""The CLI imports only the command modules a command needs (`_groups._LazyGroup.lazy`).

The maps must name every module that defines a command or one of its subcommands; otherwise a
command would be found without some of its subcommands. Checked here from the loaded tree: each
command's callback names the module that defined it.
"""

from __future__ import annotations

import json
import subprocess
import sys

import click

from citynerve.gateway.cli import load_command_modules
from citynerve.gateway.cli._groups import _LazyDiag, _LazyMain, diag, main

PACKAGE = "citynerve.gateway.cli."


def defining_modules(command: click.Command) -> set[str]:
    """Modules that define `command` and every command below it."""
    found = set()
    if command.callback is not None and command.callback.__module__.startswith(PACKAGE + "cmd_"):
        found.add(command.callback.__module__.removeprefix(PACKAGE))
    if isinstance(command, click.Group):
        for sub in command.commands.values():
            found |= defining_modules(sub)
    return found


def test_every_command_is_mapped_to_the_modules_that_define_it() -> None:
    load_command_modules()
    assert set(main.commands) == set(_LazyMain.lazy)
    assert set(diag.commands) == set(_LazyDiag.lazy)
    for name, command in main.commands.items():
        if name == "diag":
            continue
        assert defining_modules(command) <= set(_LazyMain.lazy[name]), name
    for name, command in diag.commands.items():
        assert defining_modules(command) <= set(_LazyDiag.lazy[name]), f"diag {name}"


def test_a_technician_command_imports_only_its_own_module() -> None:
    code = (
        "import sys, click\n"
        "from citynerve.gateway.cli._groups import main\n"
        "ctx = click.Context(main)\n"
        "group = main.get_command(ctx, 'diag')\n"
        "group.get_command(click.Context(group, parent=ctx), 'modbus')\n"
        "main.get_command(ctx, 'config')\n"
        "print(sorted(m for m in sys.modules if m.startswith('citynerve.gateway.cli.cmd_')))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=60)
    loaded = json.loads(out.stdout.replace("'", '"'))
    assert loaded == [PACKAGE + "cmd_config", PACKAGE + "cmd_diag", PACKAGE + "cmd_probe"]
