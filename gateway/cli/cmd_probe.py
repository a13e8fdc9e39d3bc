"""`citynerve diag <protocol> probe --bus ID`: which line settings do the configured devices answer at?

Goes through the running gateway's bus owner (it pauses polling, tries the settings, and reopens the
configured ones), else opens the port directly. Ends with one line ("configured 9600 8N1, devices
answer at 2400 8E1") and offers to write the fix to the config through the safe config editor.
"""

from __future__ import annotations

import asyncio
import sys
from pathlib import Path
from typing import Any

import click

from citynerve.gateway.api import GatewayError
from citynerve.gateway.bus.probe import PROBE
from citynerve.gateway.cli import _common
from citynerve.gateway.cli._common import (
    EXIT_FAILED,
    EXIT_INVALID,
    FiniteRange,
    config_option,
    fail,
    json_option,
    load_or_exit,
    print_json,
)
from citynerve.gateway.diagbus import DiagSession


def _ints(text: str | None, what: str) -> list[int] | None:
    if not text:
        return None
    try:
        return [int(x) for x in text.replace(" ", "").split(",") if x]
    except ValueError:
        raise click.BadParameter(f"{text!r}: expected numbers like 2400,9600", param_hint=what) from None


def probe_options(f: Any) -> Any:
    for option in reversed(
        [
            config_option,
            click.option("--bus", "bus_id", required=True, help="Bus id from the config."),
            click.option("--bauds", help="Baud rates to try, e.g. 2400,9600 (default: the common ones)."),
            click.option("--parities", help="Parities to try, e.g. E,N (default: N,E,O)."),
            click.option("--stopbits", "stops", help="Stop bits to try, e.g. 1,2 (default: 1)."),
            click.option(
                "--timeout",
                "timeout_s",
                type=FiniteRange(0.05, 5),  # the probe action's own bound (gateway/bus/probe.py)
                default=0.3,
                show_default=True,
                help="Reply timeout per device and setting (s).",
            ),
            click.option("--write", is_flag=True, help="Write the settings found to the config."),
            click.option("--yes", is_flag=True, help="With --write: do not ask."),
            json_option,
        ]
    ):
        f = option(f)
    return f


def run_probe(
    protocol_prefix: str,
    config_path: Path,
    bus_id: str,
    bauds: str | None,
    parities: str | None,
    stops: str | None,
    timeout_s: float,
    write: bool,
    yes: bool,
    as_json: bool,
) -> None:
    cfg = load_or_exit(config_path)
    bus = next((b for b in cfg.buses if b.id == bus_id), None)
    if bus is None:
        fail(f"no bus {bus_id!r} in {config_path}", EXIT_INVALID)
    if not bus.protocol.startswith(protocol_prefix):
        fail(f"bus {bus_id} speaks {bus.protocol}, not {protocol_prefix}", EXIT_INVALID)
    params: dict[str, Any] = {"timeout_s": timeout_s}
    for key, value in (("bauds", _ints(bauds, "--bauds")), ("stopbits", _ints(stops, "--stopbits"))):
        if value:
            params[key] = value
    if parities:
        params["parities"] = [p.strip().upper() for p in parities.split(",") if p.strip()]
    n_devices = max(1, len(cfg.devices_on(bus_id)))
    budget = 60.0 + 3 * 7 * 2 * n_devices * timeout_s * 2

    async def run() -> dict[str, Any]:
        async with DiagSession(cfg, bus_id, timeout_s=budget) as session:
            result = await session.run(PROBE, params)
            result["route"] = session.route.value if session.route else None
            return result

    try:
        result = asyncio.run(run())
    except GatewayError as err:
        fail(str(err))
    fix = result.get("fix")
    if as_json:
        print_json(result)
    else:
        _show(result)
    if fix and (write or (not as_json and sys.stdin.isatty())):
        from citynerve.gateway.commissioning.bussettings import save_bus_settings

        if yes or click.confirm(f"write {result['found']} to bus {bus_id} in {config_path}?", default=False):
            try:
                _, backup = save_bus_settings(config_path, bus_id, fix)
            except GatewayError as err:
                fail(str(err))
            from citynerve.gateway.commissioning import ask_reload

            report = asyncio.run(ask_reload(Path(cfg.control.socket)))
            _common.err_console.print(
                f"wrote {result['found']} to bus {bus_id} in {config_path}"
                + (f" (previous file kept as {backup})" if backup else "")
                + f"; running gateway: {report.outcome.value}",
                highlight=False,
                markup=False,
            )
    if result.get("found") is None:
        raise SystemExit(EXIT_FAILED)


def _show(result: dict[str, Any]) -> None:
    from rich.table import Table

    t = Table(title=_common.esc(f"bus {result['bus']}: settings tried ({result.get('route')})"))
    for col in ("settings", "answered", "garbled (something answers)", "silent"):
        t.add_column(col)
    for trial in result["trials"]:
        t.add_row(
            _common.esc(trial["settings"]),
            _common.esc(", ".join(trial["answered"]) or "-"),
            _common.esc(", ".join(trial["garbled"]) or "-"),
            _common.esc(", ".join(trial["silent"]) or "-"),
        )
    _common.console.print(t)
    _common.console.print(f"[bold]{_common.esc(result['conclusion'])}[/]", highlight=False)


def _register() -> None:
    from citynerve.gateway.cli.cmd_diag import modbus

    @modbus.command("probe")
    @probe_options
    def modbus_probe(**opts: Any) -> None:
        """Find the baud rate, parity and stop bits the configured units answer at (RTU buses).

        Tries each setting with every configured unit id (never a broadcast); a garbled reply counts
        as "something answers at this speed". Exits 1 when no setting gets a valid reply.
        """
        run_probe("modbus", **opts)


_register()
