"""`citynerve diag certs`: when the uplink's TLS client certificate and CA expire.

Reads the files the running gateway uses for the destination commands come through (the first
enabled JSON v1 one: the rotated client certificate when the platform rotated it, else the
configured one). Exits 1 when one is inside the warning window
(`[upstream.tls] expiry_warning_days`, default 30) or expired, or cannot be read.
"""

from __future__ import annotations

import time
from pathlib import Path

import click
from rich.table import Table

from citynerve.gateway.cli._common import (
    EXIT_FAILED,
    config_option,
    console,
    esc,
    fail,
    json_option,
    load_or_exit,
    print_json,
)
from citynerve.gateway.cli._groups import diag
from citynerve.gateway.uplink.certexpiry import CertificateFileError, read_expiries
from citynerve.gateway.uplink.config import TlsConfig
from citynerve.gateway.uplink.tlsrotate import latest_rotated


def _rotated(store_path: str, tls: TlsConfig) -> TlsConfig:
    """`tls` with the client certificate the platform rotated to, when there is one (the newest
    pair in the credentials folder next to the store: older ones are removed at each switch)."""
    pair = latest_rotated(Path(store_path).parent / "credentials")
    if pair is None:
        return tls
    return tls.model_copy(update={"cert_file": pair[0], "key_file": pair[1]})


@diag.command("certs")
@config_option
@json_option
def certs(config_path: Path, as_json: bool) -> None:
    """Expiry of the uplink's TLS client certificate and CA; exits 1 inside the warning window."""
    from citynerve.gateway.uplinks import command_destination

    cfg = load_or_exit(config_path)
    # The certificates of the destination commands come through, whose pair the platform rotates
    # (not `[[upstream]]` number one: a Sparkplug destination put first carries no commands).
    up = command_destination(cfg)
    if up is None:
        fail("no [upstream] in the config: no certificates to check")
    tls = _rotated(cfg.store.path, up.tls) if up.encoding == "json-v1" else up.tls
    warn = up.tls.expiry_warning_days
    try:
        found = read_expiries(tls, time.time())
    except CertificateFileError as err:
        if as_json:
            print_json({"ok": False, "error": str(err), "certificates": []})
            raise SystemExit(EXIT_FAILED) from None
        fail(str(err))
    expiring = [c for c in found if c.days_left <= warn]
    if as_json:
        print_json(
            {
                "ok": not expiring,
                "warn_days": warn,
                "certificates": [c.to_dict() for c in found],
                "expiring": [c.subject_key for c in expiring],
            }
        )
    else:
        if not found:
            console.print("no client certificate or CA file configured (system CAs)", highlight=False)
        t = Table()
        for col in ("role", "subject", "issuer", "not after (UTC)", "days left", "file"):
            t.add_column(col)
        for c in found:
            days = f"{c.days_left:.1f}"
            mark = f"[red]{days}[/]" if c.days_left <= warn else days
            t.add_row(c.role, esc(c.subject), esc(c.issuer), c.to_dict()["not_after_iso"], mark, esc(c.file))
        if found:
            console.print(t)
        if expiring:
            names = esc(", ".join(c.subject_key for c in expiring))
            console.print(f"[red]inside the {warn:g}-day warning window: {names}[/]", highlight=False)
    if expiring:
        raise SystemExit(EXIT_FAILED)


__all__ = ["certs", "click"]
