"""TLS client key rotation on a real Uplink and a real Mosquitto that requires client certificates:
after a switch the uplink must connect with the new pair within the confirmation window, else it
goes back to the old pair by itself. The trial connection normally catches a bad certificate
(tests/integration/test_run_keys.py); here it is made to pass, as if the broker had changed its
mind between the trial and the reconnect, to show the second line of defence."""

from __future__ import annotations

import datetime as dt
import json
from pathlib import Path
from typing import Any

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID

from citynerve.gateway.api import Event
from citynerve.gateway.credentials import Credentials
from citynerve.gateway.store import AsyncOutbox
from citynerve.gateway.uplink import (
    CommandOutcome,
    CommandProcessor,
    JsonV1Encoding,
    NonceCache,
    RejectReason,
    Uplink,
    UpstreamConfig,
)
from citynerve.gateway.uplink.commands import Caller, RemoteAction
from citynerve.gateway.uplink.errors import CommandRejectedError
from citynerve.gateway.uplink.permissions import Permission
from citynerve.gateway.uplink.signing import CommandVerifier
from citynerve.gateway.uplink.tlsrotate import STATE_KEY, TlsRotation
from citynerve.hil.platform import CommandSigner, MosquittoBroker, free_port
from tests.uplink.certs import make_pki_with_key
from tests.uplink.conftest import wait_for
from tests.uplink.test_commands import KEY, SIGNER, BuildingTarget

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


async def test_a_certificate_with_non_ascii_explanatory_text_is_installed(
    tmp_path: Path, outbox: AsyncOutbox
) -> None:
    """CA tools write `subject=...` lines above the PEM block, in UTF-8 (a city's name with an
    umlaut): the certificate is installed through a signed command, the real trial connection to a
    Mosquitto that requires client certificates passes, and only the certificates are stored."""
    pki, ca_key = make_pki_with_key(tmp_path / "pki")
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
            "tls": {
                "ca_file": str(pki.ca),
                "cert_file": str(pki.client_cert),
                "key_file": str(pki.client_key),
            },
        }
    )
    switched: list[UpstreamConfig] = []
    rotation = TlsRotation(
        state=outbox,
        directory=tmp_path / "credentials",
        gateway_id=GW,
        upstream=lambda: cfg,
        switch=switched.append,
        events=lambda e: None,
    )
    actions = {
        "tls_csr": RemoteAction(Permission.CONFIGURE, rotation.make_csr),
        "tls_install_cert": RemoteAction(Permission.CONFIGURE, rotation.install),
    }
    enc = JsonV1Encoding(topic_prefix="citynerve", gateway_id=GW)

    async def nothing() -> None:
        return None

    proc = CommandProcessor(
        gateway_id=GW, target=BuildingTarget(), verifier=CommandVerifier.hmac(KEY), nonces=NonceCache(outbox),
        decode=enc.decode_command, resend_inventory=nothing, enabled=True, extra_actions=actions,
    )  # fmt: skip

    async def send(action: str, args: dict[str, Any]) -> Any:
        return await proc.handle(CommandSigner.payload(SIGNER.command(GW, action, args)))

    try:
        csr = await send("tls_csr", {})
        assert csr.outcome is CommandOutcome.OK, csr
        pem = sign(csr.result["csr"], pki.ca, ca_key)
        r = await send("tls_install_cert", {"certificate": "subject=O = Stadtwerke Zürich, CN = gw\n" + pem})
        assert (r.outcome, r.result["switched"]) == (CommandOutcome.OK, True), r
        stored = next((tmp_path / "credentials").glob("client-*.pem")).read_bytes()
        assert stored == pem.encode("ascii")  # the certificate alone, ASCII as PEM is
        assert (await send("tls_csr", {})).outcome is CommandOutcome.OK  # the next rotation
        bad = await send("tls_install_cert", {"certificate": "Zürich: no certificate here"})
        assert bad.reason is RejectReason.BAD_VALUE and "not a PEM certificate" in bad.detail, bad
    finally:
        broker.close()


