"""`citynerve run` and `citynerve status`."""

from __future__ import annotations

import asyncio
import sys
import time
from pathlib import Path
from typing import Any

import click

from citynerve.gateway.api import ConfigError
from citynerve.gateway.cli import _common
from citynerve.gateway.cli._common import (
    allow_insecure_secrets_option,
    config_option,
    corrupt_copy_line,
    esc,
    fail,
    json_option,
    print_json,
)
from citynerve.gateway.cli._groups import main
from citynerve.gateway.cli._run import LOG_FORMATS, LOG_LEVELS
from citynerve.gateway.control import ControlError, GatewayNotRunningError, ask


@main.command()
@config_option
@click.option("--log-level", type=click.Choice(LOG_LEVELS), help="Override [log].")
@click.option("--log-format", type=click.Choice(LOG_FORMATS), help="Override [log].")
@allow_insecure_secrets_option
@click.option(
    "--dry-run-actions",
    is_flag=True,
    help="Local actions log and report what they would write, write nothing ([rules] dry_run_actions).",
)
def run(
    config_path: Path,
    log_level: str | None,
    log_format: str | None,
    allow_insecure_secrets: bool,
    dry_run_actions: bool,
) -> None:
    """Run the gateway: poll buses, detect, store, forward. Stops cleanly on SIGTERM / Ctrl-C.

    An invalid config is refused with the same messages as `config check` (exit 2).

    SIGHUP re-reads the config, as `config reload` does (the answer goes to the log).
    """
    # The console entry point runs `citynerve run` through _run's own parser (no click in the
    # service's memory); this command has the same options and does the same.
    from citynerve.gateway.cli._run import RunArgs, start

    start(RunArgs(config_path, log_level, log_format, allow_insecure_secrets, dry_run_actions))


def socket_of(config_path: Path, socket: Path | None) -> Path:
    """The control socket: `--socket`, else the config's `[control]` (only that section is checked:
    validating a thousand devices to find a path is most of a slow box's wait)."""
    if socket is not None:
        return socket
    from citynerve.gateway.config.sections import control_socket

    try:
        return control_socket(config_path)
    except ConfigError as err:
        _common.print_config_issues(err)
        sys.exit(_common.EXIT_INVALID)


@main.command()
@config_option
@click.option("--socket", type=click.Path(path_type=Path), help="Control socket (instead of the config's).")
@json_option
def status(config_path: Path, socket: Path | None, as_json: bool) -> None:
    """Ask the running gateway how it is: buses, devices online/offline/faulted with last readings,
    errors, and every active alarm (rules, fire panel, BTHome nodes, offline and faulted devices)."""
    path = socket_of(config_path, socket)
    try:
        result: dict[str, Any] = asyncio.run(ask(path, "status"))
    except (GatewayNotRunningError, ControlError) as err:
        fail(str(err))
    if as_json:
        print_json(result)
        return
    show_status(result)


def _age(ts: float | None) -> str:
    if not ts:
        return "-"
    s = time.time() - ts
    return f"{s:.0f}s ago" if s < 120 else f"{s / 60:.0f}m ago"


def show_time(t: dict[str, Any] | None) -> None:
    """Gateway UTC time, NTP state and skew against the meters' own clocks."""
    if not t:
        return
    ntp = {True: "synchronised", False: "[red]NOT synchronised[/]", None: "unknown"}[
        t.get("ntp_synchronized")
    ]
    skew = t.get("median_meter_skew_s")
    meters = f"; meters' clocks {skew:+.0f} s (median of {len(t['meters'])})" if skew is not None else ""
    platform = t.get("platform_skew_s")
    if platform is not None:
        meters += f"; platform's clock {platform:+.1f} s"
    _common.console.print(f"time: gateway {esc(t['gateway_utc'])} UTC, NTP {ntp}{meters}", highlight=False)
    if t.get("reason"):
        _common.console.print(f"[yellow]time: {esc(t['reason'])}[/]", highlight=False)


def _errors(dev: dict[str, Any]) -> str:
    """Failures with their denominator: "12/40 (30%) in 300s", else the total count."""
    window = dev.get("window") or {}
    if window.get("attempts"):
        return (
            f"{window['failures']}/{window['attempts']} ({window['rate']:.0%}) in {window['window_s']:.0f}s"
        )
    return str(dev.get("errors", 0))


