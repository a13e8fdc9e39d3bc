"""An expiry alarm raised before a restart is judged again after it: the real runtime, in-process,
restarted on the same outbox. The client certificate replaced while the gateway was stopped (what
an installer does about the alarm) cleared nothing: the alarm, restored at start, stayed active for
good, as nothing in the new run had raised it. With the `[upstream]` removed, it clears at start."""

from __future__ import annotations

import datetime as dt
import textwrap
import time
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from citynerve.gateway.config import load_config
from citynerve.gateway.runtime import Gateway
from citynerve.gateway.uplink.certexpiry import EXPIRY_KIND
from citynerve.gateway.web.metrics import render_metrics
from tests.fieldtools.conftest import gateway_toml, run_gateway, wait_for


def _pair(path: Path, cn: str, days: float) -> tuple[Path, Path]:
    """A self-signed certificate valid for `days` more days, and its key (0600)."""
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)])
    now = dt.datetime.now(dt.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(days=1))
        .not_valid_after(now + dt.timedelta(days=days))
        .sign(key, hashes.SHA256())
    )
    pem, key_file = path.with_suffix(".pem"), path.with_suffix(".key")
    pem.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_file.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        )
    )
    key_file.chmod(0o600)
    return pem, key_file


def _one_upstream(short_dir: Path) -> tuple[Path, str]:
    """A config with one `[upstream]` whose client certificate has 10 days left (inside the
    30-day window): its path, and the `[upstream]` text."""
    cert, key = _pair(short_dir / "client", "gw-test-0001", 10)
    ca, _ = _pair(short_dir / "ca", "City CA", 3650)
    upstream = textwrap.dedent(
        f"""
        [upstream]
        brokers = ["mqtts://127.0.0.1:1"]
        tls = {{ ca_file = "{ca}", cert_file = "{cert}", key_file = "{key}" }}
        """
    )
    path = short_dir / "gateway.toml"
    path.write_text(gateway_toml("127.0.0.1", 1, extra=upstream))
    return path, upstream


def _expiring(gw: Gateway) -> list[str]:
    return [a.subject for a in gw.alarms.active() if a.kind == EXPIRY_KIND]


async def test_an_expiry_alarm_clears_after_a_restart_once_its_certificate_was_replaced(
    short_dir: Path,
) -> None:
    path, _ = _one_upstream(short_dir)
    async with run_gateway(load_config(path)) as gw:
        await wait_for(lambda: _expiring(gw) == ["client"], timeout_s=10)

    async with run_gateway(load_config(path)) as gw:  # not replaced: still active, not raised again
        await wait_for(lambda: gw.credentials is not None, timeout_s=10)
        assert _expiring(gw) == ["client"]
        assert [a.restored for a in gw.alarms.active() if a.kind == EXPIRY_KIND] == [True]

    _pair(short_dir / "client", "gw-test-0001", 365)  # replaced on site while stopped
    async with run_gateway(load_config(path)) as gw:
        await wait_for(lambda: not _expiring(gw), timeout_s=10)

    _pair(short_dir / "client", "gw-test-0001", 10)  # expiring again, then no uplink
    async with run_gateway(load_config(path)) as gw:
        await wait_for(lambda: _expiring(gw) == ["client"], timeout_s=10)
    path.write_text(gateway_toml("127.0.0.1", 1))
    async with run_gateway(load_config(path)) as gw:
        await wait_for(lambda: not _expiring(gw), timeout_s=10)


