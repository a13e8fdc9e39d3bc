"""`python -m citynerve.hil.platform fleet` subcommands for keys and certificates (docs/fleet.md):

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


__all__ = ["certs", "rotate_key", "tls_csr", "tls_install"]
