"""Remote diagnostics on a real `citynerve run` with a pymodbus peer and a real Mosquitto: a device
read with the raw request and reply frames (only configured devices, bounded), and the redacted
support bundle uploaded in chunks with its SHA-256, through the reference platform's fleet tool."""

from __future__ import annotations

import asyncio
import io
import subprocess
import sys
import tarfile
from pathlib import Path

from citynerve.hil.platform import CommandSigner, MosquittoBroker
from citynerve.hil.platform.fleet import FleetClient
from tests.integration.conftest import GatewayProcess, gateway_config
from tests.integration.test_run_fleet import socket_up, status, until

GW = "gw-test"
READ_KEY = bytes.fromhex("66" * 32)


def write_config(tmp: Path, port: int, broker: MosquittoBroker) -> Path:
    config = gateway_config(tmp, port, buses=1, units=2)
    (tmp / "read.key").write_text(READ_KEY.hex())
    (tmp / "read.key").chmod(0o600)
    text = config.read_text()
    text += f'\n[upstream]\nbrokers = ["mqtt://{broker.host}:{broker.port}"]\n'
    text += "[upstream.commands]\nenabled = true\n"
    text += f'[[upstream.commands.keys]]\nid = "support"\nhmac_key_file = "{tmp / "read.key"}"\n'
    text += 'classes = ["read"]\n'
    config.write_text(text)
    return config


def test_device_read_with_frames_and_support_bundle_upload(
    tmp_path: Path, modbus_peer: int, gateway_process: type[GatewayProcess]
) -> None:
    with MosquittoBroker() as broker:
        config = write_config(tmp_path, modbus_peer, broker)

        async def scenario() -> None:
            async with FleetClient(broker.host, broker.port, CommandSigner(hmac_key=READ_KEY)) as support:
                gw = gateway_process(config)
                gw.start()
                await until(lambda: socket_up(tmp_path))
                await until(lambda: (status(config).get("uplink") or {}).get("state") == "connected")

                r = await support.send(
                    GW, "device_read", {"device_id": "d0-2", "address": 0, "count": 2, "type": "uint32"}
                )
                assert r["outcome"] == "ok", r
                res = r["result"]
                assert (res["device_id"], res["unit"], len(res["registers"])) == ("d0-2", 2, 2)
                frames = res["frames"]
                assert frames["protocol"] == "modbus-tcp"
                # MBAP header, then unit 2, read holding registers (3), address 0, count 2
                assert frames["tx"].endswith("00 06 02 03 00 00 00 02"), frames
                assert frames["rx"].endswith(
                    "02 03 04 "
                    + " ".join(f"{b:02x}" for r_ in res["registers"] for b in r_.to_bytes(2, "big"))
                ), frames
                r = await support.send(GW, "device_read", {"device_id": "nope", "address": 0})
                assert r["reason"] == "unknown_device"
                r = await support.send(GW, "device_read", {"device_id": "d0-1", "address": 0, "count": 126})
                assert r["reason"] == "bad_value"

                # the support bundle with the fleet tool: chunked, hash-checked, secrets redacted
                tool = [sys.executable, "-m", "citynerve.hil.platform", "fleet", "--broker", broker.url]
                key = ["--hmac-key-file", str(tmp_path / "read.key"), "--key-id", "support"]
                out = await asyncio.to_thread(
                    subprocess.run,
                    [*tool, "--gateway", GW, *key, "bundle", "--journal-lines", "50", "--out", "b.tar.gz"],
                    cwd=tmp_path,
                    capture_output=True,
                    text=True,
                    timeout=60,
                )
                assert out.returncode == 0, out
                data = (tmp_path / "b.tar.gz").read_bytes()
                with tarfile.open(fileobj=io.BytesIO(data), mode="r:gz") as tar:
                    names = tar.getnames()
                    assert {"config/gateway.toml", "status.json", "manifest.json"} <= set(names), names
                    everything = b"".join(
                        f.read() for m in tar.getmembers() if (f := tar.extractfile(m)) is not None
                    )
                assert READ_KEY.hex().encode() not in everything  # key files are named, never read
                assert b'"gateway_id": "gw-test"' in everything  # the running gateway's status

        asyncio.run(scenario())
