"""`citynerve config check`."""

from __future__ import annotations

import sys
from pathlib import Path

import click

from citynerve.gateway.api import ConfigError
from citynerve.gateway.cli._common import (
    EXIT_INVALID,
    allow_insecure_secrets_option,
    console,
    err_console,
    issue_dict,
    json_option,
    print_config_issues,
    print_json,
)
from citynerve.gateway.cli._groups import config
from citynerve.gateway.config import load_config


@config.command("check")
@click.argument("file", type=click.Path(dir_okay=False, path_type=Path))
@allow_insecure_secrets_option
@json_option
def check(file: Path, allow_insecure_secrets: bool, as_json: bool) -> None:
    """Validate a gateway config FILE and the profiles it uses.

    Exits 0 when valid. Otherwise exits 2 and lists every problem (not just the first) with the
    file, the key path (e.g. devices[3] (id 'wm-3').points.flow.scale) and what was expected.
    Settings that are allowed but weaken security (tls.verify = false, a password over plain
    mqtt://) are listed as warnings; secret files that group or others may read are refused
    unless --allow-insecure-secrets (or [security] allow_insecure_secret_files) makes them warnings.
    """
    try:
        cfg = load_config(file, allow_insecure_secrets=allow_insecure_secrets)
    except ConfigError as err:
        if as_json:
            print_json({"valid": False, "issues": [issue_dict(i) for i in err.issues]})
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
        "warnings": [issue_dict(i) for i in cfg.warnings],
    }
    if as_json:
        print_json(summary)
        return
    for warning in cfg.warnings:
        err_console.print(str(warning), style="yellow", highlight=False, markup=False, soft_wrap=True)
    console.print(
        f"[green]valid[/]: gateway {cfg.gateway.id}, {len(cfg.buses)} buses, {len(cfg.devices)} devices, "
        f"{points} points, profiles: {', '.join(sorted(cfg.profiles)) or 'none'}",
        highlight=False,
    )
