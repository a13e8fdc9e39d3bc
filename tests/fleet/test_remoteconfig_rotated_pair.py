"""A remote config change that names a new TLS client certificate for the command destination,
after the platform rotated the gateway's pair and revoked the configured one (a real Mosquitto
asking for client certificates, with a CRL; an in-process gateway; the fleet client on the plain
listener). The new pair is refused by the broker, the health check reverts the change: the gateway
must be back on exactly the pair it used before the change, the rotated one, and reachable. The
same after a restart in the middle (the pending change survives it): the change's pair while it is
checked again, the rotated pair after the revert.

The rotated pair was deleted as soon as the change was applied: the revert put the gateway on the
configured pair, revoked since the rotation, and it never connected again (cut off)."""

from __future__ import annotations

import contextlib
import datetime as dt
import ssl
import textwrap
from pathlib import Path
from typing import Any

import aiomqtt
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec

from citynerve.gateway.config import load_config
from citynerve.gateway.runtime import Gateway
from citynerve.hil.platform import CommandSigner, MosquittoBroker, free_port
from citynerve.hil.platform.fleet import FleetClient
from citynerve.hil.sim.modbus import ModbusBuilding
from tests.fieldtools.conftest import gateway_toml, run_gateway, wait_for
from tests.uplink.certs import make_pki_with_key
from tests.uplink.test_tls_rotation import sign

GW = "gw-test-0001"
KEY = bytes.fromhex("42" * 32)


def city(port: int, ca: Path, cert: Path, key: Path, centre_key: Path) -> str:
    return textwrap.dedent(
        f"""
        [[upstream]]
        id = "city"
        brokers = ["mqtts://127.0.0.1:{port}"]
        connect_timeout_s = 2.0
        backoff = {{ initial_s = 0.1, max_s = 0.5 }}
        tls = {{ ca_file = "{ca}", cert_file = "{cert}", key_file = "{key}" }}
        [upstream.commands]
        enabled = true
        [[upstream.commands.keys]]
        id = "ops-centre"
        hmac_key_file = "{centre_key}"
        classes = ["read", "configure"]
        """
    )


def revocation_list(cert_file: Path, ca_file: Path, ca_key: ec.EllipticCurvePrivateKey, out: Path) -> Path:
    """The platform's CA revokes `cert_file` (the configured client certificate)."""
    cert = x509.load_pem_x509_certificate(cert_file.read_bytes())
    ca = x509.load_pem_x509_certificate(ca_file.read_bytes())
    now = dt.datetime.now(dt.UTC)
    revoked = x509.RevokedCertificateBuilder().serial_number(cert.serial_number).revocation_date(now).build()
    crl = (
        x509.CertificateRevocationListBuilder()
        .issuer_name(ca.subject)
        .last_update(now - dt.timedelta(minutes=1))
        .next_update(now + dt.timedelta(days=1))
        .add_revoked_certificate(revoked)
        .sign(ca_key, hashes.SHA256())
    )
    out.write_bytes(crl.public_bytes(serialization.Encoding.PEM))
    return out


async def refused(port: int, ca: Path, cert: Path, key: Path) -> bool:
    """Whether the broker refuses a connection with this client pair."""
    context = ssl.create_default_context(cafile=str(ca))
    context.load_cert_chain(str(cert), str(key))
    try:
        async with aiomqtt.Client("127.0.0.1", port, tls_context=context, identifier="probe", timeout=3):
            return False
    except aiomqtt.MqttError:
        return True


def in_use(gw: Gateway) -> Path | None:
    """The client certificate the command uplink (`city`) connects with."""
    return gw.uplink.config.tls.cert_file if gw.uplink is not None else None


def connected(gw: Gateway, after: int = -1) -> bool:
    """The command uplink is connected in a session after its `after`th reconnect (after a broker
    restart it still says connected until it notices the old session dropped)."""
    if gw.uplink is None:
        return False
    s = gw.uplink.snapshot()
    return s.connected and s.reconnects > after


def reconnects(gw: Gateway) -> int:
    assert gw.uplink is not None
    return gw.uplink.snapshot().reconnects


async def reachable(centre: FleetClient) -> None:
    """Commands reach the gateway: its uplink says connected before it has subscribed to them, and
    the fleet client never sends a command again. A read command, sent again until answered."""
    timeout_s, centre.timeout_s = centre.timeout_s, 2.0
    try:
        for _ in range(15):
            with contextlib.suppress(TimeoutError):
                await centre.send(GW, "diag_certs")
                return
        raise AssertionError("the gateway answers no command")
    finally:
        centre.timeout_s = timeout_s


