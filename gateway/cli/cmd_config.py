"""`citynerve config check`."""

from __future__ import annotations

import sys
from pathlib import Path

import click

from gateway.api import ConfigError
from gateway.cli._common import EXIT_INVALID, console, json_option, print_config_issues, print_json
from gateway.cli._groups import config
from gateway.config import load_config


@config.command("check")
@click.argument("file", type=click.Path(dir_okay=False, path_type=Path))
@json_option
def check(file: Path, as_json: bool) -> None:
    """Validate a gateway config FILE and the profiles it uses.

    Exits 0 when valid. Otherwise exits 2 and lists every problem (not just the first) with the
    file, the key path (e.g. devices[3].points.flow.scale) and what was expected.
    """
    try:
        cfg = load_config(file)
    except ConfigError as err:
        if as_json:
            print_json(
                {
                    "valid": False,
                    "issues": [
                        {"file": i.file, "path": i.path, "shown": i.shown or i.path, "message": i.message}
                        for i in err.issues
                    ],
                }
            )
        else:
            print_config_issues(err)
        sys.exit(EXIT_INVALID)
    points = sum(len(d.points) for d in cfg.devices)
    summary = {
        "valid": True,
        "gateway_id": cfg.gateway.id,
        "buses": len(cfg.buses),
        "devices": len(cfg.devices),
        "points": points,
        "profiles": sorted(cfg.profiles),
    }
    if as_json:
        print_json(summary)
        return
    console.print(
        f"[green]valid[/]: gateway {cfg.gateway.id}, {len(cfg.buses)} buses, {len(cfg.devices)} devices, "
        f"{points} points, profiles: {', '.join(sorted(cfg.profiles)) or 'none'}",
        highlight=False,
    )
