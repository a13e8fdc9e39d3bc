"""`python -m citynerve.hil.platform`: the reference city platform from the command line.

consume  subscribe (shared subscription group), store in SQLite, e2e acks, print arrivals
view     what the platform holds: rows, contiguous seq, duplicates, gaps per gateway lane
command  sign and send a command to a gateway, print the result
fleet    operator controls, diagnostics, logs and updates on a gateway (docs/fleet.md)
broker   run a demo broker (Mosquitto if installed, else embedded amqtt)
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import json
import signal
import sys
from pathlib import Path

import aiomqtt
import click
from rich.console import Console

from citynerve.gateway.uplink.config import parse_broker_url
from citynerve.hil.platform.broker import find_mosquitto, start_demo_broker
from citynerve.hil.platform.commands import CommandSigner
from citynerve.hil.platform.consumer import PlatformConsumer
from citynerve.hil.platform.pgstore import PgPlatformStore
from citynerve.hil.platform.store import PlatformStore
from citynerve.hil.platform.view import format_arrival, print_platform_view


def _broker(url: str) -> tuple[str, int]:
    try:
        b = parse_broker_url(url)
    except ValueError as err:
        raise click.BadParameter(str(err)) from err
    if b.tls:
        raise click.BadParameter("the reference consumer speaks plain mqtt:// (put it beside the broker)")
    return b.host, b.port


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
def cli() -> None:
    """The reference city platform: consume, inspect, command."""


@cli.command()
@click.option(
    "--broker",
    "urls",
    multiple=True,
    default=("mqtt://127.0.0.1:1883",),
    show_default=True,
    help="broker URL; repeat for the nodes of a cluster (tried in turn when one is lost)",
)
@click.option(
    "--client-id",
    default=None,
    help="MQTT client id; with one the session outlives the process and a restart with the same id "
    "takes it back (default: a random id whose session ends with its connection)",
)
@click.option(
    "--db",
    type=click.Path(dir_okay=False, path_type=Path),
    default=Path("platform.sqlite"),
    show_default=True,
    help="SQLite file (instances may share one)",
)
@click.option(
    "--pg",
    "pg_dsn",
    default=None,
    metavar="DSN",
    help="store in PostgreSQL instead (postgresql://user@host:port/db, needs psycopg); processes share it",
)
@click.option("--prefix", default="citynerve", show_default=True, help="topic prefix")
@click.option(
    "--group",
    default="platform",
    show_default=True,
    help="shared subscription group; '' for a plain subscription (MQTT 3.1.1 brokers)",
)
@click.option("--no-e2e", is_flag=True, help="do not send end-to-end acks")
@click.option(
    "--hmac-key-file",
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    default=None,
    help="the gateways' command key: end-to-end acks are signed with it (unsigned acks are refused)",
)
@click.option("--protocol", type=click.Choice(["5", "3.1.1"]), default="5", show_default=True)
@click.option("--quiet", is_flag=True, help="do not print arrivals")
def consume(
    urls: tuple[str, ...],
    client_id: str | None,
    db: Path,
    pg_dsn: str | None,
    prefix: str,
    group: str,
    no_e2e: bool,
    hmac_key_file: Path | None,
    protocol: str,
    quiet: bool,
) -> None:
    """Subscribe, store, dedupe, detect gaps and ack, until interrupted."""
    (host, port), *fallbacks = [_broker(u) for u in urls]
    console = Console(highlight=False)

    def show(a: object) -> None:
        if not quiet:
            for line in format_arrival(a):  # type: ignore[arg-type]
                console.print(line)

    async def main() -> None:
        c = PlatformConsumer(
            host=host,
            port=port,
            fallbacks=fallbacks,
            consumer_id=client_id,
            db_path=db,
            store=PgPlatformStore(pg_dsn) if pg_dsn else None,
            topic_prefix=prefix,
            group=group or None,
            e2e_ack=not no_e2e,
            protocol=protocol,
            on_arrival=show,
            ack_signer=CommandSigner.from_hmac_file(hmac_key_file) if hmac_key_file else None,
        )
        where = "PostgreSQL" if pg_dsn else db
        console.print(f"platform consumer {c.consumer_id} on {', '.join(urls)}, storing in {where}")
        # SIGTERM (systemd, docker stop, kill) stops it as Ctrl-C does: the store is closed and
        # nothing is acked that it did not take.
        stop = asyncio.Event()
        asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, stop.set)
        async with c:
            await stop.wait()
        console.print(f"platform consumer {c.consumer_id} stopped")

    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(main())


@cli.command()
@click.option("--db", type=click.Path(exists=True, dir_okay=False, path_type=Path), required=True)
@click.option("--json", "as_json", is_flag=True, help="machine-readable")
def view(db: Path, as_json: bool) -> None:
    """Show what the platform holds, per gateway and lane."""
    store = PlatformStore(db)
    try:
        if as_json:
            click.echo(json.dumps({"lanes": [dataclasses.asdict(v) for v in store.lanes()]}))
        else:
            print_platform_view(store)
    finally:
        store.close()


@cli.command()
@click.option("--broker", "url", default="mqtt://127.0.0.1:1883", show_default=True)
@click.option("--prefix", default="citynerve", show_default=True)
@click.option("--gateway", "gateway_id", required=True)
@click.option("--hmac-key-file", type=click.Path(exists=True, dir_okay=False, path_type=Path), required=True)
@click.option("--timeout", "timeout_s", type=float, default=10.0, show_default=True)
@click.argument("action", type=click.Choice(["read_point", "write_point", "resend_inventory", "restart_bus"]))
@click.argument("args", nargs=-1)
def command(
    url: str,
    prefix: str,
    gateway_id: str,
    hmac_key_file: Path,
    timeout_s: float,
    action: str,
    args: tuple[str, ...],
) -> None:
    """Send a signed command, e.g. `command --gateway gw-1 ... read_point device_id=wm-1 point=flow`."""
    host, port = _broker(url)
    kv: dict[str, object] = {}
    for a in args:
        k, sep, v = a.partition("=")
        if not sep:
            raise click.BadParameter(f"{a!r}: expected key=value")
        try:
            kv[k] = json.loads(v)
        except ValueError:
            kv[k] = v
    signer = CommandSigner.from_hmac_file(hmac_key_file)
    cmd = signer.command(gateway_id, action, kv)

    async def main() -> dict[str, object]:
        async with aiomqtt.Client(host, port) as c:
            await c.subscribe(f"{prefix}/{gateway_id}/cmd/result", qos=1)
            await c.publish(f"{prefix}/{gateway_id}/cmd", CommandSigner.payload(cmd), qos=1)
            async with asyncio.timeout(timeout_s):
                async for m in c.messages:
                    body = json.loads(m.payload)  # type: ignore[arg-type]
                    if body.get("command_id") == cmd["id"]:
                        return body  # type: ignore[no-any-return]
        raise TimeoutError

    try:
        result = asyncio.run(main())
    except (TimeoutError, aiomqtt.MqttError) as err:
        click.echo(f"error: no result from {gateway_id}: {str(err) or 'timed out'}", err=True)
        sys.exit(1)
    click.echo(json.dumps(result))
    sys.exit(0 if result.get("outcome") == "ok" else 1)


@cli.command()
@click.option("--port", type=int, default=1883, show_default=True)
@click.option("--embedded", is_flag=True, help="force the embedded amqtt broker (MQTT 3.1.1 only)")
def broker(port: int, embedded: bool) -> None:
    """Run a demo broker on 127.0.0.1 until interrupted."""

    async def main() -> None:
        host, p, stop = await start_demo_broker("127.0.0.1", port, embedded=embedded or None)
        if embedded or find_mosquitto() is None:
            # amqtt refuses an MQTT 5 CONNECT: say what the gateway and the consumer need.
            click.echo(
                f"demo broker on mqtt://{host}:{p} (embedded amqtt, MQTT 3.1.1 only: set "
                '`protocol = "3.1.1"` under [upstream] and run `consume --protocol 3.1.1 --group ""`)'
            )
        else:
            click.echo(f"demo broker on mqtt://{host}:{p} (Mosquitto)")
        try:
            await asyncio.Event().wait()
        finally:
            await stop()

    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(main())


from citynerve.hil.platform.fleet_cli import fleet  # noqa: E402  (it imports _broker from here)

cli.add_command(fleet)

if __name__ == "__main__":
    cli()
