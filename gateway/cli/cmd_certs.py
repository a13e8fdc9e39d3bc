"""`citynerve diag certs`: when the uplink's TLS client certificate and CA expire.

Reads the files the running gateway uses for the destination commands come through (the first
enabled JSON v1 one that takes commands: the client certificate the platform rotated to when its
rotation record in the outbox names that destination and none was provisioned since, else the
configured one). Exits 1 when one is inside the warning window (`[upstream.tls]
expiry_warning_days`, default 30) or expired, or cannot be read.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
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
from citynerve.gateway.config import GatewayConfig
from citynerve.gateway.store import StoreError, read_state
from citynerve.gateway.uplink.certexpiry import CertificateFileError, read_expiries
from citynerve.gateway.uplink.config import UpstreamConfig
from citynerve.gateway.uplink.tlsrotate import STATE_KEY, TlsRotation


class _RecordOnly:
    """The outbox's key/value state as TlsRotation reads it, holding only the rotation record."""

    def __init__(self, record: str | None) -> None:
        self.record = record

    async def get(self, key: str) -> str | None:
        return self.record if key == STATE_KEY else None

    async def put(self, key: str, value: str) -> None:  # never called: nothing is written here
        raise AssertionError("diag certs writes nothing")


def _in_force(cfg: GatewayConfig, up: UpstreamConfig) -> UpstreamConfig:
    """`up` (the command destination) with the client pair its uplink connects with: the rotated
    pair when the platform rotated it for this destination and no certificate was provisioned
    since, by the gateway's own rule (TlsRotation: the record in the outbox, its files in the
    credentials folder next to it), else as configured."""
    access = "run as root or as the gateway's user"
    try:
        open(cfg.store.path, "rb").close()  # readable, not only there (a 0600 file of another user)
    except FileNotFoundError:  # never started: nothing rotated yet
        return up
    except OSError as err:
        fail(f"cannot read the outbox {cfg.store.path} ({err.strerror}): {access}")
    try:
        record = read_state(cfg.store.path, STATE_KEY)
    except StoreError as err:  # unreadable, or another schema (an update half done): say so
        click.echo(f"warning: TLS rotation record not read ({err}): the configured pair is shown", err=True)
        return up
    credentials = Path(cfg.store.path).parent / "credentials"
    rotation = TlsRotation(
        state=_RecordOnly(record),
        directory=credentials,
        gateway_id=cfg.gateway.id,
        upstream=lambda: up,
        switch=lambda _: None,
        events=lambda _: None,
    )
    try:  # the folder is the gateway's (0700): a user of its group cannot look in
        with contextlib.suppress(FileNotFoundError):
            os.listdir(credentials)  # said here, not left to how pathlib treats EACCES
        asyncio.run(rotation.load())
    except OSError as err:
        fail(f"cannot read the credentials folder {credentials} ({err.strerror}): {access}")
    configs = cfg.destinations or ((cfg.upstream,) if cfg.upstream is not None else ())
    rotation.destination_gone({c.id for c in configs})
    return rotation.effective(up)


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
    if not up.enabled:  # no destination of its kind is enabled: the gateway uses no certificate
        said = f"destination {up.id} is disabled: its certificates are not in use"
        if as_json:
            print_json({"ok": True, "disabled": up.id, "certificates": [], "expiring": []})
        else:
            console.print(said, highlight=False)
        return
    tls = _in_force(cfg, up).tls if up.encoding == "json-v1" else up.tls
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
