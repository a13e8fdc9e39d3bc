"""Actions that are the command destination's alone, sent through another JSON v1 destination: an
in-process gateway with two destinations on a real Mosquitto (`legacy` first: it carries commands,
under the prefix `legacy`; `city`, prefix `citynerve`), each with its own key under the same id
`ops-centre`, the way a district centre gets a second platform.

- `update_start` through `city` replaced the transfer `legacy`'s platform had in progress (its
  chunks deleted) and told `city` "ok", naming chunk topics under `legacy/...`, the only ones
  subscribed, which a platform on another broker never reaches.
- `tls_csr` through `city` replaced the pending key of `legacy`'s rotation (whose certificate was
  then refused as "not for the pending key"); `tls_install_cert` through `city` switched `legacy`'s
  TLS client pair, the one its uplink connects with.
- `diag_certs` through `city` showed `legacy`'s certificates, as if they were `city`'s.

Now `update_start`, `tls_csr` and `tls_install_cert` through `city` are `rejected, not_permitted`,
naming the command destination, and change nothing; `update_status` (read) still answers, and
`diag_certs` answers with the certificates of the destination asked through, naming it."""

from __future__ import annotations

import contextlib
import hashlib
import os
import textwrap
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives.asymmetric import ec

from citynerve.gateway.config import load_config
from citynerve.gateway.runtime import Gateway
from citynerve.hil.platform import MosquittoBroker, free_port
from citynerve.hil.platform.fleet import FleetClient
from citynerve.hil.platform.fleet_update import Bundle
from citynerve.hil.sim.modbus import ModbusBuilding
from tests.fieldtools.conftest import gateway_toml, run_gateway, wait_for
from tests.fleet.test_key_rotation_destinations import CITY_KEY, GW, LEGACY_KEY, _key, platform
from tests.fleet.test_remoteconfig_destinations import destinations
from tests.uplink.certs import Pki, make_pki_with_key
from tests.uplink.test_tls_rotation import sign

CHUNK = 4096


def refused_through_city(out: dict[str, Any]) -> bool:
    return (
        out.get("outcome") == "rejected"
        and out.get("reason") == "not_permitted"
        and "through destination 'legacy'" in str(out.get("detail"))
    )


async def test_update_start_through_another_destination_is_refused_and_keeps_the_transfer(
    short_dir: Path,
) -> None:
    broker = MosquittoBroker(workdir=short_dir)
    broker.start()
    legacy_key = _key(short_dir / "legacy.key", LEGACY_KEY)
    city_key = _key(short_dir / "city.key", CITY_KEY)
    root = short_dir / "opt"
    (root / "releases").mkdir(parents=True)
    update = f'\n[update]\nroot = "{root}"\nservice = "process"\nmin_free_bytes = 0\n'
    data = os.urandom(12 * CHUNK + 5)  # 13 chunks
    b = Bundle(len(data), hashlib.sha256(data).hexdigest(), data, chunk_bytes=CHUNK)
    other = os.urandom(3 * CHUNK)
    b2 = Bundle(len(other), hashlib.sha256(other).hexdigest(), other, chunk_bytes=CHUNK)
    classes = ("read", "configure", "update")
    try:
        async with ModbusBuilding() as building:
            host, port = building.endpoint
            ups = destinations(broker, legacy_key, legacy=True, city=True, city_key=city_key, classes=classes)
            path = short_dir / "gateway.toml"
            path.write_text(gateway_toml(host, port, extra=ups + update))
            async with (
                run_gateway(load_config(path)) as gw,
                platform(broker, CITY_KEY) as city,
                platform(broker, LEGACY_KEY, prefix="legacy") as legacy,
            ):
                await wait_for(
                    lambda: len(gw.uplinks) == 2 and all(u.snapshot().connected for u in gw.uplinks),
                    timeout_s=20,
                )
                ru = gw.remote_update
                assert ru is not None and gw.uplink is not None and gw.uplink.destination == "legacy"

                # legacy's platform has a transfer in progress: 4 of 13 chunks
                out = await legacy.send(GW, "update_start", b.start_args("u-1"))
                assert out["outcome"] == "ok" and out["result"]["topic"] == f"legacy/{GW}/update/u-1", out
                await legacy.publish(f"legacy/{GW}/update/u-1/table", b.table())
                for i in range(4):
                    await legacy.publish(f"legacy/{GW}/update/u-1/{i}", b.chunk(i))
                await wait_for(lambda: ru.chunks == 4, timeout_s=10)

                # city: refused, chunks and URL alike; the transfer in progress untouched
                out = await city.send(GW, "update_start", b2.start_args("u-2"))
                assert refused_through_city(out), out
                url_args = {**b2.start_args("u-3"), "url": "http://127.0.0.1:9/bundle.tar"}
                for k in ("chunk_bytes", "chunks_sha256"):
                    url_args.pop(k, None)
                out = await city.send(GW, "update_start", url_args)
                assert refused_through_city(out), out
                out = await city.send(GW, "update_status")  # read: answered
                assert out["outcome"] == "ok" and out["result"]["update_id"] == "u-1", out

                out = await legacy.send(GW, "update_start", b.start_args("u-1"))
                assert out["outcome"] == "ok", out
                assert (out["result"]["update_id"], out["result"]["missing"]) == ("u-1", [[4, 12]]), out
    finally:
        broker.close()


