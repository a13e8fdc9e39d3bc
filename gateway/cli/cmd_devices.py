"""`citynerve devices list | add | remove`: edit the device list safely, then reload the gateway.

Every edit is validated with the full config loader before the file is replaced (atomically, with a
timestamped backup beside it); a running gateway is then asked to reload, which restarts only the
changed buses and keeps everything buffered in the outbox.
"""

from __future__ import annotations

import asyncio
import sys
import tomllib
from pathlib import Path
from typing import Any

import click
from rich.table import Table

from citynerve.gateway.api import ConfigError
from citynerve.gateway.cli._common import (
    EXIT_INVALID,
    FiniteRange,
    config_option,
    console,
    esc,
    fail,
    json_option,
    load_or_exit,
    print_config_issues,
    print_json,
)
from citynerve.gateway.cli._groups import main
from citynerve.gateway.commissioning import ConfigEditError, DeviceListEditor, ReloadReport, ask_reload
from citynerve.gateway.config import GatewayConfig


@main.group()
def devices() -> None:
    """List, add and remove devices in the config (validated, backed up, then reloaded)."""


@devices.command("list")
@config_option
@json_option
def list_devices(config_path: Path, as_json: bool) -> None:
    """List the configured devices with bus, profile, address and location."""
    cfg = load_or_exit(config_path)
    rows: list[dict[str, Any]] = [
        {
            "id": d.id,
            "name": d.name,
            "bus": d.bus,
            "profile": d.profile,
            "address": d.address,
            "enabled": d.enabled,
            "location": d.location.model_dump(exclude_defaults=True),
            "points": len(d.points),
            # One of several instances behind one unit id (a DALI gateway's lamps): where its registers start.
            **({"register_base": base} if (base := getattr(d, "register_base", 0)) else {}),
        }
        for d in cfg.devices
    ]
    if as_json:
        print_json({"devices": rows})
        return
    t = Table(title=f"{len(rows)} devices in {config_path}")
    for col in ("id", "bus", "profile", "address", "where", "points", "enabled"):
        t.add_column(col, overflow="fold")  # an 80-column terminal: ids wrap, never "em-0000000…"
    for r in rows:
        loc = r["location"]
        where = " / ".join(str(loc[k]) for k in ("building", "floor", "room", "text") if loc.get(k))
        address = f"{r['address']} +{r['register_base']}" if "register_base" in r else str(r["address"])
        t.add_row(
            *(esc(c) for c in (r["id"], r["bus"], r["profile"], address, where, r["points"], r["enabled"]))
        )
    console.print(t)


def _address(cfg: GatewayConfig, bus_id: str, text: str) -> int | str:
    """Modbus unit ids are numbers; meter addresses are digit strings whose leading zeros matter."""
    try:
        bus = cfg.bus(bus_id)
    except KeyError:
        return text  # the loader names the unknown bus
    spec = cfg.drivers.get(bus.protocol)
    annotation: Any = spec.device_model.model_fields["address"].annotation if spec else None
    if annotation is int and text.strip().lstrip("-").isdigit():
        return int(text)
    return text


MAX_SET_CHARS = 4096
"""Longest --set value: a driver field (meter_type=16, a short array or inline table)."""


def _value(key: str, text: str) -> Any:
    """A TOML value (number, bool, string, array, inline table); bare words are strings. Exits 2 on
    a value too long or nested too deeply to parse (tomllib recurses: a RecursionError)."""
    if len(text) > MAX_SET_CHARS:
        fail(f"--set {key[:64]}: value of {len(text)} characters (at most {MAX_SET_CHARS})", EXIT_INVALID)
    try:
        return tomllib.loads(f"v = {text}")["v"]
    except tomllib.TOMLDecodeError:
        return text
    except RecursionError:
        fail(f"--set {key[:64]}: value nested too deeply", EXIT_INVALID)


def save_or_exit(editor: DeviceListEditor, text: str) -> tuple[GatewayConfig, Path | None]:
    """Save the edited config (checked first), or print why not and exit (2: invalid; 1: not written)."""
    try:
        return editor.save(text)
    except ConfigError as err:
        print_config_issues(err)
        console.print(f"{editor.path} was not changed", highlight=False, markup=False)
        sys.exit(EXIT_INVALID)
    except ConfigEditError as err:  # the folder or the disk refused the write
        fail(str(err))


def _apply_and_reload(
    editor: DeviceListEditor, text: str, no_reload: bool
) -> tuple[Path | None, ReloadReport | None]:
    cfg, backup = save_or_exit(editor, text)
    if no_reload:
        return backup, None
    return backup, asyncio.run(ask_reload(Path(cfg.control.socket)))


