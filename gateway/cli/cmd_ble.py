"""`citynerve diag ble scan`: which BTHome nodes this gateway hears, how well, and what they say;
`citynerve diag ble reset-counter`: forget a reflashed node's replay counter.

For installers at a manhole: is the node heard, how strong (RSSI), is it encrypted, does the
configured key open it, is it in the config. Through the running gateway when there is one (it
owns the adapter), else on the adapter directly. The BLE driver is found through the
`citynerve.drivers` entry point `bthome`; this module never imports a driver package.
"""

from __future__ import annotations

import asyncio
from importlib.metadata import entry_points
from pathlib import Path
from typing import Any

import click
from rich.table import Table

from citynerve.gateway.api import ConfigError, DriverSpec, GatewayError
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
from citynerve.gateway.config import GatewayConfig
from citynerve.gateway.control import ControlError, GatewayNotRunningError, ask
from citynerve.gateway.diagbus import DiagSession

PROTOCOL = "bthome"


def _spec() -> DriverSpec:
    eps = [ep for ep in entry_points(group="citynerve.drivers") if ep.name == PROTOCOL]
    if not eps:
        fail("the BTHome driver is not installed (entry point citynerve.drivers:bthome)")
    spec = eps[0].load()
    if not isinstance(spec, DriverSpec):
        fail(f"entry point {eps[0].value} is not a DriverSpec")
    return spec


async def _config_scan(cfg: GatewayConfig, bus_id: str, duration: float) -> dict[str, Any]:
    async with DiagSession(cfg, bus_id, timeout_s=duration + 30) as session:
        result = await session.run("scan", {"duration": duration})
        result["route"] = session.route.value if session.route else None
        return result


async def _adhoc_scan(spec: DriverSpec, bus_fields: dict[str, Any], duration: float) -> dict[str, Any]:
    bus = spec.bus_model.model_validate({"id": "ble-adhoc", "protocol": PROTOCOL, **bus_fields})
    driver = spec.factory(bus, [])
    try:
        await driver.open()
        return await driver.diag("scan", {"duration": duration})
    finally:
        await driver.close()


@diag.group("ble")
def ble() -> None:
    """BLE (BTHome) diagnostics: what the gateway's adapter hears."""


@ble.command("scan")
@click.option(
    "--duration",
    type=FiniteRange(0.1, 300),
    default=10.0,
    show_default=True,
    help="How long to listen, in seconds.",
)
@click.option("--bus", "bus_id", help="The BLE bus of the config to scan on (default: the only one).")
@click.option("--adapter", help="Scan this BlueZ adapter (e.g. hci0) without a config.")
@click.option("--transport", help="Scan through bumble on this HCI transport (e.g. usb:0) without a config.")
@config_option
@json_option
def scan(
    duration: float,
    bus_id: str | None,
    adapter: str | None,
    transport: str | None,
    config_path: Path,
    as_json: bool,
) -> None:
    """List nearby BTHome devices: address, RSSI, encryption, decoded values, configured or not.

    With the config (default), configured nodes are decrypted with their keys and named. With
    --adapter or --transport, the adapter is scanned directly and nothing is configured.
    Exits 1 when nothing was heard, or when a configured node was heard but its adverts did not
    decode (wrong key, malformed); 2 for bad input.

    \b
    citynerve diag ble scan --duration 20
    citynerve diag ble scan --transport usb:0 --json
    """
    spec = _spec()
    try:
        if adapter or transport:
            fields: dict[str, Any] = (
                {"backend": "bumble", "transport": transport} if transport else {"adapter": adapter}
            )
            result = asyncio.run(_adhoc_scan(spec, fields, duration))
            result["route"] = "direct"
            where = transport or adapter or ""
        else:
            cfg = load_or_exit(config_path)
            ble_buses = [b.id for b in cfg.buses if b.protocol == PROTOCOL]
            if bus_id is None:
                if len(ble_buses) != 1:
                    fail(
                        f"{config_path}: {len(ble_buses)} BLE buses ({', '.join(ble_buses) or 'none'}); "
                        "name one with --bus",
                        EXIT_INVALID,
                    )
                bus_id = ble_buses[0]
            elif bus_id not in ble_buses:
                fail(
                    f"no BLE bus {bus_id!r} in {config_path} (BLE buses: {', '.join(ble_buses) or 'none'})",
                    EXIT_INVALID,
                )
            result = asyncio.run(_config_scan(cfg, bus_id, duration))
            via = "through the running gateway" if result.get("route") == "gateway" else "directly"
            where = f"bus {bus_id} ({via})"
    except ConfigError as err:
        fail(str(err).replace("\n", "; "), EXIT_INVALID)
    except (GatewayError, ValueError) as err:
        fail(str(err).replace("\n", "; "))
    devices: list[dict[str, Any]] = result.get("devices", [])
    bad = [d for d in devices if d.get("configured") and d.get("error")]
    ok = bool(devices) and not bad
    if as_json:
        print_json({"ok": ok, "duration_s": duration, "route": result.get("route"), "devices": devices})
    else:
        _table(devices, where, duration)
    if not ok:
        raise SystemExit(EXIT_FAILED)


