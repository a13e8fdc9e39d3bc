"""The Node.js conformance kit (hil/conformance/node: npm `mqtt`, `ajv`, `canonicalize`, written from
docs/upstream-contract.md) against a real `citynerve run`, a real pymodbus server and Mosquitto:
it checks the signing test vectors, receives telemetry and events, validates them with the JSON
Schemas, finds no open gap, acks signed end to end, and gets one outcome twice for a command it sent
twice (idempotent by id)."""

from __future__ import annotations

import asyncio
import json
import shutil
import struct
import subprocess
import textwrap
from pathlib import Path

import pytest

from citynerve.gateway.uplink.schemas import schema_path
from citynerve.hil.platform import MosquittoBroker
from tests.integration.conftest import GatewayProcess
from tests.modbus.modbus_support import start_bank_server
from tests.uplink.conftest import PLATFORM_KEY, platform_key_file

KIT = Path(__file__).resolve().parents[2] / "hil" / "conformance" / "node"
GW = "gw-node"

pytestmark = pytest.mark.slow


def _config(tmp: Path, modbus_port: int, broker: MosquittoBroker) -> Path:
    profiles = tmp / "profiles"
    profiles.mkdir()
    (profiles / "test-meter.toml").write_text(
        textwrap.dedent(
            """
            id = "test-meter"
            family = "modbus"
            source = "tests/integration/test_conformance_node.py"
            poll_interval_s = 0.1
            [points.voltage]
            table = "holding"
            address = 0
            type = "float32"
            unit = "V"
            max_interval_s = 0.1
            """
        )
    )
    path = tmp / "gw.toml"
    path.write_text(
        textwrap.dedent(
            f"""
            [gateway]
            id = "{GW}"
            org = {{ city = "310100", district = "310106", street = "310106013" }}
            [store]
            path = "var/gw.db"
            commit_interval_ms = 20
            [control]
            socket = "var/gw.sock"
            [[buses]]
            id = "tcp-1"
            protocol = "modbus_tcp"
            host = "127.0.0.1"
            port = {modbus_port}
            timeout_s = 0.3
            min_poll_interval_s = 0.1
            offline_after = 1
            [[devices]]
            id = "pm-1"
            bus = "tcp-1"
            profile = "test-meter"
            address = 1
            location = {{ address_code = "310106013007" }}
            [[devices]]
            id = "pm-9"
            bus = "tcp-1"
            profile = "test-meter"
            address = 9
            location = {{ address_code = "310106013007" }}
            [upstream]
            brokers = ["mqtt://{broker.host}:{broker.port}"]
            e2e_ack = true
            commands = {{ enabled = true, hmac_key_file = "{platform_key_file()}" }}
            """
        )
    )
    return path


def _install_kit(dest: Path) -> None:
    npm = shutil.which("npm")
    assert shutil.which("node") and npm, (
        "node and npm are needed (Debian: nodejs, npm; .ci/run installs them)"
    )
    for name in ("package.json", "package-lock.json", "platform.js"):
        shutil.copy(KIT / name, dest / name)
    subprocess.run(
        [npm, "ci", "--no-audit", "--no-fund", "--loglevel=error"], cwd=dest, check=True, timeout=600
    )


async def test_node_platform_from_the_docs_against_a_real_gateway(tmp_path: Path) -> None:
    kit = tmp_path / "kit"
    kit.mkdir()
    await asyncio.to_thread(_install_kit, kit)
    srv = await start_bank_server((1,))  # unit 9 never answers: a device_offline event
    raw = struct.pack(">f", 230.1)
    srv.banks[1].put("holding", 0, [int.from_bytes(raw[:2], "big"), int.from_bytes(raw[2:], "big")])
    try:
        with MosquittoBroker() as broker:
            gw = GatewayProcess(_config(tmp_path, srv.port, broker))
            gw.start()
            try:
                node = await asyncio.create_subprocess_exec(
                    "node",
                    str(kit / "platform.js"),
                    *("--port", str(broker.port), "--gateway", GW, "--key-hex", PLATFORM_KEY.hex()),
                    *("--schemas", str(schema_path("status").parent)),
                    *("--expect-readings", "20", "--expect-events", "1", "--timeout-s", "90"),
                    stdout=asyncio.subprocess.PIPE,
                    stderr=asyncio.subprocess.PIPE,
                )
                out, err = await node.communicate()
            finally:
                gw.stop()
    finally:
        await srv.server.shutdown()
    assert out, err.decode()[-2000:]
    summary = json.loads(out.decode().strip().splitlines()[-1])
    print(summary | {"results": summary["results"][:2]})
    assert node.returncode == 0, summary
    assert summary["vectors"] == [] and summary["invalid"] == []
    assert summary["readings"] >= 20 and summary["events"] >= 1
    assert summary["open_gaps"] == {} and summary["acks"] > 0
    first, second = summary["results"][:2]
    assert first == second and first["outcome"] == "ok" and first["result"]["value"] == 230.1