_STATE = {True: "[green]online[/]", False: "[red]offline[/]", None: "[yellow]unknown[/]"}
_VERDICT_STATE = {
    "online": "[green]online[/]",
    "degraded": "[yellow]degraded[/]",
    "offline": "[red]offline[/]",
    "unknown": "[yellow]unknown[/]",
}


def show_config(config: dict[str, Any] | None) -> None:
    """The config's version and hash, and the sections a reload left for a restart."""
    if not config:
        return
    line = f"config: version {config.get('version')}, sha256 {str(config.get('sha256'))[:12]}"
    pending = config.get("restart_pending") or []
    if pending:
        started = config.get("started") or {}
        line += (
            f"; restart pending for {', '.join(f'[{s}]' for s in pending)}: these run as in the config"
            f" at start (version {started.get('version')}, sha256 {str(started.get('sha256'))[:12]})"
            " until systemctl restart citynerve"
        )
    _common.console.print(line, highlight=False, markup=False, style="yellow" if pending else None)


def show_status(st: dict[str, Any]) -> None:
    from rich.table import Table

    console = _common.console
    console.print(
        f"[bold]{esc(st['gateway_id'])}[/] {esc(st.get('name') or '')}  v{esc(st['version'])}  "
        f"up {st['uptime_s']:.0f}s  "
        f"devices online {st['devices_online']}/{st['devices_total']}",
        highlight=False,
    )
    table = Table(title="devices", show_lines=False)
    for col in ("bus", "device", "state", "last success", "failed (window)", "last reading / reason"):
        table.add_column(col, overflow="fold")  # an 80-column terminal: ids wrap, never "em-00000000…"
    for bus in st["buses"]:
        bus_state = ""
        if bus.get("adapter_missing"):
            bus_state = f" [red](waiting for adapter {esc(bus['adapter_missing'])})[/]"
        elif bus["channel"] != "open":
            bus_state = f" [red](channel down: {esc(bus['channel_error'])})[/]"
        for dev in bus["devices"]:
            verdict_state = dev.get("state")
            state = (
                "[red]faulted[/]"
                if dev.get("faulted")
                else _VERDICT_STATE.get(verdict_state or "", _STATE[dev["online"]])
            )
            readings = ", ".join(
                f"{p}={r['value']}{(' ' + r['unit']) if r['unit'] else ''}"
                + (" (suspect)" if r.get("quality") == "suspect" else "")
                for p, r in list(dev.get("readings", {}).items())[:4]
            )
            detail = readings if dev["online"] and not dev.get("faulted") else (dev.get("last_error") or "")
            if verdict_state in ("degraded", "offline") and dev.get("reason"):
                detail = dev["reason"]
            radio = dev.get("radio")
            if radio:
                rejected = ", ".join(f"{n} {k}" for k, n in radio["rejected"].items())
                rssi = f", RSSI {radio['last_rssi']} dBm" if radio.get("last_rssi") is not None else ""
                heard = f"heard {_age(radio['last_heard'])}" if radio.get("last_heard") else "never heard"
                detail = f"{heard}{rssi}" + (f", rejected {rejected}" if rejected else "") + f"; {detail}"
            table.add_row(
                esc(bus["id"]) + bus_state,
                esc(dev["id"]),
                state,
                _age(dev["last_success"]),
                _errors(dev),
                esc(detail),
            )
    console.print(table)
    show_config(st.get("config"))
    show_alarms(st.get("alarms") or [])
    show_operator(st.get("operator") or {})
    upd = st.get("software_update")
    if upd:  # a software update the platform started (docs/fleet.md)
        why = f": {upd['reason']}" if upd.get("reason") else ""
        console.print(f"software update {upd['update_id']}: {upd['phase']}, {upd['received_bytes']} of "
                      f"{upd['size']} bytes{why}", highlight=False, markup=False)  # fmt: skip
    for bus in st["buses"]:  # what a listening bus refused (garbage, over-rate): counted, not stored
        refused = {k: v for k, v in (bus.get("input") or {}).items() if v}
        if refused:
            text = ", ".join(f"{k.replace('_', ' ')} {v}" for k, v in sorted(refused.items()))
            console.print(f"bus {bus['id']} refused input: {text}", highlight=False, markup=False)
    clock = st.get("clock")
    if clock:
        color = "green" if clock.get("synchronized") else "yellow"
        steps = f", {clock['wall_steps']} wall clock step(s) seen" if clock.get("wall_steps") else ""
        note = "" if clock.get("synchronized") else " (events stamped now are marked clock_unsynced)"
        console.print(
            f"clock: [{color}]{esc(clock.get('state'))}[/] (source {esc(clock.get('source') or 'none')})"
            f"{note}{steps}",
            highlight=False,
        )
    for bus in st["buses"]:
        verdict = bus.get("verdict") or {}
        if bus.get("adapter_missing"):  # in field words: what the technician at the box can do
            console.print(
                f"bus {bus['id']}: waiting for adapter {bus['adapter_missing']} — plug it in "
                "(looked for every second; no restart needed)",
                style="red",
                highlight=False,
                markup=False,
            )
        elif verdict.get("cause", "ok") != "ok":
            colour = "red" if verdict.get("state") == "offline" else "yellow"
            console.print(f"[{colour}]bus {esc(bus['id'])}: {esc(verdict.get('reason'))}[/]", highlight=False)
    store = st.get("store")
    if store:
        lanes = ", ".join(
            f"{lane['lane']}: {lane['rows']} rows, dropped {lane['dropped']}"
            for lane in store.get("lanes", [])
        )
        console.print(
            f"outbox: {lanes}; file {store.get('file_bytes', 0) / 1e6:.1f} MB", highlight=False, markup=False
        )
        state = store.get("state", "ok")
        mark = "green" if state == "ok" else "red"
        by = ", ".join(f"{k} {v}" for k, v in (store.get("dropped_by") or {}).items()) or "none"
        console.print(
            f"outbox state [{mark}]{esc(state)}[/], epoch {esc(store.get('epoch') or '-')}, "
            f"dropped unsent: {esc(by)}"
            + (f", corrupt file moved to {esc(store['quarantined'])}" if store.get("quarantined") else ""),
            highlight=False,
        )
        if store.get("corrupt_copy"):
            console.print(
                corrupt_copy_line(store["corrupt_copy"]), style="yellow", highlight=False, markup=False
            )
    show_time(st.get("time"))
    up = st.get("uplink")
    if up is None:
        console.print("uplink: not configured", highlight=False)
    else:
        console.print(
            f"uplink: {up.get('state')} {up.get('broker') or ''}, published {up.get('published_rows')}, "
            f"acked {up.get('acked_rows')}, reconnects {up.get('reconnects')}"
            + (f", last error: {up['last_error']}" if up.get("last_error") else ""),
            highlight=False,
            markup=False,
        )