def legacy_tls(port: int, ca: Path, cert: Path, key: Path, centre_key: Path) -> str:
    return textwrap.dedent(
        f"""
        [[upstream]]
        id = "legacy"
        topic_prefix = "legacy"
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


def city_plain(broker: MosquittoBroker, centre_key: Path) -> str:
    return textwrap.dedent(
        f"""
        [[upstream]]
        id = "city"
        topic_prefix = "citynerve"
        brokers = ["{broker.url}"]
        backoff = {{ initial_s = 0.1, max_s = 0.5 }}
        [upstream.commands]
        enabled = true
        [[upstream.commands.keys]]
        id = "ops-centre"
        hmac_key_file = "{centre_key}"
        classes = ["read", "configure"]
        """
    )


@dataclass
class TlsSetup:
    gw: Gateway
    legacy: FleetClient  # the command destination's platform: TLS with client certificates
    city: FleetClient  # the other one: plain MQTT, no certificates
    pki: Pki
    ca_key: ec.EllipticCurvePrivateKey


@contextlib.asynccontextmanager
async def tls_gateway(short_dir: Path) -> AsyncIterator[TlsSetup]:
    pki, ca_key = make_pki_with_key(short_dir / "pki")
    pki.client_key.chmod(0o600)
    legacy_key = _key(short_dir / "legacy.key", LEGACY_KEY)
    city_key = _key(short_dir / "city.key", CITY_KEY)
    tls_port = free_port()
    listener = [f"listener {tls_port} 127.0.0.1", f"cafile {pki.ca}", f"certfile {pki.server_cert}"]
    listener += [f"keyfile {pki.server_key}", "require_certificate true"]
    broker = MosquittoBroker(workdir=short_dir, extra_config="\n".join(listener))
    broker.start()
    try:
        async with ModbusBuilding() as building:
            host, port = building.endpoint
            ups = legacy_tls(tls_port, pki.ca, pki.client_cert, pki.client_key, legacy_key)
            ups += city_plain(broker, city_key)
            path = short_dir / "gateway.toml"
            path.write_text(gateway_toml(host, port, extra=ups))
            async with (
                run_gateway(load_config(path)) as gw,
                platform(broker, CITY_KEY) as city,
                platform(broker, LEGACY_KEY, prefix="legacy") as legacy,
            ):
                await wait_for(
                    lambda: len(gw.uplinks) == 2 and all(u.snapshot().connected for u in gw.uplinks),
                    timeout_s=20,
                )
                assert gw.uplink is not None and gw.uplink.destination == "legacy"
                yield TlsSetup(gw, legacy, city, pki, ca_key)
    finally:
        broker.close()


async def test_tls_rotation_through_another_destination_is_refused_and_changes_nothing(
    short_dir: Path,
) -> None:
    async with tls_gateway(short_dir) as t:
        # legacy's platform starts a rotation; city's requests are refused in the middle
        csr: Any = (await t.legacy.send(GW, "tls_csr"))["result"]["csr"]
        out = await t.city.send(GW, "tls_csr")
        assert refused_through_city(out), out
        cert = sign(csr, t.pki.ca, t.ca_key)
        out = await t.city.send(GW, "tls_install_cert", {"certificate": cert})
        assert refused_through_city(out), out
        assert t.gw.uplink is not None and t.gw.uplink.config.tls.cert_file == t.pki.client_cert

        # legacy's own rotation goes through: its pending key was kept
        out = await t.legacy.send(GW, "tls_install_cert", {"certificate": cert})
        assert out["outcome"] == "ok" and out["result"]["switched"] is True, out
        creds = t.gw.credentials
        assert creds is not None
        await wait_for(lambda: creds.tls.previous is None, timeout_s=20)  # confirmed


async def test_diag_certs_answers_for_the_destination_asked_through(short_dir: Path) -> None:
    async with tls_gateway(short_dir) as t:
        mine = (await t.legacy.send(GW, "diag_certs"))["result"]
        clients = [c["file"] for c in mine["certificates"] if c["role"] == "client"]
        assert (mine["destination"], clients) == ("legacy", [str(t.pki.client_cert)]), mine
        theirs = (await t.city.send(GW, "diag_certs"))["result"]
        assert (theirs.get("destination"), theirs["certificates"]) == ("city", []), theirs


async def test_diag_uplink_probes_the_brokers_of_the_destination_asked_through(short_dir: Path) -> None:
    """`legacy` on the TLS listener, `city` on the plain one: a probe through `city` probed
    `legacy`'s broker (the first destination's), the one `city`'s platform does not use."""
    async with tls_gateway(short_dir) as t:
        legacy_url = t.gw.uplinks[0].config.brokers[0]
        city_url = t.gw.uplinks[1].config.brokers[0]
        for client, url in ((t.legacy, legacy_url), (t.city, city_url)):
            out = await client.send(GW, "diag_uplink", {"probe": True})
            probed = [(r["broker"], r["ok"]) for r in out["result"]["probe"]]
            assert probed == [(url, True)], out