async def test_another_destinations_certificate_is_watched_too(short_dir: Path) -> None:
    # A district centre's client certificate ran out unseen: only the command destination's were
    # watched. Its alarm names the destination, follows restarts, and clears when it is replaced
    # or when the destination is removed.
    city_cert, city_key = _pair(short_dir / "city", "gw-test-0001", 365)
    district_cert, district_key = _pair(short_dir / "district", "gw-test-0001", 5)
    ca, _ = _pair(short_dir / "ca", "City CA", 3650)

    def destination(id_: str, cert: Path, key: Path) -> str:
        return textwrap.dedent(
            f"""
            [[upstream]]
            id = "{id_}"
            brokers = ["mqtts://127.0.0.1:1"]
            tls = {{ ca_file = "{ca}", cert_file = "{cert}", key_file = "{key}" }}
            """
        )

    both = destination("city", city_cert, city_key) + destination("district", district_cert, district_key)
    path = short_dir / "gateway.toml"
    path.write_text(gateway_toml("127.0.0.1", 1, extra=both))
    async with run_gateway(load_config(path)) as gw:
        await wait_for(lambda: _expiring(gw) == ["district: client"], timeout_s=10)
        (alarm,) = [a for a in gw.alarms.active() if a.kind == EXPIRY_KIND]
        assert alarm.severity.name == "MAJOR" and "destination district" in alarm.message
        # in status and metrics too, by destination (the command destination's: as before)
        status = await gw.status()
        assert status["certificates"]["destinations"]["district"]["expiring"] == ["client"]
        metrics = render_metrics(status, now=time.time())
        assert (
            'citynerve_tls_cert_days_left{role="client",subject="CN=gw-test-0001",destination="district"} '
            in metrics
        )

    async with run_gateway(load_config(path)) as gw:  # kept across a restart, not raised again
        await wait_for(lambda: len(gw.uplinks) == 2, timeout_s=10)
        assert [a.restored for a in gw.alarms.active() if a.kind == EXPIRY_KIND] == [True]

    _pair(short_dir / "district", "gw-test-0001", 365)  # replaced while stopped
    async with run_gateway(load_config(path)) as gw:
        await wait_for(lambda: len(gw.uplinks) == 2 and not _expiring(gw), timeout_s=10)

    _pair(short_dir / "district", "gw-test-0001", 5)
    async with run_gateway(load_config(path)) as gw:
        await wait_for(lambda: _expiring(gw) == ["district: client"], timeout_s=10)
    path.write_text(gateway_toml("127.0.0.1", 1, extra=destination("city", city_cert, city_key)))
    async with run_gateway(load_config(path)) as gw:  # the district's destination removed
        await wait_for(lambda: len(gw.uplinks) == 1 and not _expiring(gw), timeout_s=10)
    off = both.replace('id = "district"', 'id = "district"\nenabled = false')
    path.write_text(gateway_toml("127.0.0.1", 1, extra=off))
    async with run_gateway(load_config(path)) as gw:  # disabled: its certificate is used by nothing
        await wait_for(lambda: len(gw.uplinks) == 2, timeout_s=10)
        assert gw.credentials is not None and list(gw.credentials.others.watches) == []
        assert not _expiring(gw)


async def test_an_alarm_follows_the_certificate_in_use_not_only_its_subject(short_dir: Path) -> None:
    # The pair replaced while stopped by one still inside the window, at the same severity: the
    # restored alarm kept the old certificate's end and file. The alarm is raised again for the
    # new one. A CA named like another destination's subject ("Root @ district", "district: x")
    # stays the command destination's alarm: restored, not cleared and raised again at each start.
    cert, key = _pair(short_dir / "client", "gw-test-0001", 20)
    ca, _ = _pair(short_dir / "ca", "district: Root @ district", 5)
    upstream = textwrap.dedent(
        f"""
        [[upstream]]
        id = "city"
        brokers = ["mqtts://127.0.0.1:1"]
        tls = {{ ca_file = "{ca}", cert_file = "{cert}", key_file = "{key}" }}
        [[upstream]]
        id = "district"
        brokers = ["mqtts://127.0.0.1:1"]
        tls = {{ ca_file = "{ca}" }}
        """
    )
    path = short_dir / "gateway.toml"
    path.write_text(gateway_toml("127.0.0.1", 1, extra=upstream))
    ca_subject = "ca CN=district: Root @ district"

    def alarms(gw: Gateway) -> dict[str, str]:
        return {a.subject: a.message for a in gw.alarms.active() if a.kind == EXPIRY_KIND}

    async with run_gateway(load_config(path)) as gw:
        want = {"client", ca_subject, f"district: {ca_subject}"}
        await wait_for(lambda: set(alarms(gw)) == want, timeout_s=10)
        first = alarms(gw)["client"]
    _pair(short_dir / "client", "gw-test-0001", 25)  # a new pair, still inside the 30-day window
    async with run_gateway(load_config(path)) as gw:
        await wait_for(
            lambda: len(gw.uplinks) == 2 and alarms(gw).get("client", first) != first, timeout_s=10
        )
        assert "expires in 25.0 days" in alarms(gw)["client"] or "expires in 24.9" in alarms(gw)["client"]
        restored = {a.subject: a.restored for a in gw.alarms.active() if a.kind == EXPIRY_KIND}
        assert restored == {"client": False, ca_subject: True, f"district: {ca_subject}": True}, restored


async def test_a_disabled_upstream_raises_no_expiry_alarm_and_clears_its_own(short_dir: Path) -> None:
    path, upstream = _one_upstream(short_dir)
    async with run_gateway(load_config(path)) as gw:
        await wait_for(lambda: _expiring(gw) == ["client"], timeout_s=10)
    path.write_text(
        gateway_toml("127.0.0.1", 1, extra=upstream.replace("[upstream]", "[upstream]\nenabled = false"))
    )
    async with run_gateway(load_config(path)) as gw:  # nothing uses its certificate now
        await wait_for(lambda: not _expiring(gw), timeout_s=10)
