"""`citynerve diag uplink`: can this gateway reach the city platform's broker(s)?"""

from __future__ import annotations

import asyncio
import sys
from pathlib import Path

import click
from rich.table import Table

from citynerve.gateway.cli._common import (
    EXIT_FAILED,
    EXIT_INVALID,
    FiniteRange,
    config_option,
    console,
    esc,
    fail,
    json_option,
    load_or_exit,
    print_json,
)
from citynerve.gateway.cli._groups import diag
from citynerve.gateway.uplink.probe import Verdict, probe_uplink

_STYLE = {Verdict.PASS: "[green]pass[/]", Verdict.FAIL: "[bold red]FAIL[/]", Verdict.SKIP: "[dim]skip[/]"}


@diag.command("uplink")
@config_option
@json_option
@click.option(
    "--timeout",
    "timeout_s",
    type=FiniteRange(0.1, 120),
    default=5.0,
    show_default=True,
    help="Seconds allowed for each step.",
)
def uplink(config_path: Path, as_json: bool, timeout_s: float) -> None:
    """Check the way to every broker in [upstream]: DNS, TCP, TLS, MQTT connect, publish/subscribe.

    Each step gets a verdict and, when it fails, the reason; later steps are skipped. Uses its own
    MQTT client id, so it is safe while the gateway runs. Exits 1 when no broker passes every step,
    2 when the config is invalid or has no [upstream] table.
    """
    cfg = load_or_exit(config_path)
    if cfg.upstream is None:
        fail(f"{config_path}: no [upstream] table: the gateway has no platform to reach", EXIT_INVALID)
    reports = asyncio.run(probe_uplink(cfg.upstream, gateway_id=cfg.gateway.id, timeout_s=timeout_s))
    ok = any(r.ok for r in reports)
    if as_json:
        print_json({"gateway_id": cfg.gateway.id, "ok": ok, "brokers": [r.to_dict() for r in reports]})
    else:
        for r in reports:
            table = Table(
                title=esc(f"{r.broker}: {'reachable' if r.ok else 'NOT reachable'}"), title_justify="left"
            )
            for col in ("step", "verdict", "ms", "detail"):
                table.add_column(col)
            for c in r.checks:
                table.add_row(
                    esc(c.step),
                    _STYLE[c.verdict],
                    f"{c.elapsed_ms:.0f}" if c.elapsed_ms else "",
                    esc(c.detail),
                )
            console.print(table)
        if not ok:
            console.print("[bold red]no broker passed every step[/]")
    sys.exit(0 if ok else EXIT_FAILED)
