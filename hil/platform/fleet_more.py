"""`python -m citynerve.hil.platform fleet` subcommands for device reads with raw frames, the support
bundle, keys and certificates (docs/fleet.md):

    read DEVICE [--address A [--count N] [--table T] [--type T]] [--di DI | --point P]
                                           a configured device with the frames: Modbus registers,
                                           a DL/T 645 data item, CJ/T 188 901F, a BLE node's advert
    bundle [--journal-lines N] --out F     the redacted support bundle (chunked, hash-checked)

    certs                                  expiry of the gateway's TLS client certificate and CA
    tls-csr [--common-name CN] [--out F]   a new key on the gateway; its CSR printed / written
    tls-install CERT.pem                   the signed certificate back; the gateway tries it, switches
                                           or stays on the old one and says why
    rotate-key NEW_KEY_FILE [--ed25519] [--overlap-s S]
                                           a new command key for the signing key (--key-id), announced
                                           with the current one; both verify for the overlap
"""

from __future__ import annotations

import base64
import sys
from pathlib import Path
from typing import Any

import click

from citynerve.hil.platform.fleet import UploadError
from citynerve.hil.platform.fleet_cli import _client, _print, _send, fleet


@fleet.command()
@click.pass_context
def certs(ctx: click.Context) -> None:
    """Expiry of the gateway's TLS client certificate and CA (and rotated command keys)."""
    _send(ctx, "diag_certs", {})


@fleet.command("tls-csr")
@click.option("--common-name", help="subject CN of the request (default: the gateway id)")
@click.option("--out", type=click.Path(dir_okay=False, path_type=Path), help="write the CSR (PEM) here")
@click.pass_context
def tls_csr(ctx: click.Context, common_name: str | None, out: Path | None) -> None:
    """Make a new TLS client key on the gateway (it never leaves) and fetch its CSR."""
    o = ctx.obj

    async def main() -> dict[str, Any]:
        async with _client(o) as f:
            args = {"common_name": common_name} if common_name else {}
            return await f.send(o["gateway"], "tls_csr", args)

    def write_csr(result: dict[str, Any]) -> None:
        csr = (result.get("result") or {}).get("csr")
        if csr and out is not None:
            out.write_text(csr)

    _print(main, after=write_csr)


@fleet.command("tls-install")
@click.argument("cert_file", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.pass_context
def tls_install(ctx: click.Context, cert_file: Path) -> None:
    """Send the signed client certificate (PEM, chain allowed); the gateway switches if the broker
    accepts it, else stays on its old certificate (exit 1, the answer says why)."""
    _send(ctx, "tls_install_cert", {"certificate": cert_file.read_text()})


@fleet.command("rotate-key")
@click.argument("new_key_file", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option("--ed25519", is_flag=True, help="the file is an Ed25519 public key (PEM or 32 raw bytes)")
@click.option("--overlap-s", type=float, default=86400.0, show_default=True)
@click.pass_context
def rotate_key(ctx: click.Context, new_key_file: Path, ed25519: bool, overlap_s: float) -> None:
    """Announce a new command key for the signing key; both verify for --overlap-s, then the old
    one retires. Sign later commands with the new key."""
    if ed25519:
        from cryptography.hazmat.primitives import serialization
        from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

        data = new_key_file.read_bytes()
        if len(data) != 32:
            key = serialization.load_pem_public_key(data)
            if not isinstance(key, Ed25519PublicKey):
                click.echo("error: not an Ed25519 public key", err=True)
                sys.exit(2)
            data = key.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
        alg = "ed25519"
    else:
        from citynerve.gateway.uplink.signing import read_hmac_key

        data, alg = read_hmac_key(new_key_file), "hmac-sha256"
    args = {"alg": alg, "key": base64.b64encode(data).decode("ascii"), "overlap_s": overlap_s}
    _send(ctx, "rotate_command_key", args)


@fleet.command("read")
@click.argument("device")
@click.option("--address", type=int, help="Modbus: the first register (or bit)")
@click.option("--count", type=int, default=1, show_default=True, help="Modbus: registers (or bits)")
@click.option("--table", type=click.Choice(["holding", "input", "coil", "discrete"]), default="holding")
@click.option("--type", "type_", help="Modbus: decode as (uint16, int32, float32, ...)")
@click.option("--di", help="DL/T 645: the data item (8 hex digits, 4 for 1997); CJ/T 188: 901F")
@click.option("--point", help="DL/T 645: a configured point (its DI and format)")
@click.pass_context
def read(
    ctx: click.Context,
    device: str,
    address: int | None,
    count: int,
    table: str,
    type_: str | None,
    di: str | None,
    point: str | None,
) -> None:
    """Read a configured device with the request and reply frames: Modbus registers (--address),
    a DL/T 645 data item (--di or --point), a CJ/T 188 meter's 901F data (no option); a BTHome
    node answers with its last advert."""
    args: dict[str, Any] = {"device_id": device}
    if address is not None:
        args.update({"table": table, "address": address, "count": count})
        if type_:
            args["type"] = type_
    args.update({k: v for k, v in (("di", di), ("point", point)) if v})
    _send(ctx, "device_read", args)


@fleet.command("reset-counter")
@click.argument("device")
@click.pass_context
def reset_counter(ctx: click.Context, device: str) -> None:
    """Forget a BLE node's replay counter (a node reflashed with its old key; configure permission)."""
    _send(ctx, "reset_counter", {"device_id": device})


@fleet.command()
@click.option("--journal-lines", type=int, default=2000, show_default=True)
@click.option("--out", type=click.Path(dir_okay=False, path_type=Path), required=True)
@click.pass_context
def bundle(ctx: click.Context, journal_lines: int, out: Path) -> None:
    """Fetch the redacted support bundle (.tar.gz; chunked, hash-checked)."""
    o = ctx.obj
    got: list[bytes] = []

    async def main() -> dict[str, Any]:
        async with _client(o) as f:
            final, data = await f.fetch_upload(
                o["gateway"], "support_bundle", {"journal_lines": journal_lines}
            )
        got.append(data)
        return final

    def write_bundle() -> None:
        if got and got[0]:
            out.write_bytes(got[0])

    try:
        _print(main, before=write_bundle)
    except UploadError as err:
        click.echo(f"error: upload broken: {err}", err=True)
        sys.exit(1)


__all__ = ["bundle", "certs", "read", "rotate_key", "tls_csr", "tls_install"]
