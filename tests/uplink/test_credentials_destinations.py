"""The gateway's credentials (TLS client identity, command keys, certificate expiry) belong to the
destination that carries commands: the first enabled JSON v1 one. A running gateway (in-process,
real Mosquitto asking for client certificates, a real TLS client key rotation) whose destinations
change from afar (reload + new uplinks, as a remote config applies them): the rotated pair and the
credentials follow that destination's new uplink, wherever it is in the list, and stay attached to
no stopped uplink; with no JSON v1 destination left the rotated pair is kept for when one comes
back (a revert). They followed `[[upstream]]` number one: a Sparkplug destination put first forgot
(deleted) the rotated pair, audited as a configured certificate `None` provisioned again, and the
JSON v1 uplink connected with the configured pair; without a JSON v1 destination they stayed on the
old, stopped uplink."""

from __future__ import annotations

import asyncio
import json
import textwrap
from pathlib import Path
from typing import Any

from click.testing import CliRunner

from citynerve.gateway.cli import main
from citynerve.gateway.config import load_config
from citynerve.gateway.uplink import Uplink
from citynerve.gateway.uplink.commands import Caller
from citynerve.hil.platform import MosquittoBroker, free_port
from citynerve.hil.sim.modbus import ModbusBuilding
from tests.fieldtools.conftest import gateway_toml, run_gateway, wait_for
from tests.uplink.certs import make_pki_with_key
from tests.uplink.test_tls_rotation import _pair, sign

GW = "gw-test-0001"
CALLER = Caller("ops-centre", "c-1")


async def test_the_credentials_follow_the_json_destination_when_a_sparkplug_one_becomes_first(
    short_dir: Path,
) -> None:
    pki, ca_key = make_pki_with_key(short_dir / "pki")
    pki.client_key.chmod(0o600)
    tls_port = free_port()
    tls = [f"cafile {pki.ca}", f"certfile {pki.server_cert}", f"keyfile {pki.server_key}"]
    broker = MosquittoBroker(
        workdir=short_dir,
        extra_config="\n".join([f"listener {tls_port} 127.0.0.1", *tls, "require_certificate true"]),
    )
    broker.start()
    city = textwrap.dedent(
        f"""
        [[upstream]]
        id = "city"
        brokers = ["mqtts://127.0.0.1:{tls_port}"]
        connect_timeout_s = 2.0
        backoff = {{ initial_s = 0.1, max_s = 0.5 }}
        tls = {{ ca_file = "{pki.ca}", cert_file = "{pki.client_cert}", key_file = "{pki.client_key}" }}
        """
    )
    scada = textwrap.dedent(
        f"""
        [[upstream]]
        id = "scada"
        encoding = "sparkplug-b"
        brokers = ["{broker.url}"]
        """
    )
    try:
        async with ModbusBuilding() as building:
            host, port = building.endpoint
            path = short_dir / "gateway.toml"
            path.write_text(gateway_toml(host, port, extra=city))
            async with run_gateway(load_config(path)) as gw:
                creds = gw.credentials
                assert creds is not None

                def city_uplink() -> Uplink:
                    return next(u for u in gw.uplinks if isinstance(u, Uplink) and u.destination == "city")

                def connected_again(after: int) -> bool:
                    # The control socket answers before the uplinks are made: none yet is not yet.
                    if not any(isinstance(u, Uplink) and u.destination == "city" for u in gw.uplinks):
                        return False
                    s = city_uplink().snapshot()
                    return s.connected and s.reconnects > after

                def client_subject() -> Any:
                    certs = creds.status()["certificates"]
                    return next(c["subject"] for c in certs if c["role"] == "client")

                await wait_for(lambda: connected_again(-1), timeout_s=20)
                # the platform rotates the TLS client key of the city destination
                csr: Any = await creds.tls.make_csr({}, CALLER)
                r = await creds.tls.install({"certificate": sign(csr["csr"], pki.ca, ca_key)}, CALLER)
                assert r["switched"] is True
                assert creds.tls.active is not None
                rotated = creds.tls.active[0]
                await wait_for(lambda: connected_again(0), timeout_s=20)
                await wait_for(lambda: creds.tls.previous is None, timeout_s=20)  # confirmed
                assert client_subject() == f"CN={GW}"

                # a Sparkplug destination put before it: the city uplink keeps the rotated pair
                path.write_text(gateway_toml(host, port, extra=scada + city))
                await gw.reload()
                await gw.restart_uplink()
                assert gw.uplink is city_uplink() and creds.uplink is gw.uplink
                assert city_uplink().config.tls.cert_file == rotated and rotated.exists()
                assert client_subject() == f"CN={GW}"
                await wait_for(lambda: connected_again(-1), timeout_s=20)

                # no JSON v1 destination left: nothing carries commands, the credentials hold no
                # stopped uplink (a switch would have gone to it and fallen back unconnected)
                path.write_text(gateway_toml(host, port, extra=scada))
                await gw.reload()
                await gw.restart_uplink()
                assert gw.uplink is None and creds.uplink is None
                assert rotated.exists() and "client" not in creds.status().get("expiring", [])
                assert not any(c["role"] == "client" for c in creds.status()["certificates"])

                # the city destination back (a revert): on the rotated pair again
                path.write_text(gateway_toml(host, port, extra=city + scada))
                await gw.reload()
                await gw.restart_uplink()
                assert creds.uplink is city_uplink() and city_uplink().config.tls.cert_file == rotated
                await wait_for(lambda: connected_again(-1), timeout_s=20)
                assert client_subject() == f"CN={GW}"
    finally:
        broker.close()


