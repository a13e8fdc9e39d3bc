"""Certificate expiry: days left of the client certificate and every CA, the warning alarm raised
once per certificate inside the window (major in the last week), cleared when the file is replaced,
and a damaged file reported, not fatal. Real certificates (cryptography), real files."""

from __future__ import annotations

import datetime as dt
import os
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from citynerve.gateway.api import Event, EventState, Severity
from citynerve.gateway.uplink.certexpiry import EXPIRY_KIND, CertWatch, read_expiries
from citynerve.gateway.uplink.config import TlsConfig
from citynerve.gateway.web.metrics import render_metrics

NOW = 1_800_000_000.0


def cert_file(path: Path, cn: str, days: float) -> Path:
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)])
    start = dt.datetime.fromtimestamp(NOW, dt.UTC) - dt.timedelta(days=1)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(start)
        .not_valid_after(dt.datetime.fromtimestamp(NOW + days * 86400, dt.UTC))
        .sign(key, hashes.SHA256())
    )
    path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    return path


def test_days_left_alarm_once_major_in_the_last_week_and_cleared_by_a_new_file(tmp_path: Path) -> None:
    client = cert_file(tmp_path / "client.pem", "gw-1", 40)
    ca = cert_file(tmp_path / "ca.pem", "City CA", 3650)
    tls = TlsConfig(ca_file=ca, cert_file=client, key_file=tmp_path / "client.key")
    wall = [NOW]
    events: list[Event] = []
    watch = CertWatch(
        lambda: tls, gateway_id="gw-1", warn_days=30, events=events.append, wall=lambda: wall[0]
    )
    watch.check()
    assert events == [] and watch.status()["expiring"] == []
    assert [round(c.days_left) for c in watch.current()] == [40, 3650]

    wall[0] = NOW + 15 * 86400  # 25 days left: a warning, once
    watch.check()
    watch.check()
    assert [(e.kind, e.state, e.severity, e.attrs["certificate"]) for e in events] == [
        (EXPIRY_KIND, EventState.RAISED, Severity.WARNING, "client")
    ]
    wall[0] = NOW + 35 * 86400  # 5 days left: major
    watch.check()
    assert events[-1].severity is Severity.MAJOR and "expires in 5.0 days" in events[-1].message
    metrics = render_metrics({"certificates": watch.status()}, now=wall[0])
    assert 'citynerve_tls_cert_days_left{role="client",subject="CN=gw-1"} 5' in metrics

    # a new certificate in the same file: the alarm clears
    cert_file(client, "gw-1", 400)
    os.utime(client, ns=(1, 1))  # a different stamp even within the file system's time resolution
    watch.check()
    assert (events[-1].state, events[-1].attrs["certificate"]) == (EventState.CLEARED, "client")
    assert watch.status()["expiring"] == []


def test_a_damaged_file_is_reported_not_fatal(tmp_path: Path) -> None:
    bad = tmp_path / "client.pem"
    bad.write_text("not a certificate")
    tls = TlsConfig(cert_file=bad, key_file=tmp_path / "k")
    watch = CertWatch(lambda: tls, gateway_id="gw", warn_days=30, events=list().append, wall=lambda: NOW)
    status = watch.status()
    assert status["certificates"] == [] and "client certificate" in status["error"]
    watch.check()  # nothing to raise, nothing raised
    assert read_expiries(TlsConfig(), NOW) == []


def test_a_wall_clock_before_the_certificates_were_issued_judges_nothing(tmp_path: Path) -> None:
    # A Pi without an RTC boots in 1970, before NTP: every certificate seemed to have ~20,000 days
    # left, so an alarm restored at start was cleared as "certificate replaced", and raised again
    # only at the next hourly check after the clock was set.
    client = cert_file(tmp_path / "client.pem", "gw-1", 10)
    tls = TlsConfig(cert_file=client, key_file=tmp_path / "client.key")
    wall = [1000.0]
    events: list[Event] = []
    watch = CertWatch(
        lambda: tls, gateway_id="gw-1", warn_days=30, events=events.append, wall=lambda: wall[0]
    )
    watch.adopt({"client": (Severity.WARNING, NOW + 10 * 86400)})  # restored from before the restart
    watch.check()
    assert events == []  # neither cleared nor raised while the clock is wrong
    wall[0] = NOW  # NTP set it: the same certificate, the alarm held as it was
    watch.check()
    assert events == []
    fresh = CertWatch(lambda: tls, gateway_id="gw-1", warn_days=30, events=events.append, wall=lambda: 1000.0)
    fresh.check()
    assert events == []  # nor raised for a certificate judged on a 1970 clock
