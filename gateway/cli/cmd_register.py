"""`citynerve devices import | export`: the building's device register (CSV or .xlsx) in and out."""

from __future__ import annotations

import contextlib
import sys
from pathlib import Path
from typing import Any

import click
from rich.table import Table

from citynerve.gateway.api import ConfigError, ConfigIssue
from citynerve.gateway.cli._common import (
    EXIT_FAILED,
    EXIT_INVALID,
    config_option,
    console,
    esc,
    fail,
    json_option,
    load_or_exit,
    print_config_issues,
    print_json,
)
from citynerve.gateway.cli.cmd_devices import devices, save_or_exit
from citynerve.gateway.commissioning import ConfigEditError, DeviceListEditor
from citynerve.gateway.commissioning.register import (
    AddressKey,
    RegisterError,
    apply_register,
    export_rows,
    read_register,
    write_register,
)


def _classes(config_path: Path) -> tuple[dict[str, str], dict[str, AddressKey]]:
    """Profile id -> device class, and bus id -> its driver's address key (register matching)."""
    from citynerve.gateway.config.drivers import DriverNotFoundError, driver_spec

    cfg = load_or_exit(config_path)
    keys: dict[str, AddressKey] = {}
    for bus in cfg.buses:
        with contextlib.suppress(DriverNotFoundError):
            keys[bus.id] = driver_spec(bus.protocol).address_key
    return {pid: p.device_class for pid, p in cfg.profiles.items()}, keys


@devices.command("import")
@config_option
@click.argument("register", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option("--dry-run", is_flag=True, help="Report only; do not change the config.")
@json_option
def import_register(config_path: Path, register: Path, dry_run: bool, as_json: bool) -> None:
    """Take the building's device register (REGISTER: .csv or .xlsx with columns address / meter
    number, building, floor, room, type, component_code, name) into the commissioned devices: each
    row's place, component code and name go into the device with that address. A `bus` column (the
    bus id) is needed where two buses have a device with the same address (without it such a row
    matches neither: "several buses have it: add a bus column"). Rows that match no
    device on the bus, types that are not the device's class, and devices the register does not list
    are reported; so are rows whose values the config check refuses (a 15-digit component code):
    those are not taken. Exit 1 when there are any (the matching rows are still taken)."""
    classes, bus_keys = _classes(config_path)
    try:
        rows = read_register(register)
        editor = DeviceListEditor(config_path)
        changed, report = apply_register(rows, editor.devices(), classes, bus_keys)
        if changed:
            editor.check_editable()  # devices written as an inline array
    except (RegisterError, ConfigEditError) as err:
        fail(str(err), EXIT_INVALID)
    backup = None
    if changed:
        try:
            # Each changed entry is judged on its own: one bad row never refuses the others.
            text, refused = editor.replace_valid(changed)
        except ConfigEditError as err:  # the folder refused the candidate file beside the config
            if not dry_run:
                fail(str(err))
            # A report only (a service-group member may read the config, not write beside it).
            console.print(f"rows not checked against the config: {err}", highlight=False, markup=False)
            text, refused = editor.text, {}
        except ConfigError as err:  # rows that pass one by one but not together
            print_config_issues(err)
            console.print(f"{config_path} was not changed", highlight=False, markup=False)
            sys.exit(EXIT_INVALID)
        for device_id, issues in refused.items():
            report.refuse(device_id, "; ".join(_in_entry(i) for i in issues))
            del changed[device_id]
        if changed and not dry_run:
            _cfg, backup = save_or_exit(editor, text)
    result: dict[str, Any] = {
        "config": str(config_path),
        "register": str(register),
        "rows": len(rows),
        "changed": sorted(changed) if not dry_run else [],
        "backup": str(backup) if backup else None,
        **report.to_dict(),
    }
    if as_json:
        print_json(result)
    else:
        _show(result, dry_run)
    if not report.clean:
        raise SystemExit(EXIT_FAILED)


def _in_entry(issue: ConfigIssue) -> str:
    """An issue within a device's entry, as a register row's problem: `component_code: expected ...`."""
    head, sep, rest = issue.path.partition("]")
    key = rest.lstrip(".") if sep and head.startswith("devices[") else issue.path
    return f"{key}: {issue.message}" if key else issue.message


def _show(result: dict[str, Any], dry_run: bool) -> None:
    verb = "would take" if dry_run else "took"
    console.print(
        f"{result['rows']} rows: {verb} {len(result['updated'])} ({len(result['changed'])} devices changed)",
        highlight=False,
    )
    if not (
        result["not_on_bus"]
        or result["type_mismatch"]
        or result["duplicates"]
        or result["not_in_register"]
        or result["invalid"]
    ):
        console.print("[green]the register and the bus agree[/]")
        return
    t = Table(title="rows and devices that do not match")
    for col in ("line", "address", "what"):
        t.add_column(col)
    # Every cell is the register's or the config's text: printed as it is, never read as markup.
    for r in result["not_on_bus"]:
        t.add_row(str(r["line"]), esc(r["address"]), esc(r["why"]))
    for r in result["type_mismatch"]:
        what = f"register says {r.get('type')!r}; {r['device']} is {r['profile']}"
        t.add_row(str(r["line"]), esc(r["address"]), esc(what))
    for r in result["duplicates"]:
        t.add_row(str(r["line"]), esc(r["address"]), f"given twice (first on line {r['first_line']})")
    for r in result["invalid"]:
        t.add_row(
            str(r.get("line", "-")),
            esc(r.get("address", "")),
            esc(f"not taken into {r['device']}: {r['why']}" if r["device"] else f"not taken: {r['why']}"),
        )
    for dev in result["not_in_register"]:
        t.add_row("-", esc(dev), "on the bus, not in the register")
    console.print(t)


@devices.command("export")
@config_option
@click.argument("out", type=click.Path(dir_okay=False, path_type=Path))
@json_option
def export_register(config_path: Path, out: Path, as_json: bool) -> None:
    """Write the commissioned devices to OUT (.csv or .xlsx) in the register's columns (address,
    building, floor, room, type, component_code, name, id, bus, profile): the hand-over copy."""
    classes, _ = _classes(config_path)
    try:
        rows = export_rows(DeviceListEditor(config_path).devices(), classes)
        write_register(out, rows)
    except (RegisterError, ConfigEditError) as err:
        fail(str(err), EXIT_INVALID)
    except OSError as err:
        fail(f"{out}: cannot write: {err.strerror or err}", EXIT_FAILED)
    if as_json:
        print_json({"out": str(out), "devices": len(rows)})
    else:
        console.print(f"[green]wrote[/] {esc(out)} ({len(rows)} devices)", highlight=False)
