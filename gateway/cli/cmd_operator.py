"""`citynerve operator ...`: operator controls on the running gateway, through its control socket.

The same requests the platform sends as signed commands (docs/fleet.md); the audit line and the
upstream `operator` event name the local user and process.
"""

from __future__ import annotations

import asyncio
import getpass
import json
import re
import time
from datetime import datetime
from pathlib import Path
from typing import Any

import click

from citynerve.gateway.cli import _common
from citynerve.gateway.cli._common import EXIT_INVALID, config_option, fail, json_option
from citynerve.gateway.cli._groups import main
from citynerve.gateway.cli.cmd_run import socket_of
from citynerve.gateway.control import ControlError, GatewayNotRunningError, ask

_DURATION = re.compile(r"^(\d+(?:\.\d+)?)([smhd])$")
_UNIT_S = {"s": 1, "m": 60, "h": 3600, "d": 86400}


@main.group()
def operator() -> None:
    """Operator controls: away/back, maintenance, alarm acknowledgement, action override."""


def _end(for_: str | None, until: str | None) -> dict[str, Any]:
    if for_ and until:
        fail("give --for or --until, not both", EXIT_INVALID)
    if for_:
        m = _DURATION.match(for_)
        if not m:
            fail("--for is a number with s, m, h or d (30m, 2h, 3d)", EXIT_INVALID)
        return {"for_s": float(m.group(1)) * _UNIT_S[m.group(2)]}
    if until:
        try:
            ts = datetime.fromisoformat(until).timestamp()  # no zone: local time, as a user means it
        except ValueError:
            fail("--until is an ISO 8601 date and time (2026-12-24T18:00)", EXIT_INVALID)
        return {"until_ms": int(ts * 1000)}
    return {}


def _send(config_path: Path, socket: Path | None, request: str, args: dict[str, Any], as_json: bool) -> None:
    path = socket_of(config_path, socket)
    try:
        result = asyncio.run(ask(path, "operator", request=request, args=args, user=getpass.getuser()))
    except (GatewayNotRunningError, ControlError) as err:
        fail(str(err))
    if as_json:
        click.echo(json.dumps(result, indent=2, default=str))
        return
    until = result.get("until") if isinstance(result, dict) else None
    tail = f" until {time.strftime('%Y-%m-%d %H:%M:%S', time.localtime(until))}" if until else ""
    reset = result.get("reset") if isinstance(result, dict) else None
    if reset:  # maintenance ended by hand: rules judging the device by its history start afresh
        tail += f"; reset {', '.join(map(str, reset))}"
    _common.console.print(f"{request}: done{tail}", highlight=False, markup=False)


_socket = click.option("--socket", type=click.Path(path_type=Path), help="Control socket.")


@operator.command()
@click.argument("household")
@click.option("--for", "for_", help="Duration (3d, 12h); open-ended when neither is given.")
@click.option("--until", help="End time, ISO 8601 (local time unless it names a zone).")
@config_option
@_socket
@json_option
def away(
    household: str, for_: str | None, until: str | None, config_path: Path, socket: Path | None, as_json: bool
) -> None:
    """Mark a household away: its `suppress_when_away` rules do not raise."""
    _send(config_path, socket, "away", {"device_id": household, **_end(for_, until)}, as_json)


@operator.command()
@click.argument("household")
@config_option
@_socket
@json_option
def back(household: str, config_path: Path, socket: Path | None, as_json: bool) -> None:
    """Mark a household back home."""
    _send(config_path, socket, "back", {"device_id": household}, as_json)


@operator.command()
@click.argument("device")
@click.option("--for", "for_", help="Duration (30m, 2h, 1d).")
@click.option("--until", help="End time, ISO 8601.")
@click.option("--reason", default="", help="Shown in status and sent upstream.")
@click.option("--end", "end_now", is_flag=True, help="End the device's maintenance now.")
@config_option
@_socket
@json_option
def maintenance(
    device: str,
    for_: str | None,
    until: str | None,
    reason: str,
    end_now: bool,
    config_path: Path,
    socket: Path | None,
    as_json: bool,
) -> None:
    """Put a device in maintenance until an end time: its alarms go upstream flagged `maintenance`."""
    if end_now:
        _send(config_path, socket, "maintenance_end", {"device_id": device}, as_json)
        return
    end = _end(for_, until)
    if not end:
        fail("maintenance needs an end time: --for or --until", EXIT_INVALID)
    args = {"device_id": device, **end, **({"reason": reason} if reason else {})}
    _send(config_path, socket, "maintenance", args, as_json)


@operator.command()
@click.argument("device")
@click.argument("kind")
@click.option("--rule", help="Only the alarm of this rule.")
@config_option
@_socket
@json_option
def ack(
    device: str, kind: str, rule: str | None, config_path: Path, socket: Path | None, as_json: bool
) -> None:
    """Acknowledge (silence) the active KIND alarm of DEVICE: it stays listed, marked acknowledged."""
    _send(
        config_path,
        socket,
        "ack",
        {"device_id": device, "kind": kind, **({"rule": rule} if rule else {})},
        as_json,
    )


@operator.command()
@click.argument("device")
@click.argument("action_id")
@click.argument("state", type=click.Choice(["on", "off"]))
@config_option
@_socket
@json_option
def override(
    device: str, action_id: str, state: str, config_path: Path, socket: Path | None, as_json: bool
) -> None:
    """Override a local action on a device: while on, the action never writes to it."""
    args = {"device_id": device, "action_id": action_id, "on": state == "on"}
    _send(config_path, socket, "override", args, as_json)