def _report(
    action: str, device_id: str, path: Path, backup: Path | None, reload: ReloadReport | None, as_json: bool
) -> None:
    """One outcome: what changed in the file, then what the running gateway made of it."""
    outcome = reload.outcome.value if reload else "not_asked"
    message = reload.message() if reload else "the running gateway was not asked (--no-reload)"
    if as_json:
        print_json(
            {
                "action": action,
                "device": device_id,
                "config": str(path),
                "backup": str(backup) if backup else None,
                "outcome": outcome,
                "message": message,
                "reload": reload.to_dict() if reload else None,
            }
        )
        return
    style = {"reloaded": "green", "not_running": "green", "not_asked": "green"}.get(outcome, "yellow")
    console.print(
        f"[green]{action}[/] {esc(device_id)} in {esc(path)} (previous file kept as {esc(backup)})",
        highlight=False,
        soft_wrap=True,
    )
    console.print(f"[{style}]{esc(message)}[/]", highlight=False, soft_wrap=True)


@devices.command("add")
@config_option
@click.option("--id", "device_id", required=True, help="Device id, e.g. wm-0301.")
@click.option("--bus", "bus_id", required=True, help="Bus id from the config.")
@click.option("--profile", required=True, help="Profile id (file stem under profiles/).")
@click.option("--address", required=True, help="Unit id (Modbus) or meter address / MAC.")
@click.option("--name", default="", help="Readable name.")
@click.option("--address-code", help="Location address code (default: the gateway's street code).")
@click.option("--building", default="", help="Building.")
@click.option("--floor", default="", help="Floor, e.g. B1, 3.")
@click.option("--room", default="", help="Room.")
@click.option("--place", "text", default="", help="Free-text location, e.g. 'stairwell B'.")
@click.option("--lat", type=FiniteRange(-90, 90), help="Latitude.")
@click.option("--lon", type=FiniteRange(-180, 180), help="Longitude.")
@click.option("--component-code", help="16-digit city component code.")
@click.option("--tag", "tags", multiple=True, help="Tag (repeat).")
@click.option("--poll-interval", type=FiniteRange(0.01, 86400), help="Seconds between polls.")
@click.option("--set", "extra", multiple=True, help="KEY=TOML_VALUE for driver fields, e.g. meter_type=16.")
@click.option("--no-reload", is_flag=True, help="Do not ask a running gateway to reload.")
@json_option
def add(
    config_path: Path,
    device_id: str,
    bus_id: str,
    profile: str,
    address: str,
    name: str,
    address_code: str | None,
    building: str,
    floor: str,
    room: str,
    text: str,
    lat: float | None,
    lon: float | None,
    component_code: str | None,
    tags: tuple[str, ...],
    poll_interval: float | None,
    extra: tuple[str, ...],
    no_reload: bool,
    as_json: bool,
) -> None:
    """Add one device. The whole config is validated first; when invalid nothing is written and
    every problem is listed (exit 2)."""
    cfg = load_or_exit(config_path)
    location: dict[str, Any] = {"address_code": address_code or cfg.gateway.org.street}
    for key, value in (("building", building), ("floor", floor), ("room", room), ("text", text)):
        if value:
            location[key] = value
    if lat is not None:
        location["lat"] = lat
    if lon is not None:
        location["lon"] = lon
    entry: dict[str, Any] = {
        "id": device_id,
        "bus": bus_id,
        "profile": profile,
        "address": _address(cfg, bus_id, address),
    }
    if name:
        entry["name"] = name
    if poll_interval is not None:
        entry["poll_interval_s"] = poll_interval
    if component_code:
        entry["component_code"] = component_code
    if tags:
        entry["tags"] = list(tags)
    for item in extra:
        key, sep, raw = item.partition("=")
        if not sep or not key.strip():
            fail(f"--set {item!r}: expected KEY=VALUE", EXIT_INVALID)
        entry[key.strip()] = _value(key.strip(), raw.strip())
    entry["location"] = location
    try:
        editor = DeviceListEditor(config_path)
        new_text = editor.add(entry)
    except ConfigEditError as err:
        fail(str(err), EXIT_INVALID)
    backup, reload = _apply_and_reload(editor, new_text, no_reload)
    _report("added", device_id, config_path, backup, reload, as_json)


@devices.command("remove")
@config_option
@click.argument("device_id")
@click.option("--no-reload", is_flag=True, help="Do not ask a running gateway to reload.")
@json_option
def remove(config_path: Path, device_id: str, no_reload: bool, as_json: bool) -> None:
    """Remove the device DEVICE_ID (its block, with its point overrides). Rules that name it make the
    result invalid: then nothing is written and the problems are listed."""
    try:
        editor = DeviceListEditor(config_path)
        new_text = editor.remove(device_id)
    except ConfigEditError as err:
        fail(str(err), EXIT_INVALID)
    backup, reload = _apply_and_reload(editor, new_text, no_reload)
    _report("removed", device_id, config_path, backup, reload, as_json)