def _pair(stem: Path, ca_file: Path, ca_key: ec.EllipticCurvePrivateKey, issued_days_ago: float) -> Path:
    """A client certificate (`stem`.pem) and its key (`stem`.key), issued `issued_days_ago`."""
    key = ec.generate_private_key(ec.SECP256R1())
    ca = x509.load_pem_x509_certificate(ca_file.read_bytes())
    now = dt.datetime.now(dt.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(x509.oid.NameOID.COMMON_NAME, stem.name)]))
        .issuer_name(ca.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(days=issued_days_ago))
        .not_valid_after(now + dt.timedelta(days=365))
        .sign(ca_key, hashes.SHA256())
    )
    stem.with_suffix(".pem").write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    pem = key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    stem.with_suffix(".key").write_bytes(pem)
    stem.with_suffix(".key").chmod(0o600)
    return stem.with_suffix(".pem")


async def test_a_rotation_recorded_without_the_configured_hash_gives_way_to_a_new_configured_pair(
    tmp_path: Path, outbox: AsyncOutbox
) -> None:
    """Rotations recorded before the configured certificate's hash was (no `configured_sha256`):
    the configured pair as it was (issued before the rotated one) stays behind the rotation, and
    the record gets its hash, so the installer's new pair at the same paths replaces the rotated
    one at the next start; a configured certificate issued after the rotated one (put in place
    before this start) replaces it at once. Such a rotation used to win over any configured pair,
    for good."""
    pki, ca_key = make_pki_with_key(tmp_path / "pki")
    folder = tmp_path / "credentials"
    folder.mkdir()
    configured = _pair(tmp_path / "site", pki.ca, ca_key, issued_days_ago=300)
    key = configured.with_suffix(".key")
    tls = {"ca_file": str(pki.ca), "cert_file": str(configured), "key_file": str(key)}
    cfg = UpstreamConfig.model_validate({"brokers": ["mqtts://127.0.0.1:8883"], "tls": tls})

    async def start(issued_days_ago: float) -> tuple[Credentials, Path, list[Event]]:
        """A rotation recorded the old way, then the gateway's start (Credentials.load)."""
        rotated = _pair(folder / "client-20260101T000000", pki.ca, ca_key, issued_days_ago)
        record = {"cert_file": str(rotated), "key_file": str(rotated.with_suffix(".key")), "since": 1.0}
        await outbox.put(STATE_KEY, json.dumps(record))
        events: list[Event] = []
        creds = Credentials(cfg, gateway_id=GW, state=outbox, directory=folder, events=events.append)
        await creds.load()
        return creds, rotated, events

    # the configured pair is the one the platform's rotation replaced: the rotation wins
    creds, rotated, events = await start(issued_days_ago=30)
    assert creds.upstream().tls.cert_file == rotated and events == []
    again = Credentials(cfg, gateway_id=GW, state=outbox, directory=folder, events=events.append)
    await again.load()  # unchanged: still the rotated pair
    assert again.upstream().tls.cert_file == rotated and events == []

    # the installer puts a new pair in place (same file names, any issue date): used from the next start
    _pair(tmp_path / "site", pki.ca, ca_key, issued_days_ago=400)
    again = Credentials(cfg, gateway_id=GW, state=outbox, directory=folder, events=events.append)
    await again.load()
    assert again.upstream().tls.cert_file == configured and not rotated.exists()
    assert [e.attrs["what"] for e in events] == ["tls_configured"]
    assert json.loads(await outbox.get(STATE_KEY) or "null") is None

    # an old record, and a configured pair issued after the rotated one (put in place before this
    # start): the installer's pair, at once
    _pair(tmp_path / "site", pki.ca, ca_key, issued_days_ago=1)
    creds, rotated, events = await start(issued_days_ago=30)
    assert creds.upstream().tls.cert_file == configured and not rotated.exists()
    assert [e.attrs["what"] for e in events] == ["tls_configured"]


