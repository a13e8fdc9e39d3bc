"""Keys and certificates on a real `citynerve run` behind a Mosquitto that requires client
certificates (a test CA made here): expiry in status, birth, metrics and `citynerve diag certs`
with the warning alarm; TLS client key rotation with the CSR made on the gateway: a certificate from
the wrong CA is refused by the broker and the gateway stays on its old one, a good one switches,
clears the expiry alarm and survives a restart; the command key rotated with the fleet tool, kept
across the restart, the old key retired."""

from __future__ import annotations

import asyncio
import datetime as dt
import json
import signal
import stat
import subprocess
import sys
from pathlib import Path
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID

from citynerve.gateway.control import ask
from citynerve.hil.platform import CommandSigner, MosquittoBroker, PlatformConsumer, free_port
from citynerve.hil.platform.fleet import FleetClient
from tests.integration.conftest import GatewayProcess, gateway_config
from tests.integration.test_run_fleet import cli, socket_up, until
from tests.integration.test_run_web import get
from tests.uplink.certs import make_pki_with_key

GW = "gw-test"
CENTRE_KEY = bytes.fromhex("55" * 32)


def sign_csr(pem: str, ca_file: Path, ca_key: ec.EllipticCurvePrivateKey, days: int) -> str:
    """The platform's CA at work: a client certificate for the gateway's CSR."""
    csr = x509.load_pem_x509_csr(pem.encode())
    assert csr.is_signature_valid
    ca = x509.load_pem_x509_certificate(ca_file.read_bytes())
    now = dt.datetime.now(dt.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(csr.subject)
        .issuer_name(ca.subject)
        .public_key(csr.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=1))
        .not_valid_after(now + dt.timedelta(days=days))
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.CLIENT_AUTH]), critical=False)
        .sign(ca_key, hashes.SHA256())
    )
    return cert.public_bytes(serialization.Encoding.PEM).decode()


def gw_status(tmp: Path) -> dict[str, Any]:
    """The running gateway's status, from its control socket (what `citynerve status --json` shows)."""
    result: dict[str, Any] = asyncio.run(ask(tmp / "var" / "gw.sock", "status", timeout_s=10.0))
    return result


def fleet_tool(
    broker: MosquittoBroker, tmp: Path, *args: str, key_file: str = "centre.key"
) -> subprocess.CompletedProcess[str]:
    """`python -m citynerve.hil.platform fleet ...` as an integrator would run it."""
    tool = [sys.executable, "-m", "citynerve.hil.platform", "fleet", "--broker", broker.url]
    key = ["--hmac-key-file", str(tmp / key_file), "--key-id", "ops-centre"]
    return subprocess.run(
        [*tool, "--gateway", GW, *key, *args],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=tmp,
    )


def tls_listener(port: int, pki: Any) -> str:
    """A Mosquitto listener on `port` that asks every client for a certificate of the test CA."""
    lines = [f"listener {port} 127.0.0.1", f"cafile {pki.ca}", f"certfile {pki.server_cert}"]
    return "\n".join([*lines, f"keyfile {pki.server_key}", "require_certificate true"])


def write_config(tmp: Path, port: int, tls_port: int, pki: Any, web_port: int) -> Path:
    config = gateway_config(tmp, port, buses=1, units=1)
    (tmp / "centre.key").write_text(CENTRE_KEY.hex())
    for f in (tmp / "centre.key", pki.client_key):
        f.chmod(0o600)
    text = config.read_text()
    text += f'\n[web]\nenabled = true\nbind = "127.0.0.1"\nport = {web_port}\n'
    text += f'\n[upstream]\nbrokers = ["mqtts://127.0.0.1:{tls_port}"]\n'
    text += "backoff = { initial_s = 0.2, max_s = 1.0 }\n"
    text += "connect_timeout_s = 3.0  # a refused client certificate ends in a timeout\n"
    text += f'tls = {{ ca_file = "{pki.ca}", cert_file = "{pki.client_cert}", '
    text += f'key_file = "{pki.client_key}" }}\n'
    text += "[upstream.commands]\nenabled = true\n"
    text += f'[[upstream.commands.keys]]\nid = "ops-centre"\nhmac_key_file = "{tmp / "centre.key"}"\n'
    text += 'classes = ["read", "configure"]\n'
    config.write_text(text)
    return config