def show_operator(op: dict[str, Any]) -> None:
    """Operator flags in force: away households, devices in maintenance, action overrides."""
    from rich.markup import escape

    console = _common.console
    for name, label in (("away", "away"), ("maintenance", "maintenance"), ("overrides", "override")):
        for w in op.get(name) or []:
            until = "open-ended" if w.get("until") is None else f"ends in {w.get('remaining_s', 0):.0f}s"
            reason = f" ({w['reason']})" if w.get("reason") else ""
            line = f"operator: {label} {w['target']}{reason}, {until}, by {w['by']}"
            console.print(escape(line), highlight=False)


_SEVERITY_STYLE = {"critical": "bold red", "major": "red", "minor": "yellow", "warning": "yellow"}


def show_alarms(alarms: list[dict[str, Any]]) -> None:
    """Every active alarm, whatever raised it (rules, fire panel, BTHome nodes, bus owners)."""
    from rich.table import Table

    console = _common.console
    if not alarms:
        console.print("alarms: none active", highlight=False)
        return
    table = Table(title=f"active alarms ({len(alarms)})", show_lines=False)
    for col in ("severity", "device", "kind", "raised", "source", "message"):
        table.add_column(col)
    for a in alarms:
        sev = str(a.get("severity", ""))
        style = _SEVERITY_STYLE.get(sev, "")
        what = a.get("kind", "") + (f" {a['subject']}" if a.get("subject") else "")
        source = str(a.get("rule", "")) + (" (restored)" if a.get("restored") else "")
        if a.get("maintenance"):
            source += " (maintenance)"
        if a.get("acked_by"):
            source += f" (acknowledged by {a['acked_by']})"
        table.add_row(
            f"[{style}]{esc(sev)}[/]" if style else esc(sev),
            esc(a.get("device_id", "")),
            esc(what),
            _age(a.get("raised_at")),
            esc(source),
            esc(str(a.get("message", ""))[:80]),
        )
    console.print(table)