async def test_the_rotated_pair_stays_with_its_destination_when_commands_move_to_another(
    short_dir: Path,
) -> None:
    """The pair rotated for `city`, then the command destination changed on site to another JSON v1
    destination, `legacy` (city disabled, or put after it). The pair belongs to city: a start never
    deletes it for legacy's own certificate, legacy never connects with it, and city connects with
    it wherever it is in the list. The record named no destination: that start deleted the pair
    (audited tls_configured) and city, re-enabled, came back on its configured pair (perhaps revoked
    since the rotation); a legacy naming no certificate was handed city's pair."""
    pki, ca_key = make_pki_with_key(short_dir / "pki")
    pki.client_key.chmod(0o600)
    legacy_cert = _pair(short_dir / "legacy", pki.ca, ca_key, issued_days_ago=1)
    tls_port, open_port = free_port(), free_port()
    tls = [f"cafile {pki.ca}", f"certfile {pki.server_cert}", f"keyfile {pki.server_key}"]
    broker = MosquittoBroker(
        workdir=short_dir,
        extra_config="\n".join(
            # the second listener: TLS, no client certificate asked for
            [
                f"listener {tls_port} 127.0.0.1",
                *tls,
                "require_certificate true",
                f"listener {open_port} 127.0.0.1",
                *tls,
            ]
        ),
    )
    broker.start()

    def destination(id_: str, port: int, cert: Path | None, *, enabled: bool = True) -> str:
        pair = f', cert_file = "{cert}", key_file = "{cert.with_suffix(".key")}"' if cert else ""
        return textwrap.dedent(
            f"""
            [[upstream]]
            id = "{id_}"
            enabled = {str(enabled).lower()}
            brokers = ["mqtts://127.0.0.1:{port}"]
            connect_timeout_s = 2.0
            backoff = {{ initial_s = 0.1, max_s = 0.5 }}
            tls = {{ ca_file = "{pki.ca}"{pair} }}
            """
        )

    city = destination("city", tls_port, pki.client_cert)
    city_off = destination("city", tls_port, pki.client_cert, enabled=False)
    legacy_own = destination("legacy", tls_port, legacy_cert)
    legacy_none = destination("legacy", open_port, None)
    try:
        async with ModbusBuilding() as building:
            host, port = building.endpoint
            path = short_dir / "gateway.toml"

            def uplink(gw: Any, id_: str) -> Uplink | None:
                return next((u for u in gw.uplinks if isinstance(u, Uplink) and u.destination == id_), None)

            def connected(gw: Any, id_: str) -> bool:
                u = uplink(gw, id_)
                return u is not None and u.snapshot().connected

            def cert_of(gw: Any, id_: str) -> Path | None:
                u = uplink(gw, id_)
                assert u is not None
                return u.config.tls.cert_file

            path.write_text(gateway_toml(host, port, extra=city))
            async with run_gateway(load_config(path)) as gw:
                creds = gw.credentials
                assert creds is not None
                await wait_for(lambda: connected(gw, "city"), timeout_s=20)
                csr: Any = await creds.tls.make_csr({}, CALLER)
                await creds.tls.install({"certificate": sign(csr["csr"], pki.ca, ca_key)}, CALLER)
                assert creds.tls.active is not None
                rotated = creds.tls.active[0]
                await wait_for(lambda: creds.tls.previous is None, timeout_s=20)  # confirmed

            # (a) city disabled, legacy with its own certificate: a start keeps city's pair
            path.write_text(gateway_toml(host, port, extra=city_off + legacy_own))
            async with run_gateway(load_config(path)) as gw:
                await wait_for(lambda: connected(gw, "legacy"), timeout_s=20)
                assert cert_of(gw, "legacy") == legacy_cert and rotated.exists()
                assert gw.credentials is not None and gw.credentials.tls.active is not None
                # `diag certs` shows the command destination's pair too (it took the newest
                # rotated pair in the credentials folder, city's, for legacy's)
                assert await asyncio.to_thread(diag_client_cert, path) == str(legacy_cert)

            # (b) legacy naming no certificate: not handed city's pair
            path.write_text(gateway_toml(host, port, extra=city_off + legacy_none))
            async with run_gateway(load_config(path)) as gw:
                await wait_for(lambda: connected(gw, "legacy"), timeout_s=20)
                assert cert_of(gw, "legacy") is None

            # the order changed, both enabled: legacy takes commands, city keeps its rotated pair
            path.write_text(gateway_toml(host, port, extra=legacy_none + city))
            async with run_gateway(load_config(path)) as gw:
                await wait_for(lambda: connected(gw, "legacy") and connected(gw, "city"), timeout_s=20)
                assert gw.uplink is uplink(gw, "legacy") and cert_of(gw, "legacy") is None
                assert cert_of(gw, "city") == rotated

            # city first again (legacy's own certificate beside it): on the rotated pair
            path.write_text(gateway_toml(host, port, extra=city + legacy_own))
            async with run_gateway(load_config(path)) as gw:
                await wait_for(lambda: connected(gw, "city") and connected(gw, "legacy"), timeout_s=20)
                assert cert_of(gw, "city") == rotated and cert_of(gw, "legacy") == legacy_cert
                assert gw.credentials is not None
                assert gw.credentials.status().get("tls_client_rotated") == str(rotated)
            assert await asyncio.to_thread(diag_client_cert, path) == str(rotated)  # the record names city

            # city renamed on site (a second centre's config put beside it): the pair's destination
            # is configured no more, so the command destination takes it, as a record naming none
            # (it was left unused, and "centre" connected with the configured pair)
            centre = destination("centre", tls_port, pki.client_cert)
            path.write_text(gateway_toml(host, port, extra=centre + legacy_own))
            async with run_gateway(load_config(path)) as gw:
                await wait_for(lambda: connected(gw, "centre"), timeout_s=20)
                assert cert_of(gw, "centre") == rotated and rotated.exists()
    finally:
        broker.close()


