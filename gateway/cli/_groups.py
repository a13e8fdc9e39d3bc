"""The `citynerve` command's groups. Command modules import these and add their commands.

`citynerve.gateway.cli.main` imports every command module, so a new module must be listed there.
"""

from __future__ import annotations

import importlib
from typing import ClassVar

import click

from citynerve.gateway import __version__


class _LazyMain(click.Group):
    """Imports command modules only when they are needed.

    `citynerve run` is the long-lived service on a small box: it must not carry the memory of every
    diagnostic and commissioning command, so only its own module is imported for it.
    """

    _light: ClassVar[dict[str, str]] = {
        "run": "citynerve.gateway.cli.cmd_run",
        "status": "citynerve.gateway.cli.cmd_run",
        "demo": "citynerve.gateway.cli.cmd_demo",
    }
    _loaded_all = False

    def _load_all(self) -> None:
        if not self._loaded_all:
            from citynerve.gateway.cli import load_command_modules

            load_command_modules()
            self._loaded_all = True

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        module = self._light.get(cmd_name)
        if module is not None:
            importlib.import_module(module)
        else:
            self._load_all()
        return super().get_command(ctx, cmd_name)

    def list_commands(self, ctx: click.Context) -> list[str]:
        self._load_all()
        return super().list_commands(ctx)


@click.group(
    cls=_LazyMain, context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100}
)
@click.version_option(__version__, prog_name="citynerve")
def main() -> None:
    """CityNerve: edge gateway for city operations.

    Reads meters, smoke detectors, fire panels and manhole-cover sensors, detects trouble locally,
    stores everything in SQLite and forwards it to the city platform over MQTT.
    """


@main.group()
def config() -> None:
    """Check and inspect gateway config files."""


@main.group()
def store() -> None:
    """Inspect the SQLite outbox."""


@main.group()
def diag() -> None:
    """Diagnostics for field technicians. Every check has --json and exits non-zero on failure."""
