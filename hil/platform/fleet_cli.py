"""`python -m citynerve.hil.platform fleet ...`: operator controls, diagnostics, logs, config and
software updates on a gateway, and staged rollouts over many (`rollout-config`, `rollout-update`).

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
@click.option("--gateway", "gateway_id", help="the gateway (every subcommand but the rollouts)")
@click.option("--hmac-key-file", type=click.Path(exists=True, dir_okay=False, path_type=Path), required=True)
@click.option("--key-id", help="id of the signing key on the gateway ([[upstream.commands.keys]])")
@click.option("--timeout", "timeout_s", type=float, default=20.0, show_default=True)
@click.pass_context
def fleet(
    ctx: click.Context,
    url: str,
    prefix: str,
    gateway_id: str | None,
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


def _gateway(o: dict[str, Any]) -> str:
    if not o["gateway"]:
        raise click.UsageError("--gateway is required")
    return str(o["gateway"])


def _send(ctx: click.Context, action: str, args: dict[str, Any]) -> None:
    o = ctx.obj
    _gateway(o)

    async def main() -> dict[str, Any]:
        async with _client(o) as f:
            return await f.send(o["gateway"], action, args)

    _print(main)


def _print(
    main: Callable[[], Any],
    before: Callable[[], None] | None = None,
    after: Callable[[dict[str, Any]], None] | None = None,
) -> None:
    try:
        result = asyncio.run(main())
    except (TimeoutError, aiomqtt.MqttError) as err:
        click.echo(f"error: no result: {str(err) or 'timed out'}", err=True)
        sys.exit(1)
    if before is not None:
        before()
    if after is not None:
        after(result)
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
    _gateway(o)
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


@fleet.command("config-push")
@click.argument("document", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option("--version", "version", required=True, help="the version name the gateway reports")
@click.option("--mode", type=click.Choice(["replace", "patch"]), default="replace", show_default=True)
@click.option("--confirm-s", type=float, default=120.0, show_default=True)
@click.pass_context
def config_push(ctx: click.Context, document: Path, version: str, mode: str, confirm_s: float) -> None:
    """Push a config (TOML, or a JSON merge patch with --mode patch) and wait for its verdict:
    confirmed (exit 0), reverted, rejected (exit 1)."""
    o = ctx.obj
    gw = _gateway(o)
    text = document.read_text(encoding="utf-8")

    async def main() -> dict[str, Any]:
        async with _client(o) as f:
            out = await f.apply_config(gw, text, version=version, mode=mode, confirm_s=confirm_s)
        return {**out, "outcome": "ok" if out["outcome"] in ("confirmed", "unchanged") else out["outcome"]}

    _print(main)


@fleet.command("config-get")
@click.option("--out", type=click.Path(dir_okay=False, path_type=Path), help="write the config here")
@click.pass_context
def config_get(ctx: click.Context, out: Path | None) -> None:
    """Fetch the running config (secrets redacted, chunked, hash-checked)."""
    o = ctx.obj
    gw = _gateway(o)
    got: list[bytes] = []

    async def main() -> dict[str, Any]:
        async with _client(o) as f:
            final, data = await f.fetch_upload(gw, "config_get")
        got.append(data)
        return final

    def write() -> None:
        if got and got[0]:
            if out is not None:
                out.write_bytes(got[0])
            else:
                sys.stdout.write(got[0].decode("utf-8", "replace"))

    _print(main, before=write)


@fleet.command("rollout-config")
@click.argument("document", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option("--gateways", required=True, help="comma-separated gateway ids, or @FILE with one per line")
@click.option("--version", "version", required=True)
@click.option("--mode", type=click.Choice(["replace", "patch"]), default="patch", show_default=True)
@click.option("--confirm-s", type=float, default=120.0, show_default=True)
@click.option("--waves", default="1,10%,rest", show_default=True, help="counts, percentages, 'rest' last")
@click.option("--max-failure-rate", type=float, default=0.0, show_default=True, help="0..1, per wave")
@click.option("--concurrency", type=int, default=50, show_default=True)
@click.pass_context
def rollout_config(
    ctx: click.Context,
    document: Path,
    gateways: str,
    version: str,
    mode: str,
    confirm_s: float,
    waves: str,
    max_failure_rate: float,
    concurrency: int,
) -> None:
    """Push one config document to many gateways in waves; stop when a wave's failure rate
    (rejected, reverted, no verdict) passes --max-failure-rate. Prints the report per gateway as
    JSON; exit 0 when every gateway confirmed. A whole-config (replace) document fits one gateway
    only: fleets use patches (devices, rules, upstream, ...)."""
    from citynerve.hil.platform.rollout import config_action, rollout

    o = ctx.obj
    ids, plan = _fleet_plan(gateways, waves, max_failure_rate)
    text = document.read_text(encoding="utf-8")

    async def main() -> dict[str, Any]:
        async with _client(o) as f:
            action = config_action(f, text, version=version, mode=mode, confirm_s=confirm_s)
            report = await rollout(
                ids,
                action,
                waves=plan,
                max_failure_rate=max_failure_rate,
                concurrency=concurrency,
                on_gateway=_progress,
            )
        out = report.to_dict()
        out["outcome"] = "ok" if all(g.ok for g in report.gateways) else "failed"
        return out

    _print(main)


def _fleet_plan(gateways: str, waves: str, max_failure_rate: float) -> tuple[list[str], list[str]]:
    """--gateways (ids, or @FILE with one per line) and --waves, checked."""
    from citynerve.hil.platform.rollout import WaveSpecError, parse_waves

    if gateways.startswith("@"):
        ids = [line.strip() for line in Path(gateways[1:]).read_text().splitlines() if line.strip()]
    else:
        ids = [g.strip() for g in gateways.split(",") if g.strip()]
    try:
        plan = parse_waves(waves)
    except WaveSpecError as err:
        raise click.BadParameter(str(err), param_hint="--waves") from err
    if not 0 <= max_failure_rate <= 1:
        raise click.BadParameter("must be in 0..1", param_hint="--max-failure-rate")
    return ids, plan


def _progress(rep: Any) -> None:
    click.echo(f"wave {rep.wave}: {rep.gateway} {rep.outcome} {rep.detail}".rstrip(), err=True)


@fleet.command("rollout-update")
@click.option(
    "--bundle",
    "bundle_path",
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    required=True,
    help="the signed release bundle (in chunks; with --url: its size and hash)",
)
@click.option("--url", help="http(s) URL every gateway downloads the bundle from (instead of chunks)")
@click.option("--gateways", required=True, help="comma-separated gateway ids, or @FILE with one per line")
@click.option("--chunk-bytes", type=int, default=64 * 1024, show_default=True)
@click.option("--update-id", help="the update's id on every gateway (default: a new one)")
@click.option("--wait", "wait_s", type=float, default=900.0, show_default=True,
              help="seconds per gateway to wait for its verdict")  # fmt: skip
@click.option("--waves", default="1,10%,rest", show_default=True, help="counts, percentages, 'rest' last")
@click.option("--max-failure-rate", type=float, default=0.0, show_default=True, help="0..1, per wave")
@click.option("--concurrency", type=int, default=20, show_default=True)
@click.pass_context
def rollout_update(
    ctx: click.Context, bundle_path: Path, url: str | None, gateways: str, chunk_bytes: int,
    update_id: str | None, wait_s: float, waves: str, max_failure_rate: float, concurrency: int,
) -> None:  # fmt: skip
    """Update many gateways in waves; stop when a wave's failure rate (refused, failed,
    rolled back, no verdict) passes --max-failure-rate. Prints the report per gateway (final
    phase, reason, release from/to) as JSON; exit 0 when every gateway confirmed the new release."""
    import uuid

    from citynerve.hil.platform.fleet_update import Bundle
    from citynerve.hil.platform.rollout import rollout, update_action

    o = ctx.obj
    ids, plan = _fleet_plan(gateways, waves, max_failure_rate)
    bundle = Bundle.from_file(bundle_path, chunk_bytes=chunk_bytes, url=url or "")
    uid = update_id or f"roll-{uuid.uuid4().hex[:12]}"

    async def main() -> dict[str, Any]:
        async with _client(o) as f:
            action = update_action(f, bundle, update_id=uid, timeout_s=wait_s)
            report = await rollout(
                ids,
                action,
                waves=plan,
                max_failure_rate=max_failure_rate,
                concurrency=concurrency,
                gateway_timeout_s=wait_s + 60,
                on_gateway=_progress,
            )
        out = {"update_id": uid, "size": bundle.size, "sha256": bundle.sha256, **report.to_dict()}
        out["outcome"] = "ok" if all(g.ok for g in report.gateways) else "failed"
        return out

    _print(main)


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


# Keys and certificates, device read, support bundle: in a module of their own, on this group.
from citynerve.hil.platform import fleet_more  # noqa: E402, F401
