"""A staged update rollout that succeeds, with real signed releases (built here) and real services:
three gateways installed from the 1.0.0 bundle, each run from its `current` link like the unit
(ProcessService), on one Mosquitto; `update_action` on the rollout engine (what
`fleet rollout-update` runs) pushes 1.0.1 in waves `1,rest`: every gateway installs it beside the
running release, restarts into it, confirms it healthy, and the report says `confirmed` with the
release it came from and went to. Long: it builds two bundles and installs three releases."""

from __future__ import annotations

import asyncio
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from citynerve.gateway.release.health import gateway_status
from citynerve.gateway.release.service import ProcessService
from citynerve.hil.platform import CommandSigner, MosquittoBroker
from citynerve.hil.platform.fleet import FleetClient
from citynerve.hil.platform.fleet_update import Bundle
from citynerve.hil.platform.rollout import parse_waves, rollout, update_action
from tests.integration.conftest import gateway_config

from .conftest import ReleaseKey, install_from_bundle
from .test_update import RELEASES_KEY, remote_update_config, wait_for

pytestmark = [pytest.mark.slow, pytest.mark.long]
GATEWAYS = ("gw-u0", "gw-u1", "gw-u2")


@pytest.fixture
def modbus_peer_port() -> Iterator[int]:
    """The Modbus TCP peer process of the integration tests (every unit a counter)."""
    peer = Path(__file__).parents[1] / "integration" / "modbus_peer.py"
    proc = subprocess.Popen([sys.executable, str(peer), "--units", "2"], stdout=subprocess.PIPE, text=True)
    assert proc.stdout is not None
    yield int(proc.stdout.readline())
    proc.kill()
    proc.wait()


@pytest.fixture
def broker(tmp_path: Path) -> Iterator[MosquittoBroker]:
    b = MosquittoBroker(workdir=tmp_path / "broker")
    (tmp_path / "broker").mkdir()
    b.start()
    yield b
    b.close()


def test_update_rollout_confirms_every_gateway_wave_by_wave(
    base_bundles: dict[str, Path], tmp_path: Path, release_key: ReleaseKey, modbus_peer_port: int,
    broker: MosquittoBroker,
) -> None:  # fmt: skip
    services: dict[str, ProcessService] = {}
    sockets: dict[str, Path] = {}
    for gw in GATEWAYS:
        root, site = tmp_path / gw / "opt", tmp_path / gw / "site"
        assert install_from_bundle(base_bundles["1.0.0"], root, release_key.public).returncode == 0
        config = gateway_config(site, modbus_peer_port, buses=1, units=1)
        text = config.read_text().replace('id = "gw-test"', f'id = "{gw}"')
        text += f'\n[upstream]\nbrokers = ["mqtt://{broker.host}:{broker.port}"]\n'
        config.write_text(text + remote_update_config(site, root))
        services[gw], sockets[gw] = ProcessService(root, config), site / "var" / "gw.sock"

    def running(gw: str, version: str) -> bool:
        st = gateway_status(sockets[gw])
        return bool(st and st["version"] == version and (st.get("uplink") or {}).get("connected"))

    try:
        for gw in GATEWAYS:
            services[gw].start()
        for gw in GATEWAYS:
            wait_for(f"{gw} on 1.0.0", lambda gw=gw: running(gw, "1.0.0"), timeout_s=120)

        async def push() -> None:
            signer = CommandSigner(hmac_key=RELEASES_KEY)
            async with FleetClient(
                broker.host, broker.port, signer, key_id="releases", timeout_s=10
            ) as fleet:
                bundle = Bundle.from_file(base_bundles["1.0.1"], chunk_bytes=64 * 1024)
                act = update_action(fleet, bundle, update_id="roll-101", timeout_s=600)
                report = await rollout(
                    list(GATEWAYS),
                    act,
                    waves=parse_waves("1,rest"),
                    max_failure_rate=0.0,
                    gateway_timeout_s=700,
                )
            d = report.to_dict()
            assert not report.stopped and report.outcomes == {"confirmed": 3}, d
            assert [len(w.gateways) for w in report.waves] == [1, 2]
            for g in d["gateways"]:
                assert g["ok"] and g["update_id"] == "roll-101", g
                assert (g["release"]["from"], g["release"]["to"], g["release"]["current"]) == (
                    "1.0.0",
                    "1.0.1",
                    "1.0.1",
                ), g

        asyncio.run(push())
        for gw in GATEWAYS:
            wait_for(f"{gw} on 1.0.1", lambda gw=gw: running(gw, "1.0.1"), timeout_s=120)
    finally:
        for service in services.values():
            service.stop()
