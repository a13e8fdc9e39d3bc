"""A remote config change and a TLS client certificate rotation are never in flight together: an
in-process gateway with two JSON v1 destinations on a real Mosquitto, `city` (the command
destination, on a listener that requires client certificates, whose pair the platform rotates)
and `ops` (plain, commands enabled, under its own topic prefix).

A new pair stays on probation until the uplink connected with it (else the gateway falls back to
the pair and the `[upstream]` from before the rotation). A change applied meanwhile rebuilt the
uplinks under that guard: when it fell back, `city`'s uplink ran the `[upstream]` from before the
change (confirmed, on disk) again. A rotation while a change waited for its health check: after
the change was reverted, the fall back put the reverted change's `[upstream]` back in force. Each
is now refused while the other waits, saying why, and goes through once it is over.

The trial connection is made to pass with a pair the broker refuses (as if the broker had changed
its mind between the trial and the reconnect, tests/uplink/test_tls_rotation.py): the pair stays
on probation until the guard falls back."""

from __future__ import annotations

import textwrap
from pathlib import Path
from typing import Any

import pytest

from citynerve.gateway.config import load_config
from citynerve.gateway.runtime import Gateway
from citynerve.gateway.uplink import UpstreamConfig
from citynerve.gateway.uplink.tlsrotate import TlsRotation
from citynerve.hil.platform import CommandSigner, MosquittoBroker, free_port
from citynerve.hil.platform.fleet import FleetClient
from citynerve.hil.sim.modbus import ModbusBuilding
from tests.fieldtools.conftest import gateway_toml, run_gateway, wait_for
from tests.fleet.test_remoteconfig_rotated_pair import connected, in_use, reachable
from tests.uplink.certs import Pki, make_pki_with_key
from tests.uplink.test_tls_rotation import sign

GW = "gw-test-0001"
KEY = bytes.fromhex("42" * 32)
COMMANDS = """
[upstream.commands]
enabled = true
[[upstream.commands.keys]]
id = "ops-centre"
hmac_key_file = "{key}"
classes = ["read", "configure"]
"""


def destinations(tls_port: int, plain: str, pki: Pki, key: Path, *, keepalive: int, backup: int = 0) -> str:
    """`city` (mTLS, with `keepalive`) and `ops`; with `backup`, a third destination on that port,
    where nothing listens (a change adding it is reverted)."""
    city = f"""
        [[upstream]]
        id = "city"
        brokers = ["mqtts://127.0.0.1:{tls_port}"]
        keepalive_s = {keepalive}
        connect_timeout_s = 2.0
        backoff = {{ initial_s = 0.1, max_s = 0.5 }}
        tls = {{ ca_file = "{pki.ca}", cert_file = "{pki.client_cert}", key_file = "{pki.client_key}" }}
        """
    ops = f"""
        [[upstream]]
        id = "ops"
        topic_prefix = "ops"
        brokers = ["{plain}"]
        backoff = {{ initial_s = 0.1, max_s = 0.5 }}
        """
    text = textwrap.dedent(city) + COMMANDS.format(key=key) + textwrap.dedent(ops) + COMMANDS.format(key=key)
    if backup:
        text += f'\n[[upstream]]\nid = "backup"\ntopic_prefix = "backup"\nbrokers = ["mqtt://127.0.0.1:{backup}"]\n'
    return text


def all_connected(gw: Gateway) -> bool:
    """Every destination's uplink connected (not before they are made: all() of none)."""
    return bool(gw.uplinks) and all(u.snapshot().connected for u in gw.uplinks)


def city_keepalive(gw: Gateway) -> int | None:
    """`keepalive_s` of the `[upstream]` the command uplink (`city`) runs with."""
    return gw.uplink.config.keepalive_s if gw.uplink is not None else None


