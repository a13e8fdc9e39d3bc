"""`python -m citynerve.hil.platform fleet ...`: operator controls, diagnostics, logs and software
updates on a gateway.

Each subcommand signs one command with the given key, sends it and prints the gateway's answer as
JSON (exit 0 when the outcome is ok). `logs` reassembles the chunked log tail and checks its hash.
"""

from __future__ import annotations

import asyncio
import json
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import aiomqtt
import click

from citynerve.hil.platform.commands import CommandSigner
from citynerve.hil.platform.fleet import FleetClient, UploadError


@click.group()
@click.option("--broker", "url", default="mqtt://127.0.0.1:1883", show_default=True)
@click.option("--prefix", default="citynerve", show_default=True)
@click.option("--gateway", "gateway_id", required=True)
@click.option("--hmac-key-file", type=click.Path(exists=True, dir_okay=False, path_type=Path), required=True)
@click.option("--key-id", help="id of the signing key on the gateway ([[upstream.commands.keys]])")
@click.option("--timeout", "timeout_s", type=float, default=20.0, show_default=True)
@click.pass_context
def fleet(
    ctx: click.Context,
    url: str,
    prefix: str,
    gateway_id: str,
    hmac_key_file: Path,
    key_id: str | None,
    timeout_s: float,
) -> None:
    """Operator controls, diagnostics and logs on one gateway (docs/fleet.md)."""
    from citynerve.hil.platform.__main__ import _broker

    host, port = _broker(url)
    ctx.obj = {
        "host": host,
        "port": port,
        "prefix": prefix,
        "gateway": gateway_id,
        "signer": CommandSigner.from_hmac_file(hmac_key_file),
        "key_id": key_id,
        "timeout": timeout_s,
    }


def _client(o: dict[str, Any]) -> FleetClient:
    return FleetClient(
        o["host"], o["port"], o["signer"], key_id=o["key_id"], prefix=o["prefix"], timeout_s=o["timeout"]
    )


def _send(ctx: click.Context, action: str, args: dict[str, Any]) -> None:
    o = ctx.obj

    async def main() -> dict[str, Any]:
        async with _client(o) as f:
            return await f.send(o["gateway"], action, args)

    _print(main)


def _print(main: Callable[[], Any], before: Callable[[], None] | None = None) -> None:
    try:
        result = asyncio.run(main())
    except (TimeoutError, aiomqtt.MqttError) as err:
        click.echo(f"error: no result: {err or 'timed out'}", err=True)
        sys.exit(1)
    if before is not None:
        before()
    click.echo(json.dumps(result))
    sys.exit(0 if result.get("outcome") == "ok" else 1)


def _end(for_s: float | None, until_ms: int | None) -> dict[str, Any]:
    return {**({"for_s": for_s} if for_s is not None else {}), **({"until_ms": until_ms} if until_ms else {})}


_for = click.option("--for-s", type=float, help="duration in seconds")
_until = click.option("--until-ms", type=int, help="end time, ms since the epoch (UTC)")


@fleet.command()
@click.argument("household")
@_for
@_until
@click.pass_context
def away(ctx: click.Context, household: str, for_s: float | None, until_ms: int | None) -> None:
    """Mark a household away (optional end)."""
    _send(ctx, "set_away", {"device_id": household, **_end(for_s, until_ms)})


@fleet.command()
@click.argument("household")
@click.pass_context
def back(ctx: click.Context, household: str) -> None:
    """Mark a household back home."""
    _send(ctx, "set_back", {"device_id": household})


@fleet.command()
@click.argument("device")
@_for
@_until
@click.option("--reason", default="")
@click.option("--end", "end_now", is_flag=True, help="end the maintenance now")
@click.pass_context
def maintenance(
    ctx: click.Context, device: str, for_s: float | None, until_ms: int | None, reason: str, end_now: bool
) -> None:
    """Put a device in maintenance until an end time (or end it with --end)."""
    if end_now:
        _send(ctx, "end_maintenance", {"device_id": device})
    else:
        extra = {"reason": reason} if reason else {}
        _send(ctx, "set_maintenance", {"device_id": device, **_end(for_s, until_ms), **extra})


@fleet.command()
@click.argument("device")
@click.argument("kind")
@click.option("--rule")
@click.pass_context
def ack(ctx: click.Context, device: str, kind: str, rule: str | None) -> None:
    """Acknowledge (silence) an active alarm."""
    _send(ctx, "ack_alarm", {"device_id": device, "kind": kind, **({"rule": rule} if rule else {})})