async def test_a_reverted_certificate_change_goes_back_to_the_rotated_pair(short_dir: Path) -> None:
    pki, ca_key = make_pki_with_key(short_dir / "pki")
    other, _ = make_pki_with_key(short_dir / "other")  # a pair from a CA the broker does not trust
    for f in (pki.client_key, other.client_key):
        f.chmod(0o600)
    centre_key = short_dir / "centre.key"
    centre_key.write_text(KEY.hex())
    centre_key.chmod(0o600)
    tls_port = free_port()
    listener = [f"listener {tls_port} 127.0.0.1", f"cafile {pki.ca}", f"certfile {pki.server_cert}"]
    listener += [f"keyfile {pki.server_key}", "require_certificate true"]
    broker = MosquittoBroker(workdir=short_dir, extra_config="\n".join(listener))
    broker.start()
    try:
        async with ModbusBuilding() as building:
            host, port = building.endpoint
            path = short_dir / "gateway.toml"
            before = gateway_toml(
                host, port, extra=city(tls_port, pki.ca, pki.client_cert, pki.client_key, centre_key)
            )
            bad_pair = gateway_toml(
                host, port, extra=city(tls_port, pki.ca, other.client_cert, other.client_key, centre_key)
            )
            path.write_text(before)
            credentials = short_dir / "var" / "credentials"
            signer = CommandSigner(hmac_key=KEY)
            async with run_gateway(load_config(path)) as gw:
                await wait_for(lambda: connected(gw), timeout_s=20)
                # the platform rotates the pair, then revokes the configured one
                async with FleetClient(broker.host, broker.port, signer, key_id="ops-centre") as centre:
                    await reachable(centre)
                    csr: Any = (await centre.send(GW, "tls_csr"))["result"]["csr"]
                    r = await centre.send(GW, "tls_install_cert", {"certificate": sign(csr, pki.ca, ca_key)})
                    assert r["result"]["switched"] is True, r
                    assert gw.credentials is not None
                    await wait_for(lambda: gw.credentials.tls.previous is None, timeout_s=20)  # confirmed
                    rotated = in_use(gw)
                    assert rotated is not None and rotated.parent == credentials
                    sessions = reconnects(gw)
                    broker.kill()
                    crl = revocation_list(pki.client_cert, pki.ca, ca_key, short_dir / "crl.pem")
                    broker.extra_config += f"\ncrlfile {crl}"
                    broker.start()
                    assert await refused(tls_port, pki.ca, pki.client_cert, pki.client_key)
                    assert not await refused(tls_port, pki.ca, rotated, rotated.with_suffix(".key"))
                    await wait_for(lambda: connected(gw, sessions), timeout_s=20)  # a new session

                async with FleetClient(broker.host, broker.port, signer, key_id="ops-centre") as centre:
                    await reachable(centre)
                    # a change naming a pair the broker refuses: reverted, back on the rotated pair
                    out = await centre.apply_config(
                        GW, bad_pair, version="bad-pair", confirm_s=5, verdict_timeout_s=40
                    )
                    assert out["outcome"] == "reverted", out
                    assert "city" in out["verdict"]["result"]["reason"], out
                    assert in_use(gw) == rotated and rotated.exists()
                    assert gw.credentials.status().get("tls_client_rotated") == str(rotated)
                    await wait_for(lambda: connected(gw), timeout_s=20)  # the revert's new uplink
                    await reachable(centre)

                    # the same change, and a power cut before its verdict: it is still pending
                    answer = await centre.push_config(GW, bad_pair, version="bad-pair-2", confirm_s=5)
                    assert answer["result"]["state"] == "pending", answer
                    await wait_for(lambda: in_use(gw) == other.client_cert, timeout_s=10)
            assert path.read_text() == bad_pair
            # after the restart: the change's pair while its health is checked again, the rotated
            # pair kept for a revert (not deleted at start) ...
            async with run_gateway(load_config(path)) as gw:
                assert gw.remote_config is not None
                await wait_for(lambda: gw.remote_config.pending is not None, timeout_s=10)
                assert in_use(gw) == other.client_cert and rotated.exists()
                # ... and the rotated pair again after the revert, connected
                await wait_for(lambda: (gw.remote_config.last or {}).get("outcome") == "reverted", 30)
                assert path.read_text() == before
                assert in_use(gw) == rotated and rotated.exists()
                await wait_for(lambda: connected(gw), timeout_s=20)
    finally:
        broker.close()
