"""`citynerve diag certs` run by a user who may read the config and the outbox but not the gateway's
credentials folder (0700, the gateway's user; the citynerve group reads the rest). It ended in a
PermissionError traceback; it now says what it cannot read and what to do (exit 1). Run as root
without capabilities (setpriv), the folder owned by nobody: root cannot look in either."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
from click.testing import CliRunner

from citynerve.gateway.cli import main
from citynerve.gateway.store import Outbox
from citynerve.gateway.uplink.tlsrotate import STATE_KEY
from tests.fieldtools.conftest import gateway_toml
from tests.uplink.certs import Pki, make_pki

UNPRIVILEGED = pytest.mark.skipif(
    os.geteuid() != 0 or shutil.which("setpriv") is None, reason="needs root and setpriv (CI runs as root)"
)
NOBODY = 65534


def _config(short_dir: Path, *, upstream: str = "", tls: str = "") -> tuple[Pki, Path]:
    """A gateway config whose `[upstream]` (plus `upstream`) names a client pair and CA (plus `tls`)."""
    pki = make_pki(short_dir / "pki")
    pki.client_key.chmod(0o600)
    text = textwrap.dedent(
        f"""
        [upstream]
        brokers = ["mqtts://127.0.0.1:1"]
        {upstream}
        [upstream.tls]
        ca_file = "{pki.ca}"
        cert_file = "{pki.client_cert}"
        key_file = "{pki.client_key}"
        {tls}
        """
    )
    path = short_dir / "gateway.toml"
    path.write_text(gateway_toml("127.0.0.1", 1, extra=text))
    return pki, path


def _diag_certs_without_capabilities(path: Path) -> subprocess.CompletedProcess[str]:
    """`citynerve diag certs --json` run as root without capabilities: a file of another user is
    as closed to it as to a user of the gateway's group."""
    cli = [sys.executable, "-m", "citynerve.gateway.cli", "diag", "certs", "-c", str(path), "--json"]
    return subprocess.run(
        ["setpriv", "--inh-caps=-all", "--bounding-set=-all", "--", *cli],
        cwd=path.parent,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


@UNPRIVILEGED
def test_diag_certs_without_access_to_the_credentials_folder_says_so(short_dir: Path) -> None:
    pki, path = _config(short_dir)
    var = short_dir / "var"
    credentials = var / "credentials"
    credentials.mkdir(parents=True, mode=0o700)
    rotated = credentials / "client-20261207T000000.pem"
    shutil.copy(pki.client_cert, rotated)
    shutil.copy(pki.client_key, rotated.with_suffix(".key"))
    with Outbox(var / "outbox.db") as ob:  # the record a platform rotation leaves
        ob.put_state(
            STATE_KEY, json.dumps({"cert_file": str(rotated), "key_file": str(rotated.with_suffix(".key"))})
        )
    for p in (credentials, *credentials.iterdir()):
        os.chown(p, NOBODY, NOBODY)
    out = _diag_certs_without_capabilities(path)
    assert out.returncode == 1, out
    assert "Traceback" not in out.stderr, out.stderr
    said = "".join(out.stderr.split())
    assert "cannotreadthecredentialsfolder" in said and "runasrootorasthegateway'suser" in said, out.stderr


@UNPRIVILEGED
def test_diag_certs_with_an_unreadable_outbox_says_so(short_dir: Path) -> None:
    # The outbox there but not readable (0600, another user): the rotation record could not be
    # read, and the configured pair was shown with "ok" while the gateway used a rotated one.
    _, path = _config(short_dir)
    outbox = short_dir / "var" / "outbox.db"
    outbox.parent.mkdir()
    with Outbox(outbox) as ob:
        ob.put_state(STATE_KEY, json.dumps(None))
    outbox.chmod(0o600)
    os.chown(outbox, NOBODY, NOBODY)
    out = _diag_certs_without_capabilities(path)
    assert out.returncode == 1 and "Traceback" not in out.stderr, out
    assert "cannotreadtheoutbox" in "".join(out.stderr.split()), out.stderr


def test_diag_certs_of_a_disabled_destination_says_they_are_not_in_use(short_dir: Path) -> None:
    # The only destination disabled: the gateway uses (and watches) no certificate; diag certs
    # failed (exit 1) on its certificate all the same.
    _, path = _config(short_dir, upstream="enabled = false", tls="expiry_warning_days = 3650")
    r = CliRunner().invoke(main, ["diag", "certs", "-c", str(path), "--json"], catch_exceptions=False)
    assert r.exit_code == 0, r.output
    assert json.loads(r.output) == {"ok": True, "disabled": "default", "certificates": [], "expiring": []}
