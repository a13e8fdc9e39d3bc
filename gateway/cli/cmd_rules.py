"""`citynerve diag rules packs | check | replay`: rule packs for installers."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import click
from pydantic import ValidationError

from citynerve.gateway.api import ConfigError
from citynerve.gateway.cli._common import (
    EXIT_INVALID,
    config_option,
    console,
    err_console,
    esc,
    fail,
    json_option,
    load_or_exit,
    print_json,
)
from citynerve.gateway.cli._groups import diag


@diag.group("rules")
def rules() -> None:
    """Edge rule packs: list the shipped ones, check a pack or a [rules] table, replay readings."""


@rules.command("packs")
@json_option
def packs(as_json: bool) -> None:
    """List the shipped rule packs (config/rules/) with their device classes, rules, parameters,
    what must be set per household first (where a pack needs it) and sources."""
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
                "classes": list(pack.classes),
                "per_household": pack.per_household,
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
        table = Table(title=esc(f"{p['id']}: {p['description']}"), title_justify="left", show_lines=False)
        for col in ("rule", "kind", "event", "severity", "point", "hold s"):
            table.add_column(col)
        for r in p["rules"]:
            table.add_row(
                *(esc(r[k]) for k in ("id", "kind", "event", "severity", "point")), f"{r['hold_s']:g}"
            )
        console.print(table)
        console.print(f"  device classes: {', '.join(p['classes']) or 'any'}", highlight=False, markup=False)
        params = ", ".join(f"{k} = {v}" for k, v in p["params"].items())
        console.print(f"  parameters: {params or 'none'}", highlight=False, soft_wrap=True, markup=False)
        if p["per_household"]:
            console.print(
                f"  set per household first: {p['per_household']}",
                highlight=False,
                soft_wrap=True,
                markup=False,
            )
        console.print(f"  source: {p['source']}", highlight=False, soft_wrap=True, markup=False)


@rules.command("check")
@click.argument("file", type=click.Path(dir_okay=False, path_type=Path))
@json_option
def check(file: Path, as_json: bool) -> None:
    """Validate FILE: a rule pack (top-level id, description, source, [[rules]]) or a TOML file with a
    [rules] table as in the gateway config. Exits 2 and lists every problem with its key path. For a
    gateway config, also warns of a pack that selects no device, or only devices of none of the
    classes it is written for (it raises nothing for them)."""
    from citynerve.gateway.config.tomlfile import read_toml
    from citynerve.gateway.rules import RulesConfig

    if not file.exists():
        fail(f"no such file: {file}", EXIT_INVALID)
    try:
        data = read_toml(file)  # bounded: size first, nesting cannot escape as a RecursionError
    except ConfigError as err:
        fail(f"{file}: cannot read TOML: {err.issues[0].message}", EXIT_INVALID)
    if "rules" in data and isinstance(data["rules"], dict):
        table, what = data["rules"], "[rules] table"
    elif "gateway" in data:  # a gateway config: say what having no [rules] means
        fail(f"{file}: no [rules] table: no alarms will be raised (docs/installer-guide.md)", EXIT_INVALID)
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
            console.print(f"[bold red]{len(issues)} problem(s) in {esc(file)}:[/]", highlight=False)
            for i in issues:
                prefix = "rules." if what.startswith("[rules]") else ""
                console.print(f"  {prefix}{i['path']}: {i['message']}", highlight=False, markup=False)
        sys.exit(EXIT_INVALID)
    ids = [r.id for r in cfg.all_rules()]
    warnings = _coverage(file) if "devices" in data else []
    if as_json:
        print_json({"valid": True, "file": str(file), "what": what, "rules": ids, "warnings": warnings})
        return
    for warning in warnings:
        err_console.print(warning, style="yellow", highlight=False, markup=False, soft_wrap=True)
    console.print(f"[green]valid[/]: {esc(what)}, {len(ids)} rules", highlight=False)


def _coverage(file: Path) -> list[str]:
    """For a gateway config: the packs that select no device, or none of a class they are written
    for (rules/coverage.py), judged against its devices as `config check` loads them."""
    from citynerve.gateway.config import load_config

    try:
        cfg = load_config(file, allow_insecure_secrets=True)  # the rules are judged here, not the files
    except ConfigError:
        why = "the devices do not load (run `citynerve config check`): packs not checked against them"
        return [f"{file}: {why}"]
    return [str(w) for w in cfg.warnings if w.path.split(".")[0].split("[")[0] == "rules"]


SHOWN_SKIPPED = 50  # names of unknown devices / points listed in a replay's report


@rules.command("replay")
@click.argument("readings", type=click.Path(dir_okay=False, path_type=Path))
@config_option
@click.option(
    "--tz",
    "tz_name",
    default=None,
    metavar="ZONE",
    help="Zone of times written without a UTC offset (one its DST repeats or skips is refused), and of "
    "the times shown (default UTC; e.g. Asia/Shanghai).",
)
@json_option
def replay(readings: Path, config_path: Path, tz_name: str | None, as_json: bool) -> None:
    """Replay READINGS through the config's rules, off line: which alarms they would have raised,
    and when each cleared. READINGS is a CSV export of the site's readings from the platform, with
    the columns ts, device, point, value (and quality); ts is seconds since 1970 or ISO 8601. For
    checking a pack's parameters against a site's own first weeks before its alarms go live.
    Nothing is written to a device (actions are dry-run) and the running gateway is not asked.
    Exits 0 with or without alarms, 2 on a bad config or file."""
    from datetime import UTC
    from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

    from citynerve.gateway.rules.replay import ReadingsFileError, read_readings
    from citynerve.gateway.rules.replay import replay as run_replay

    tz: Any = UTC
    if tz_name is not None:
        try:
            tz = ZoneInfo(tz_name)
        except (ZoneInfoNotFoundError, ValueError):
            fail(f"--tz {tz_name!r}: not a time zone (e.g. Asia/Shanghai, UTC)", EXIT_INVALID)
    cfg = load_or_exit(config_path)
    if cfg.rules is None:
        fail(f"{config_path}: no [rules] table: nothing to replay", EXIT_INVALID)
    devices = {d.id: d for d in cfg.devices}
    try:
        data = read_readings(readings, devices, tz if tz_name is not None else None)
    except ReadingsFileError as err:
        fail(str(err), EXIT_INVALID)
    result = run_replay(cfg.rules, cfg.devices, data.readings)
    report = _replay_report(readings, config_path, data, result, tz)
    if as_json:
        print_json(report)
    else:
        _print_replay(report)


def _when(ts: float | None, tz: Any) -> str | None:
    from datetime import datetime

    if ts is None or ts != ts:
        return None
    return datetime.fromtimestamp(ts, tz).isoformat(timespec="seconds")


def _replay_report(file: Path, config: Path, data: Any, result: Any, tz: Any) -> dict[str, Any]:
    by_rule: dict[str, dict[str, Any]] = {}
    for a in result.alarms:
        r = by_rule.setdefault(a.rule, {"rule": a.rule, "event": a.kind, "raised": 0, "devices": set()})
        r["raised"] += 1
        r["devices"].add(a.device_id)
    return {
        "file": str(file),
        "config": str(config),
        "readings": result.readings,
        "devices": len({r.device_id for r in data.readings}),
        "from": _when(result.first, tz),
        "to": _when(result.last, tz),
        "alarms": [
            {
                "raised": _when(a.raised, tz),
                "cleared": _when(a.cleared, tz),
                "device": a.device_id,
                "rule": a.rule,
                "event": a.kind,
                "severity": a.severity.name.lower(),  # named, as in status, alarms and json-v1
                "subject": a.subject,
                "message": a.message,
            }
            for a in result.alarms
        ],
        "by_rule": [{**r, "devices": len(r["devices"])} for _, r in sorted(by_rule.items())],
        "actions": [
            {"at": _when(e.ts, tz), "device": e.device_id, "rule": e.rule, "message": e.message}
            for e in result.actions
        ],
        "skipped": {  # rows of devices / points the config does not have: the 50 most frequent
            "rows": data.unknown_devices.total() + data.unknown_points.total(),
            "devices": dict(data.unknown_devices.most_common(SHOWN_SKIPPED)),
            "points": {f"{d}/{p}": n for (d, p), n in data.unknown_points.most_common(SHOWN_SKIPPED)},
        },
    }


def _print_replay(report: dict[str, Any]) -> None:
    def short(when: str | None) -> str:
        # to the minute, with the UTC offset: the hour DST repeats shows the same wall times twice
        return f"{when[:16].replace('T', ' ')} {when[19:]}" if when else "-"

    alarms = report["alarms"]
    active = sum(1 for a in alarms if a["cleared"] is None)
    say = console.print
    say(
        f"{report['readings']:,} readings of {report['devices']} devices, "
        f"{short(report['from'])} to {short(report['to'])}: {len(alarms)} alarms raised, "
        f"{active} still active at the end",
        highlight=False,
        soft_wrap=True,
    )
    unknown = (("devices", "devices not in the config"), ("points", "points the devices do not have"))
    for key, what in unknown:
        if skipped := report["skipped"][key]:
            names = ", ".join(sorted(skipped)[:5]) + (", ..." if len(skipped) > 5 else "")
            line = f"  skipped {sum(skipped.values()):,} rows of {what}: {names}"
            say(line, highlight=False, markup=False, soft_wrap=True)
    for r in report["by_rule"]:
        say(f"  {r['rule']} ({r['event']}): {r['raised']} raised on {r['devices']} devices", highlight=False)
    for a in alarms:
        until = f"cleared {short(a['cleared'])}" if a["cleared"] else "still active"
        say(
            f"{short(a['raised'])}  {a['device']}  {a['event']}, {until}: {a['message']}",
            highlight=False,
            markup=False,
            soft_wrap=True,
        )
    for a in report["actions"]:
        line = (
            f"{short(a['at'])}  {a['device']}  action (dry run: nothing written) {a['rule']}: {a['message']}"
        )
        say(line, highlight=False, markup=False, soft_wrap=True)
