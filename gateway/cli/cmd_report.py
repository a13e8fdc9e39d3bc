"""`citynerve report`: the commissioning report, the installer's hand-over document."""

from __future__ import annotations

import asyncio
from pathlib import Path

import click

from citynerve.gateway.cli._common import (
    EXIT_FAILED,
    config_option,
    console,
    esc,
    fail,
    json_option,
    load_or_exit,
    print_json,
)
from citynerve.gateway.cli._groups import main
from citynerve.gateway.commissioning.configfile import write_atomically
from citynerve.gateway.commissioning.report import build_report, render_html


@main.command("report")
@config_option
@click.option(
    "--out",
    type=click.Path(dir_okay=False, path_type=Path),
    default=Path("commissioning-report.html"),
    show_default=True,
    help="The HTML report (one page: reads on a phone, prints on A4).",
)
@json_option
def report(config_path: Path, out: Path, as_json: bool) -> None:
    """Ask every configured device again and write the hand-over report: each device's
    identification evidence for its profile, first values and their plausibility, the running
    gateway's bus statistics (timeouts, CRC / frame errors) and every open item. Exit 1 while
    anything is open."""
    cfg = load_or_exit(config_path)
    data = asyncio.run(build_report(cfg))
    if as_json:
        print_json(data)
    else:
        try:
            write_atomically(out, render_html(data), backup=False, mode=0o644)
        except OSError as err:  # a folder the user may not write, a read-only or full USB stick
            fail(f"{out.absolute()}: cannot write: {err.strerror or err}")
        s = data["summary"]
        console.print(
            f"[green]wrote[/] {esc(out)}: {s['devices']} devices, {s['identified']} identified, "
            f"{s['open']} open items",
            highlight=False,
        )
    if data["open"]:
        raise SystemExit(EXIT_FAILED)