@fleet.command()
@click.argument("device")
@click.argument("action_id")
@click.argument("state", type=click.Choice(["on", "off"]))
@click.pass_context
def override(ctx: click.Context, device: str, action_id: str, state: str) -> None:
    """Override a local action on a device (on: the action never writes to it)."""
    _send(ctx, "set_override", {"device_id": device, "action_id": action_id, "on": state == "on"})


@fleet.command()
@click.argument("what", type=click.Choice(["store", "buses", "errors", "uplink"]))
@click.option("--probe", is_flag=True, help="uplink: probe every broker from the gateway")
@click.pass_context
def diag(ctx: click.Context, what: str, probe: bool) -> None:
    """Allowlisted diagnostics: store stats, bus statistics, recent errors per device, uplink."""
    _send(ctx, f"diag_{what}", {"probe": True} if probe else {})


@fleet.command("log-level")
@click.argument("level", type=click.Choice(["debug", "info", "warning"]))
@click.option("--for-s", type=float, default=600.0, show_default=True)
@click.pass_context
def log_level(ctx: click.Context, level: str, for_s: float) -> None:
    """Raise the log level for a bounded time (it reverts by itself)."""
    _send(ctx, "set_log_level", {"level": level, "for_s": for_s})


@fleet.command()
@click.option("--max-bytes", type=int, default=64 * 1024, show_default=True)
@click.option("--out", type=click.Path(dir_okay=False, path_type=Path), help="write the log here")
@click.pass_context
def logs(ctx: click.Context, max_bytes: int, out: Path | None) -> None:
    """Fetch the log tail (chunked, hash-checked); prints it unless --out."""
    o = ctx.obj

    got: list[bytes] = []

    async def main() -> dict[str, Any]:
        async with _client(o) as f:
            final, data = await f.fetch_upload(o["gateway"], "log_tail", {"max_bytes": max_bytes})
        got.append(data)
        return final

    def write_log() -> None:
        if got and got[0]:
            if out is not None:
                out.write_bytes(got[0])
            else:
                sys.stdout.write(got[0].decode("utf-8", "replace"))

    try:
        _print(main, before=write_log)
    except UploadError as err:
        click.echo(f"error: upload broken: {err}", err=True)
        sys.exit(1)


@fleet.command()
@click.pass_context
def restart(ctx: click.Context) -> None:
    """Restart the gateway service."""
    _send(ctx, "restart_service", {})


@fleet.command()
@click.pass_context
def reboot(ctx: click.Context) -> None:
    """Reboot the gateway's machine (needs a key with the reboot permission)."""
    _send(ctx, "reboot", {})


@fleet.command()
@click.option("--bundle", "bundle_path", type=click.Path(exists=True, dir_okay=False, path_type=Path),
              help="the signed release bundle (in chunks; with --url: only its size and hash)")  # fmt: skip
@click.option("--url", help="http(s) URL the gateway downloads the bundle from (instead of chunks)")
@click.option("--sha256", help="with --url and no --bundle: the bundle's SHA-256")
@click.option("--size", type=int, help="with --url and no --bundle: the bundle's size in bytes")
@click.option("--chunk-bytes", type=int, default=64 * 1024, show_default=True)
@click.option("--wait", "wait_s", type=float, default=900.0, show_default=True,
              help="seconds to wait for the gateway's verdict")  # fmt: skip
@click.pass_context
def update(
    ctx: click.Context, bundle_path: Path | None, url: str | None, sha256: str | None, size: int | None,
    chunk_bytes: int, wait_s: float,
) -> None:  # fmt: skip
    """Software update: send a signed release bundle (or its URL), follow it to the verdict.

    Prints the outcome as JSON (phase confirmed, rolled-back, failed or refused, with the reason);
    exit 0 only when the gateway confirmed the new release healthy.
    """
    from citynerve.hil.platform.fleet_update import Bundle, update_gateway

    o = ctx.obj
    if bundle_path is not None:
        bundle = Bundle.from_file(bundle_path, chunk_bytes=chunk_bytes, url=url or "")
    elif url and sha256 and size:
        bundle = Bundle(size, sha256.lower(), url=url)
    else:
        raise click.UsageError("give --bundle FILE, or --url URL with --sha256 and --size")

    async def main() -> dict[str, Any]:
        async with _client(o) as f:
            outcome = await update_gateway(f, o["gateway"], bundle, timeout_s=wait_s)
        return {**outcome.to_dict(), "outcome": "ok" if outcome.ok else "failed"}

    _print(main)
