"""`citynerve diag rules packs` and `citynerve diag rules check`: rule packs for installers."""

from __future__ import annotations

import sys
import tomllib
from pathlib import Path
from typing import Any

import click
from pydantic import ValidationError

from citynerve.gateway.cli._common import EXIT_INVALID, console, fail, json_option, print_json
from citynerve.gateway.cli._groups import diag


@diag.group("rules")
def rules() -> None:
    """Edge rule packs: list the shipped ones, check a pack or a [rules] table."""


@rules.command("packs")
@json_option
def packs(as_json: bool) -> None:
    """List the shipped rule packs (config/rules/) with their rules, parameters and sources."""
    from citynerve.gateway.rules import PACKS_DIR, RulesConfig, load_pack

    out: list[dict[str, Any]] = []
    for path in sorted(PACKS_DIR.glob("*.toml")):
        try:
            pack = load_pack(path)
            cfg = RulesConfig.model_validate({"packs": [{"name": pack.id, "path": str(path)}]})
        except (ValueError, ValidationError) as err:
            fail(f"shipped pack {path.name} is broken: {err}")
        out.append(
            {
                "id": pack.id,
                "description": pack.description,
                "source": " ".join(pack.source.split()),
                "params": pack.params,
                "rules": [
                    {
                        "id": r.id,
                        "kind": r.kind,
                        "event": r.event_kind,
                        "severity": r.severity,
                        "point": getattr(r, "point", ""),
                        "hold_s": r.hold_s,
                    }
                    for r in cfg.all_rules()
                ],
            }
        )
    if as_json:
        print_json({"packs": out})
        return
    from rich.table import Table

    for p in out:
        table = Table(title=f"{p['id']}: {p['description']}", title_justify="left", show_lines=False)
        for col in ("rule", "kind", "event", "severity", "point", "hold s"):
            table.add_column(col)
        for r in p["rules"]:
            table.add_row(r["id"], r["kind"], r["event"], r["severity"], r["point"], f"{r['hold_s']:g}")
        console.print(table)
        console.print(f"  source: {p['source']}", highlight=False, soft_wrap=True)


@rules.command("check")
@click.argument("file", type=click.Path(dir_okay=False, path_type=Path))
@json_option
def check(file: Path, as_json: bool) -> None:
    """Validate FILE: a rule pack (top-level id, description, source, [[rules]]) or a TOML file with a
    [rules] table as in the gateway config. Exits 2 and lists every problem with its key path."""
    from citynerve.gateway.rules import RulesConfig

    try:
        data = tomllib.loads(file.read_text(encoding="utf-8"))
    except FileNotFoundError:
        fail(f"no such file: {file}", EXIT_INVALID)
    except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError) as err:
        fail(f"{file}: cannot read TOML: {err}", EXIT_INVALID)
    if "rules" in data and isinstance(data["rules"], dict):
        table, what = data["rules"], "[rules] table"
    elif "id" in data:
        table, what = {"packs": [{"name": file.stem, "path": str(file)}]}, f"rule pack {data['id']}"
    else:
        fail(
            f"{file}: neither a rule pack (id, description, source, [[rules]]) nor a [rules] table",
            EXIT_INVALID,
        )
    try:
        cfg = RulesConfig.model_validate(table)
    except ValidationError as err:
        issues = [{"path": ".".join(str(p) for p in e["loc"]), "message": e["msg"]} for e in err.errors()]
        if as_json:
            print_json({"valid": False, "file": str(file), "issues": issues})
        else:
            console.print(f"[bold red]{len(issues)} problem(s) in {file}:[/]", highlight=False)
            for i in issues:
                prefix = "rules." if what.startswith("[rules]") else ""
                console.print(f"  {prefix}{i['path']}: {i['message']}", highlight=False, markup=False)
        sys.exit(EXIT_INVALID)
    ids = [r.id for r in cfg.all_rules()]
    if as_json:
        print_json({"valid": True, "file": str(file), "what": what, "rules": ids})
        return
    console.print(f"[green]valid[/]: {what}, {len(ids)} rules", highlight=False)