def test_certificate_expiry_and_tls_client_key_rotation(
    tmp_path: Path, modbus_peer: int, gateway_process: type[GatewayProcess]
) -> None:
    pki, ca_key = make_pki_with_key(tmp_path / "pki")
    _, other_key = make_pki_with_key(tmp_path / "other")
    tls_port, web_port = free_port(), free_port()
    with MosquittoBroker(extra_config=tls_listener(tls_port, pki)) as broker:
        config = write_config(tmp_path, modbus_peer, tls_port, pki, web_port)

        async def scenario() -> None:
            async with (
                PlatformConsumer(host=broker.host, port=broker.port, db_path=tmp_path / "p.db") as platform,
                FleetClient(broker.host, broker.port, CommandSigner(hmac_key=CENTRE_KEY)) as centre,
            ):
                gw = gateway_process(config)
                gw.start()
                await until(lambda: socket_up(tmp_path))
                await until(lambda: (gw_status(tmp_path).get("uplink") or {}).get("state") == "connected")

                # expiry: the test CA and client cert live 30 days, inside the default 30-day window
                certs = (await asyncio.to_thread(gw_status, tmp_path))["certificates"]
                client = next(c for c in certs["certificates"] if c["role"] == "client")
                assert client["subject"] == "CN=gw-tls" and 29 < client["days_left"] <= 30
                assert set(certs["expiring"]) == {"client", "ca CN=CityNerve test CA"}
                birth = platform.store.document(GW, "status")
                assert birth is not None
                assert birth["gateway"]["certificates"]["certificates"][0]["not_after"] == client["not_after"]
                _, _, metrics = get(f"http://127.0.0.1:{web_port}/metrics")
                sample = 'citynerve_tls_cert_not_after_seconds{role="client",subject="CN=gw-tls"}'
                assert f"{sample} {int(client['not_after'])}\n" in metrics
                assert 'citynerve_tls_cert_days_left{role="ca",subject="CN=CityNerve test CA"}' in metrics
                out = cli(config, "diag", "certs", "--json")
                assert out.returncode == 1 and json.loads(out.stdout)["expiring"], out

                def expiry_events() -> list[dict[str, Any]]:
                    return [e for e in platform.store.events(GW) if e["kind"] == "certificate_expiry"]

                await until(lambda: len(expiry_events()) >= 2)
                raised = {e["attrs"]["certificate"] for e in expiry_events()}
                assert raised == {"client", "ca CN=CityNerve test CA"}

                # rotation with the fleet tool: the CSR is made on the gateway; the private key stays there
                out = await asyncio.to_thread(fleet_tool, broker, tmp_path, "tls-csr", "--out", "gw.csr")
                assert out.returncode == 0 and "PRIVATE" not in out.stdout, out
                csr = (tmp_path / "gw.csr").read_text()
                pending = tmp_path / "var" / "credentials" / "pending.key"
                assert stat.S_IMODE(pending.stat().st_mode) == 0o600

                # signed by a CA the broker does not trust: refused, the gateway stays on the old one
                wrong = sign_csr(csr, tmp_path / "other" / "ca.pem", other_key, 365)
                r = await centre.send(GW, "tls_install_cert", {"certificate": wrong})
                assert (r["outcome"], r["reason"]) == ("rejected", "bad_value"), r
                assert "still on the old one" in r["detail"]
                r = await centre.send(GW, "diag_certs")
                client = next(c for c in r["result"]["certificates"] if c["role"] == "client")
                assert client["subject"] == "CN=gw-tls"
                # a certificate for another key is refused before any connection
                stray = sign_csr(_other_csr(), pki.ca, ca_key, 365)
                r = await centre.send(GW, "tls_install_cert", {"certificate": stray})
                assert r["reason"] == "bad_value" and "not for the pending key" in r["detail"]

                # signed by the right CA: switched, reconnected with it, the expiry alarm cleared
                (tmp_path / "gw.pem").write_text(sign_csr(csr, pki.ca, ca_key, 365))
                out = await asyncio.to_thread(fleet_tool, broker, tmp_path, "tls-install", "gw.pem")
                assert out.returncode == 0 and json.loads(out.stdout)["result"]["switched"] is True, out
                assert not pending.exists()

                def on_new_cert() -> bool:
                    st = gw_status(tmp_path)
                    up = st.get("uplink") or {}
                    return up.get("state") == "connected" and up.get("reconnects", 0) >= 1

                await until(on_new_cert)
                certs = (await asyncio.to_thread(gw_status, tmp_path))["certificates"]
                client = next(c for c in certs["certificates"] if c["role"] == "client")
                assert client["subject"] == f"CN={GW}" and client["days_left"] > 360
                assert certs["expiring"] == ["ca CN=CityNerve test CA"]
                cleared = ("client", "cleared")
                await until(
                    lambda: any((e["attrs"]["certificate"], e["state"]) == cleared for e in expiry_events())
                )
                audits = {e["attrs"]["what"] for e in platform.store.events(GW) if e["kind"] == "credentials"}
                assert {"tls_csr", "tls_fallback", "tls_switch"} <= audits

                # the command key rotated with the fleet tool (no overlap: the old key retires now)
                (tmp_path / "new.key").write_text("99" * 32)
                (tmp_path / "new.key").chmod(0o600)
                out = await asyncio.to_thread(
                    fleet_tool, broker, tmp_path, "rotate-key", "new.key", "--overlap-s", "0"
                )
                assert out.returncode == 0, out

                # a restart keeps the new certificate and the new command key
                assert gw.kill(signal.SIGTERM) == 0
                gw2 = gateway_process(config)
                gw2.start()
                await until(lambda: socket_up(tmp_path))
                await until(lambda: (gw_status(tmp_path).get("uplink") or {}).get("state") == "connected")
                certs = (await asyncio.to_thread(gw_status, tmp_path))["certificates"]
                client = next(c for c in certs["certificates"] if c["role"] == "client")
                assert client["subject"] == f"CN={GW}"
                # the CA's alarm, on the gateway itself, is kept across the restart (not cleared)
                assert "alarm certificate_expiry on gw-test" not in gw2.log.read_text()
                assert any(
                    a["kind"] == "certificate_expiry"
                    for a in (await asyncio.to_thread(gw_status, tmp_path))["alarms"]
                )
                out = await asyncio.to_thread(fleet_tool, broker, tmp_path, "certs", key_file="new.key")
                assert out.returncode == 0 and "command_keys" in json.loads(out.stdout)["result"], out
                out = await asyncio.to_thread(fleet_tool, broker, tmp_path, "certs")  # the retired key
                assert out.returncode == 1 and json.loads(out.stdout)["reason"] == "bad_signature", out
                out = cli(config, "diag", "certs", "--json")
                shown = json.loads(out.stdout)
                assert shown["expiring"] == ["ca CN=CityNerve test CA"] and out.returncode == 1
                assert f"CN={GW}" in {c["subject"] for c in shown["certificates"]}
                assert gw2.kill(signal.SIGTERM) == 0

        asyncio.run(scenario())