@ble.command("reset-counter")
@click.argument("device")
@config_option
@json_option
def reset_counter(device: str, config_path: Path, as_json: bool) -> None:
    """Forget a BLE node's replay counter, so that its next advert is accepted.

    For a node whose flash was erased and that kept its key: its encryption counter started again
    at 1, and the gateway refuses every advert below the last one it accepted (status: counter
    restarted). Provisioning it anew with a new key needs no reset (each key has its own counter).
    Only reset a node you have just reflashed: any advert of it ever captured is accepted once
    more until the node's counter passes it again. Runs through the running gateway (its store
    holds the counters); exits 1 when no gateway answers, 2 when DEVICE is no BLE node of the config.

    \b
    citynerve diag ble reset-counter mh-0001
    """
    cfg = load_or_exit(config_path)
    dev = next((d for d in cfg.devices if d.id == device), None)
    bus = next((b for b in cfg.buses if dev is not None and b.id == dev.bus), None)
    if dev is None or bus is None or bus.protocol != PROTOCOL:
        nodes = [d.id for d in cfg.devices for b in cfg.buses if b.id == d.bus and b.protocol == PROTOCOL]
        fail(
            f"no BLE node {device!r} in {config_path} (BLE nodes: {', '.join(nodes[:10]) or 'none'}"
            f"{', ...' if len(nodes) > 10 else ''})",
            EXIT_INVALID,
        )
    socket = Path(cfg.control.socket)
    try:
        result = asyncio.run(
            ask(socket, "diag", bus=bus.id, action="reset-counter", params={"device": device})
        )
    except GatewayNotRunningError as err:
        fail(f"{err}: the counters are in the running gateway's store; start it, then run this again")
    except (ControlError, GatewayError, OSError) as err:
        fail(f"bus {bus.id}: device {device}: counter not reset: {err}")
    if as_json:
        print_json({"ok": True, "bus": bus.id, **dict(result or {})})
        return
    was = (result or {}).get("was")
    console.print(
        f"{device}: replay counter reset (was {'not loaded' if was is None else was}); "
        "its next advert is accepted",
        highlight=False,
        markup=False,
    )


def _table(devices: list[dict[str, Any]], where: str, duration: float) -> None:
    if not devices:
        console.print(f"[bold red]nothing heard[/] on {esc(where)} in {duration:g} s", highlight=False)
        return
    table = Table(title=f"BTHome devices heard on {esc(where)} in {duration:g} s")
    for col in ("address", "RSSI", "encrypted", "configured", "values / error"):
        table.add_column(col)
    for d in devices:
        values = d.get("values")
        shown = (
            f"[red]{esc(d['error'])}[/]"
            if d.get("error")
            else esc(", ".join(f"{k}={v}" for k, v in (values or {}).items()))
        )
        table.add_row(
            esc(d["address"]),
            "" if d.get("rssi") is None else f"{d['rssi']} dBm",
            "yes" if d.get("encrypted") else "no",
            f"[green]{esc(d['device_id'])}[/]" if d.get("configured") else "no",
            shown,
        )
    console.print(table)