def diag_client_cert(path: Path) -> str:
    """The client certificate file `citynerve diag certs --json` reads for the config at `path`."""
    r = CliRunner().invoke(main, ["diag", "certs", "-c", str(path), "--json"], catch_exceptions=False)
    return {c["role"]: c["file"] for c in json.loads(r.output)["certificates"]}["client"]


def test_diag_certs_reads_the_command_destinations_certificates(short_dir: Path) -> None:
    """A Sparkplug destination first, with a client certificate of its own: `diag certs` shows the
    JSON v1 destination's, whose pair the platform rotates (it showed the first destination's)."""
    pki, ca_key = make_pki_with_key(short_dir / "pki")
    pki.client_key.chmod(0o600)
    scada_cert = _pair(short_dir / "scada", pki.ca, ca_key, issued_days_ago=1)
    scada_key = scada_cert.with_suffix(".key")
    scada_key.chmod(0o600)
    path = short_dir / "gateway.toml"
    path.write_text(
        gateway_toml("127.0.0.1", 1)
        + textwrap.dedent(
            f"""
            [[upstream]]
            id = "scada"
            encoding = "sparkplug-b"
            brokers = ["mqtts://127.0.0.1:1"]
            tls = {{ ca_file = "{pki.ca}", cert_file = "{scada_cert}", key_file = "{scada_key}" }}

            [[upstream]]
            id = "city"
            brokers = ["mqtts://127.0.0.1:1"]
            tls = {{ ca_file = "{pki.ca}", cert_file = "{pki.client_cert}", key_file = "{pki.client_key}" }}
            """
        )
    )
    assert diag_client_cert(path) == str(pki.client_cert)