def _other_csr() -> str:
    key = ec.generate_private_key(ec.SECP256R1())
    csr = (
        x509.CertificateSigningRequestBuilder()
        .subject_name(x509.Name([x509.NameAttribute(x509.oid.NameOID.COMMON_NAME, "stray")]))
        .sign(key, hashes.SHA256())
    )
    return csr.public_bytes(serialization.Encoding.PEM).decode()


def test_a_client_certificate_changed_by_a_remote_config_clears_its_expiry_alarm_at_once(
    tmp_path: Path, modbus_peer: int, gateway_process: type[GatewayProcess]
) -> None:
    """`[upstream.tls]` cert_file and key_file changed from afar (applied by a new uplink, no
    restart): the new certificate is the one in use, and the old one's expiry alarm clears at once
    (it stayed raised until the next hourly check)."""
    pki, ca_key = make_pki_with_key(tmp_path / "pki")
    tls_port, web_port = free_port(), free_port()
    with MosquittoBroker(extra_config=tls_listener(tls_port, pki)) as broker:
        config = write_config(tmp_path, modbus_peer, tls_port, pki, web_port)
        # a new pair from the same CA, valid for a year (the configured one has 30 days left)
        new_cert, new_key = new_pair(tmp_path, "new-client", pki.ca, ca_key)
        document = config.read_text().replace(str(pki.client_cert), str(new_cert))
        document = document.replace(str(pki.client_key), str(new_key))

        def expiring() -> set[str]:
            alarms = gw_status(tmp_path)["alarms"]
            return {a["subject"] for a in alarms if a["kind"] == "certificate_expiry"}

        async def scenario() -> None:
            signer = CommandSigner(hmac_key=CENTRE_KEY)
            async with FleetClient(broker.host, broker.port, signer, key_id="ops-centre") as centre:
                gateway_process(config).start()
                await until(lambda: socket_up(tmp_path))
                await until(lambda: (gw_status(tmp_path).get("uplink") or {}).get("state") == "connected")
                await until(lambda: "client" in expiring())

                out = await centre.apply_config(GW, document, version="new-cert", confirm_s=30)
                assert out["outcome"] == "confirmed", out
                certs = (await asyncio.to_thread(gw_status, tmp_path))["certificates"]
                assert (
                    next(c for c in certs["certificates"] if c["role"] == "client")["subject"] == "CN=gw-new"
                )
                await until(lambda: "client" not in expiring(), timeout_s=10.0)
                assert await asyncio.to_thread(expiring) == {"ca CN=CityNerve test CA"}  # still true

        asyncio.run(scenario())


