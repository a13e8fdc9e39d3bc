"""The `citynerve` command's groups. Command modules import these and add their commands.

`citynerve.gateway.cli.main` imports every command module, so a new module must be listed there.
"""

from __future__ import annotations

import importlib
from typing import ClassVar

import click

_PACKAGE = "citynerve.gateway.cli"


class _LazyGroup(click.Group):
    """Imports command modules only when they are needed.

    `citynerve run` is the long-lived service on a small box: it must not carry the memory of every
    diagnostic and commissioning command. The commands a technician types (`status`, `config
    check`, `diag ...`) must start fast on a slow CPU, so each imports only the modules that
    define it (`lazy`: command name -> modules). A name not in `lazy`, and `--help`'s listing,
    import every command module. tests/fieldtools/test_cli_lazy.py checks `lazy` against the tree.
    """

    lazy: ClassVar[dict[str, tuple[str, ...]]] = {}
    _loaded_all: ClassVar[bool] = False

    @staticmethod
    def _load_all() -> None:
        if not _LazyGroup._loaded_all:
            from citynerve.gateway.cli import load_command_modules

            load_command_modules()
            _LazyGroup._loaded_all = True

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        modules = self.lazy.get(cmd_name)
        if modules is None:
            self._load_all()
        else:
            for module in modules:
                importlib.import_module(f"{_PACKAGE}.{module}")
        return super().get_command(ctx, cmd_name)

    def list_commands(self, ctx: click.Context) -> list[str]:
        self._load_all()
        return super().list_commands(ctx)


class _LazyMain(_LazyGroup):
    lazy: ClassVar[dict[str, tuple[str, ...]]] = {
        "run": ("cmd_run",),
        "status": ("cmd_run",),
        "demo": ("cmd_demo",),
        "init": ("cmd_init",),
        "report": ("cmd_report",),
        "devices": ("cmd_devices", "cmd_register"),
        "operator": ("cmd_operator",),
        "service": ("cmd_service",),
        "update": ("cmd_update",),
        "config": ("cmd_config",),
        "store": ("cmd_store",),
        "diag": (),  # a group of its own: its commands are looked up in _LazyDiag
    }


class _LazyDiag(_LazyGroup):
    lazy: ClassVar[dict[str, tuple[str, ...]]] = {
        "ports": ("cmd_diag",),
        "store": ("cmd_diag",),
        "bundle": ("cmd_diag",),
        "modbus": ("cmd_diag", "cmd_probe"),
        "ble": ("cmd_ble",),
        "decode": ("cmd_decode",),
        "line": ("cmd_line",),
        "rules": ("cmd_rules",),
        "dlt645": ("cmd_serial",),
        "cjt188": ("cmd_serial",),
        "firepanel": ("cmd_serial",),
        "uplink": ("cmd_uplink",),
        "certs": ("cmd_certs",),
    }


def _print_version(ctx: click.Context, _param: click.Parameter, value: bool) -> None:
    # The version (importlib.metadata) is looked up only when asked for: most commands never show it.
    if value and not ctx.resilient_parsing:
        from citynerve.gateway import __version__

        click.echo(f"citynerve, version {__version__}")
        ctx.exit()


@click.group(
    cls=_LazyMain, context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100}
)
@click.option(
    "--version",
    is_flag=True,
    expose_value=False,
    is_eager=True,
    callback=_print_version,
    help="Show the version and exit.",
)
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


@main.group(cls=_LazyDiag)
def diag() -> None:
    """Diagnostics for field technicians. Every check has --json and exits non-zero on failure.

    A check on a configured bus (--bus) goes through the running gateway, else opens the port
    itself; a gateway that runs but does not answer (its control socket busy, the gateway slow) is
    refused with exit 1 and "retry", never bypassed (two masters on one line).
    """