async def test_a_config_change_and_a_tls_rotation_wait_for_each_other(
    short_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    async def passes(self: TlsRotation, candidate: UpstreamConfig) -> str | None:
        return None

    monkeypatch.setattr(TlsRotation, "_trial", passes)
    pki, ca_key = make_pki_with_key(short_dir / "pki")
    other, other_key = make_pki_with_key(short_dir / "other")  # a CA the broker does not trust
    pki.client_key.chmod(0o600)
    key = short_dir / "centre.key"
    key.write_text(KEY.hex())
    key.chmod(0o600)
    tls_port = free_port()
    listener = [f"listener {tls_port} 127.0.0.1", f"cafile {pki.ca}", f"certfile {pki.server_cert}"]
    listener += [f"keyfile {pki.server_key}", "require_certificate true"]
    broker = MosquittoBroker(workdir=short_dir, extra_config="\n".join(listener))
    broker.start()
    signer = CommandSigner(hmac_key=KEY)
    try:
        async with ModbusBuilding() as building:
            host, port = building.endpoint
            path = short_dir / "gateway.toml"

            def document(keepalive: int, backup: int = 0) -> str:
                extra = destinations(tls_port, broker.url, pki, key, keepalive=keepalive, backup=backup)
                return gateway_toml(host, port, extra=extra)

            path.write_text(document(30))
            async with (
                run_gateway(load_config(path)) as gw,
                FleetClient(broker.host, broker.port, signer, key_id="ops-centre") as city,
                FleetClient(broker.host, broker.port, signer, key_id="ops-centre", prefix="ops") as ops,
            ):
                await wait_for(lambda: all_connected(gw), timeout_s=20)
                await reachable(city)
                await reachable(ops)
                creds, remote = gw.credentials, gw.remote_config
                assert creds is not None and remote is not None
                creds.confirm_s = 8.0  # the new pair's probation (60 s by default)

                # a new pair on probation (the broker refuses it): a change through `ops` is refused
                csr: Any = (await city.send(GW, "tls_csr"))["result"]["csr"]
                r = await city.send(GW, "tls_install_cert", {"certificate": sign(csr, other.ca, other_key)})
                assert r["result"]["switched"] is True, r
                await wait_for(lambda: not connected(gw), 10)
                out = await ops.apply_config(
                    GW, document(45), version="v45", confirm_s=5, verdict_timeout_s=20
                )
                assert out["outcome"] == "rejected", out
                assert "rotation waits for the uplink" in out["answer"]["detail"], out
                assert path.read_text() == document(30) and remote.current["version"] == "local"
                # ... until the guard fell back: then it goes through, and stays in force
                await wait_for(lambda: creds.tls.previous is None, 20)
                await wait_for(lambda: connected(gw), 20)
                assert in_use(gw) == pki.client_cert
                out = await ops.apply_config(
                    GW, document(45), version="v45", confirm_s=5, verdict_timeout_s=20
                )
                assert out["outcome"] == "confirmed", out
                assert city_keepalive(gw) == 45 and gw.config.destinations[0].keepalive_s == 45

                # a change waiting for its health check (reverted: `backup` never connects): no new
                # pair meanwhile
                await wait_for(lambda: connected(gw), 20)
                await reachable(city)
                unreachable = document(60, backup=free_port())
                answer = await city.push_config(GW, unreachable, version="v60", confirm_s=8)
                assert answer["result"]["state"] == "pending", answer
                await wait_for(lambda: city_keepalive(gw) == 60, 10)
                await wait_for(lambda: connected(gw), 10)
                csr = (await city.send(GW, "tls_csr"))["result"]["csr"]
                r = await city.send(GW, "tls_install_cert", {"certificate": sign(csr, pki.ca, ca_key)})
                assert r["outcome"] == "rejected", r
                assert "waits for its health check" in r["detail"], r
                await wait_for(lambda: (remote.last or {}).get("outcome") == "reverted", 30)
                assert city_keepalive(gw) == 45 and path.read_text() == document(45)
                # ... after its verdict the same certificate goes through, and is confirmed
                await wait_for(lambda: connected(gw), 20)
                await reachable(city)
                r = await city.send(GW, "tls_install_cert", {"certificate": sign(csr, pki.ca, ca_key)})
                assert r["result"]["switched"] is True, r
                await wait_for(lambda: creds.tls.previous is None and connected(gw), 20)
                rotated = in_use(gw)
                assert rotated is not None and rotated.parent == short_dir / "var" / "credentials"
                assert city_keepalive(gw) == 45
    finally:
        broker.close()