def new_pair(tmp: Path, name: str, ca: Path, ca_key: ec.EllipticCurvePrivateKey) -> tuple[Path, Path]:
    """A client certificate (CN=gw-new, a year) and its key, put on the gateway by someone on site."""
    key = ec.generate_private_key(ec.SECP256R1())
    csr = (
        x509.CertificateSigningRequestBuilder()
        .subject_name(x509.Name([x509.NameAttribute(x509.oid.NameOID.COMMON_NAME, "gw-new")]))
        .sign(key, hashes.SHA256())
    )
    cert, key_file = tmp / f"{name}.pem", tmp / f"{name}.key"
    cert.write_text(sign_csr(csr.public_bytes(serialization.Encoding.PEM).decode(), ca, ca_key, 365))
    pem = key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    key_file.write_bytes(pem)
    key_file.chmod(0o600)
    return cert, key_file


def test_a_client_certificate_provisioned_again_by_a_remote_config_replaces_a_rotated_one(
    tmp_path: Path, modbus_peer: int, gateway_process: type[GatewayProcess]
) -> None:
    """After a TLS client key rotation, a remote config change naming a new configured pair puts
    that pair in force (the rotated one is forgotten, audited), now and after a restart, as a
    command key provisioned again does; a change that leaves the configured pair alone keeps the
    rotated one. The rotated pair used to win over any configured one: the change was confirmed
    while the gateway kept connecting with the rotated certificate."""
    pki, ca_key = make_pki_with_key(tmp_path / "pki")
    tls_port, web_port = free_port(), free_port()
    with MosquittoBroker(extra_config=tls_listener(tls_port, pki)) as broker:
        config = write_config(tmp_path, modbus_peer, tls_port, pki, web_port)
        new_cert, new_key = new_pair(tmp_path, "new-client", pki.ca, ca_key)
        same_pair = config.read_text().replace("connect_timeout_s = 3.0", "connect_timeout_s = 4.0")
        document = config.read_text().replace(str(pki.client_cert), str(new_cert))
        document = document.replace(str(pki.client_key), str(new_key))

        def client() -> str:
            certs = gw_status(tmp_path)["certificates"]["certificates"]
            return str(next(c for c in certs if c["role"] == "client")["subject"])

        def connected() -> bool:
            return (gw_status(tmp_path).get("uplink") or {}).get("state") == "connected"

        async def scenario() -> None:
            signer = CommandSigner(hmac_key=CENTRE_KEY)
            async with FleetClient(broker.host, broker.port, signer, key_id="ops-centre") as centre:
                gw = gateway_process(config)
                gw.start()
                await until(lambda: socket_up(tmp_path))
                await until(connected)
                csr = (await centre.send(GW, "tls_csr"))["result"]["csr"]
                r = await centre.send(
                    GW, "tls_install_cert", {"certificate": sign_csr(csr, pki.ca, ca_key, 365)}
                )
                assert r["result"]["switched"] is True, r
                await until(lambda: client() == f"CN={GW}")

                # a change that leaves the configured pair alone: still on the rotated one (refused
                # while the new pair is on probation, until the uplink connected with it: sent again
                # once it reconnected; a command sent while it reconnects is lost)
                await until(lambda: connected() and gw_status(tmp_path)["uplink"]["reconnects"] > 0)
                for _ in range(20):
                    out = await centre.apply_config(GW, same_pair, version="same-pair", confirm_s=30)
                    if out["outcome"] != "rejected" or "rotation waits" not in out["answer"]["detail"]:
                        break
                    await asyncio.sleep(0.5)
                assert out["outcome"] == "confirmed", out
                assert await asyncio.to_thread(client) == f"CN={GW}"
                # a new configured pair: in force, connected with it
                out = await centre.apply_config(GW, document, version="new-pair", confirm_s=30)
                assert out["outcome"] == "confirmed", out
                assert await asyncio.to_thread(client) == "CN=gw-new"
                assert not list((tmp_path / "var" / "credentials").glob("client-*"))
                # and after a restart
                assert gw.kill(signal.SIGTERM) == 0
                gateway_process(config).start()
                await until(lambda: socket_up(tmp_path))
                await until(connected)
                assert await asyncio.to_thread(client) == "CN=gw-new"

        asyncio.run(scenario())
