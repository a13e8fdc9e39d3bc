"""The `citynerve` command's groups. Command modules import these and add their commands.

`gateway.cli.main` imports every command module, so a new module must be listed there.
"""

from __future__ import annotations

import click

from gateway import __version__


@click.group(context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100})
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
