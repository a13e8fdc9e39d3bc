"""TLS client key rotation on a real Uplink and a real Mosquitto that requires client certificates:
after a switch the uplink must connect with the new pair within the confirmation window, else it
goes back to the old pair by itself. The trial connection normally catches a bad certificate
(tests/integration/test_run_keys.py); here it is made to pass, as if the broker had changed its
mind between the trial and the reconnect, to show the second line of defence."""

from __future__ import annotations

import datetime as dt
from pathlib import Path
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID

from citynerve.gateway.api import Event
from citynerve.gateway.credentials import Credentials
from citynerve.gateway.store import AsyncOutbox
from citynerve.gateway.uplink import Uplink, UpstreamConfig
from citynerve.gateway.uplink.commands import Caller
from citynerve.gateway.uplink.tlsrotate import TlsRotation
from citynerve.hil.platform import MosquittoBroker, free_port
from tests.uplink.certs import make_pki_with_key
from tests.uplink.conftest import wait_for

GW = "gw-rot"
CALLER = Caller("ops-centre", "c-1")


class TrialPasses(TlsRotation):
    """The real rotation, with a trial connection that always passes."""

    async def _trial(self, candidate: UpstreamConfig) -> str | None:
        return None


def sign(csr_pem: str, ca_file: Path, ca_key: ec.EllipticCurvePrivateKey) -> str:
    csr = x509.load_pem_x509_csr(csr_pem.encode())
    ca = x509.load_pem_x509_certificate(ca_file.read_bytes())
    now = dt.datetime.now(dt.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(csr.subject)
        .issuer_name(ca.subject)
        .public_key(csr.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=1))
        .not_valid_after(now + dt.timedelta(days=90))
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.CLIENT_AUTH]), critical=False)
        .sign(ca_key, hashes.SHA256())
    )
    return cert.public_bytes(serialization.Encoding.PEM).decode()


async def test_switch_is_confirmed_or_falls_back_to_the_old_pair(tmp_path: Path, outbox: AsyncOutbox) -> None:
    pki, ca_key = make_pki_with_key(tmp_path / "pki")
    other, other_key = make_pki_with_key(tmp_path / "other")
    pki.client_key.chmod(0o600)
    port = free_port()
    tls = [f"cafile {pki.ca}", f"certfile {pki.server_cert}", f"keyfile {pki.server_key}"]
    broker = MosquittoBroker(
        workdir=tmp_path,
        extra_config="\n".join([f"listener {port} 127.0.0.1", *tls, "require_certificate true"]),
    )
    broker.start()
    cfg = UpstreamConfig.model_validate(
        {
            "brokers": [f"mqtts://127.0.0.1:{port}"],
            "connect_timeout_s": 2.0,
            "backoff": {"initial_s": 0.1, "max_s": 0.5},
            "tls": {
                "ca_file": str(pki.ca),
                "cert_file": str(pki.client_cert),
                "key_file": str(pki.client_key),
            },
        }
    )
    events: list[Event] = []
    creds = Credentials(
        cfg,
        gateway_id=GW,
        state=outbox,
        directory=tmp_path / "credentials",
        events=events.append,
        confirm_s=6.0,
    )
    creds.tls = TrialPasses(
        state=outbox,
        directory=tmp_path / "credentials",
        gateway_id=GW,
        upstream=creds.upstream,
        switch=creds._switch,
        events=events.append,
    )
    await creds.load()
    up = Uplink(creds.tls.effective(cfg), gateway_id=GW, outbox=outbox, inventory=list)
    creds.attach(up)

    async def connected_again(after: int) -> bool:
        s = up.snapshot()
        return s.connected and s.reconnects > after

    try:
        async with up:
            await wait_for(lambda: connected_again(-1))
            # a good certificate: switched, the uplink reconnects with it, confirmed
            csr: Any = await creds.tls.make_csr({}, CALLER)
            r = await creds.tls.install({"certificate": sign(csr["csr"], pki.ca, ca_key)}, CALLER)
            assert r["switched"] is True
            new_cert = up.config.tls.cert_file
            assert new_cert is not None and new_cert.parent == tmp_path / "credentials"
            await wait_for(lambda: connected_again(0))
            await wait_for(lambda: _true(creds.tls.previous is None))
            assert up.config.tls.cert_file == new_cert

            # a certificate the broker refuses: the uplink cannot connect; back to the last good pair
            csr = await creds.tls.make_csr({}, CALLER)
            r = await creds.tls.install({"certificate": sign(csr["csr"], other.ca, other_key)}, CALLER)
            assert r["switched"] is True and up.config.tls.cert_file != new_cert
            reconnects = up.snapshot().reconnects
            await wait_for(lambda: _true(up.config.tls.cert_file == new_cert), timeout_s=30)
            await wait_for(lambda: connected_again(reconnects), timeout_s=30)
            assert creds.tls.active is not None and creds.tls.active[0] == new_cert
            assert new_cert.exists()
            whats = [e.attrs["what"] for e in events if e.kind == "credentials"]
            assert whats == ["tls_csr", "tls_switch", "tls_csr", "tls_switch", "tls_fallback"]
        # the fallback is what a restart uses
        again = Credentials(
            cfg, gateway_id=GW, state=outbox, directory=tmp_path / "credentials", events=print
        )
        await again.load()
        assert again.tls.effective(cfg).tls.cert_file == new_cert
    finally:
        broker.close()


async def _true(value: bool) -> bool:
    return value