async def test_a_certificate_named_after_a_rotation_without_one_replaces_it_once_confirmed(
    tmp_path: Path, outbox: AsyncOutbox
) -> None:
    """A rotation on a gateway whose destination named no client certificate (a password over
    TLS): a certificate named later, by the installer or by a remote config change, replaces the
    rotated pair. A remote change is in force at once (`reconfigure`) but the rotated pair is kept
    for its revert until it is confirmed (`settle`); a destination naming none keeps the rotated
    pair. Such a rotation used to win over every certificate named later, for good."""
    pki, ca_key = make_pki_with_key(tmp_path / "pki")
    folder = tmp_path / "credentials"
    none = UpstreamConfig.model_validate(
        {"brokers": ["mqtts://127.0.0.1:8883"], "tls": {"ca_file": str(pki.ca)}}
    )
    site = _pair(tmp_path / "site", pki.ca, ca_key, issued_days_ago=400)  # older than the rotated one
    tls = {"ca_file": str(pki.ca), "cert_file": str(site), "key_file": str(site.with_suffix(".key"))}
    named = UpstreamConfig.model_validate({"brokers": ["mqtts://127.0.0.1:8883"], "tls": tls})
    events: list[Event] = []

    def credentials(cfg: UpstreamConfig) -> Credentials:
        creds = Credentials(cfg, gateway_id=GW, state=outbox, directory=folder, events=events.append)
        creds.tls = TrialPasses(
            state=outbox,
            directory=folder,
            gateway_id=GW,
            upstream=creds.upstream,
            switch=creds._switch,
            events=events.append,
            configured=lambda: creds._configured,
        )
        return creds

    creds = credentials(none)
    await creds.load()
    csr: Any = await creds.tls.make_csr({}, CALLER)
    await creds.tls.install({"certificate": sign(csr["csr"], pki.ca, ca_key)}, CALLER)
    assert creds.tls.active is not None
    rotated = creds.tls.active[0]
    assert creds.upstream().tls.cert_file == rotated

    # a remote change names the certificate: in force, the rotated pair kept until the verdict
    await creds.reconfigure(named)
    assert creds.upstream().tls.cert_file == site and rotated.exists()
    assert "tls_client_rotated" not in creds.status()
    csr = await creds.tls.make_csr({}, CALLER)  # no rotation over a change waiting for its verdict
    with pytest.raises(CommandRejectedError, match="waits for its health check"):
        await creds.tls.install({"certificate": sign(csr["csr"], pki.ca, ca_key)}, CALLER)
    await creds.reconfigure(none)  # reverted: the rotated pair again
    assert creds.upstream().tls.cert_file == rotated and rotated.exists()
    again = credentials(named)
    await again.load(settle=False)  # a restart while such a change waits: kept
    assert again.upstream().tls.cert_file == site and rotated.exists()
    await again.load()  # a start with nothing waiting (the installer named it): it wins
    assert again.upstream().tls.cert_file == site and not rotated.exists()
    assert [e.attrs["what"] for e in events if e.attrs["what"] == "tls_configured"] == ["tls_configured"]
    assert json.loads(await outbox.get(STATE_KEY) or "null") is None


async def test_a_start_with_only_a_sparkplug_destination_keeps_the_rotated_pair(
    tmp_path: Path, outbox: AsyncOutbox
) -> None:
    """The pair rotated for the JSON v1 (command) destination, then a start whose only destination
    is a Sparkplug one with a client certificate of its own (the JSON v1 one removed on site, for a
    while): the credentials hold that destination, but its certificate is not the rotated pair's
    replacement. The rotated pair stays for when the JSON v1 destination comes back; it was deleted
    at that start (audited tls_configured), and the JSON v1 destination came back on the configured
    pair, revoked since the rotation."""
    pki, ca_key = make_pki_with_key(tmp_path / "pki")
    folder = tmp_path / "credentials"
    configured = _pair(tmp_path / "site", pki.ca, ca_key, issued_days_ago=300)
    tls = {
        "ca_file": str(pki.ca),
        "cert_file": str(configured),
        "key_file": str(configured.with_suffix(".key")),
    }
    city = UpstreamConfig.model_validate({"id": "city", "brokers": ["mqtts://127.0.0.1:8883"], "tls": tls})
    scada_pair = _pair(tmp_path / "scada", pki.ca, ca_key, issued_days_ago=1)
    scada_tls = {**tls, "cert_file": str(scada_pair), "key_file": str(scada_pair.with_suffix(".key"))}
    scada = UpstreamConfig.model_validate(
        {"id": "scada", "encoding": "sparkplug-b", "brokers": ["mqtts://127.0.0.1:8884"], "tls": scada_tls}
    )
    events: list[Event] = []
    creds = Credentials(city, gateway_id=GW, state=outbox, directory=folder, events=events.append)
    creds.tls = TrialPasses(
        state=outbox, directory=folder, gateway_id=GW, upstream=creds.upstream, switch=creds._switch,
        events=events.append, configured=lambda: creds._configured,
    )  # fmt: skip
    await creds.load()
    csr: Any = await creds.tls.make_csr({}, CALLER)
    await creds.tls.install({"certificate": sign(csr["csr"], pki.ca, ca_key)}, CALLER)
    assert creds.tls.active is not None
    rotated = creds.tls.active[0]
    creds.tls.confirmed()

    only_scada = Credentials(scada, gateway_id=GW, state=outbox, directory=folder, events=events.append)
    await only_scada.load()
    await only_scada.settle()  # and a remote change confirmed meanwhile
    assert rotated.exists() and "tls_configured" not in [e.attrs["what"] for e in events]
    assert only_scada.upstream().tls.cert_file == scada_pair

    back = Credentials(city, gateway_id=GW, state=outbox, directory=folder, events=events.append)
    await back.load()  # the city destination back: on the rotated pair
    assert back.upstream().tls.cert_file == rotated


async def test_a_rotation_for_another_destination_is_refused_while_one_is_kept(
    tmp_path: Path, outbox: AsyncOutbox
) -> None:
    """The pair rotated for `city`, then commands moved to `legacy` on site: a rotation for legacy
    would end city's record (city would come back on its configured pair), so it is refused, and
    nothing changes; city's pair is still the one city uses, and is recorded for city."""
    pki, ca_key = make_pki_with_key(tmp_path / "pki")
    folder = tmp_path / "credentials"
    tls = {"ca_file": str(pki.ca), "cert_file": str(pki.client_cert), "key_file": str(pki.client_key)}
    city = UpstreamConfig.model_validate({"id": "city", "brokers": ["mqtts://127.0.0.1:8883"], "tls": tls})
    legacy = city.model_copy(update={"id": "legacy"})
    events: list[Event] = []

    def credentials(cfg: UpstreamConfig) -> Credentials:
        creds = Credentials(cfg, gateway_id=GW, state=outbox, directory=folder, events=events.append)
        creds.tls = TrialPasses(
            state=outbox, directory=folder, gateway_id=GW, upstream=creds.upstream, switch=creds._switch,
            events=events.append, configured=lambda: creds._configured,
        )  # fmt: skip
        return creds

    creds = credentials(city)
    await creds.load()
    csr: Any = await creds.tls.make_csr({}, CALLER)
    await creds.tls.install({"certificate": sign(csr["csr"], pki.ca, ca_key)}, CALLER)
    assert creds.tls.active is not None
    rotated = creds.tls.active[0]
    assert json.loads(await outbox.get(STATE_KEY) or "null")["destination"] == "city"

    moved = credentials(legacy)
    await moved.load()
    assert moved.upstream().tls.cert_file == pki.client_cert  # legacy's own, not city's pair
    csr = await moved.tls.make_csr({}, CALLER)
    with pytest.raises(CommandRejectedError, match="destination city's"):
        await moved.tls.install({"certificate": sign(csr["csr"], pki.ca, ca_key)}, CALLER)
    back = credentials(city)
    await back.load()
    assert back.upstream().tls.cert_file == rotated
