"""Remote `device_read` of RS-485 meters (docs/fleet.md, "Diagnostics"): a real `citynerve run` with
a DL/T 645 and a CJ/T 188 bus to the simulated meters (hil/sim/serial, another process, pty pairs),
its uplink on Mosquitto, the platform's signed commands. One data item is read through the bus
owner; the answer has the decoded value and the request and reply as they went over the wire,
which this test decodes on its own (frame layout, checksum, the +0x33 data offset)."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
import textwrap
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from citynerve.hil.platform import CommandSigner, MosquittoBroker
from citynerve.hil.platform.fleet import FleetClient

KEY = bytes.fromhex("6b" * 32)
SIM = [sys.executable, "-m", "citynerve.hil.sim.serial"]
EM, WM = "000000000161", "00000000000301"


@pytest.fixture
def sim(tmp_path: Path) -> Iterator[dict[str, str]]:
    proc = subprocess.Popen(
        [*SIM, "--link-dir", str(tmp_path / "dev"), "--dlt645", EM, "--cjt188", WM],
        stdout=subprocess.PIPE,
        text=True,
    )
    assert proc.stdout is not None
    yield json.loads(proc.stdout.readline())
    proc.send_signal(signal.SIGTERM)
    try:
        proc.wait(timeout=10)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


def _config(tmp: Path, ports: dict[str, str], broker: MosquittoBroker) -> Path:
    key = tmp / "noc.key"
    key.write_text(KEY.hex())
    key.chmod(0o600)
    (tmp / "var").mkdir(exist_ok=True)
    path = tmp / "gw.toml"
    path.write_text(
        textwrap.dedent(
            f"""
            [gateway]
            id = "gw-meters"
            org = {{ city = "320500", district = "320508", street = "320508001" }}
            [store]
            path = "var/gw.db"
            [control]
            socket = "var/gw.sock"
            [log]
            format = "json"

            [[buses]]
            id = "rs485-power"
            protocol = "dlt645"
            port = "{ports["dlt645"]}"
            timeout_s = 1.0

            [[buses]]
            id = "rs485-water"
            protocol = "cjt188"
            port = "{ports["cjt188"]}"
            timeout_s = 1.0

            [[devices]]
            id = "em-incomer"
            bus = "rs485-power"
            profile = "dlt645-three-phase"
            address = "{EM}"
            poll_interval_s = 5
            location = {{ address_code = "320508001007" }}

            [[devices]]
            id = "wm-0301"
            bus = "rs485-water"
            profile = "cjt188-water-cold"
            address = "{WM}"
            poll_interval_s = 5
            location = {{ address_code = "320508001007" }}

            [upstream]
            brokers = ["mqtt://{broker.host}:{broker.port}"]
            [upstream.commands]
            enabled = true
            hmac_key_file = "{key}"
            """
        )
    )
    return path


def _frame(hexed: str, start: int = 0x68) -> bytes:
    """The frame from its first 0x68 to its end byte 0x16, with its checksum checked."""
    raw = bytes.fromhex(hexed)
    body = raw[raw.index(start) :]
    assert body[-1] == 0x16, hexed
    assert sum(body[:-2]) % 256 == body[-2], f"checksum of {hexed}"
    return body


def _tail(log: Path) -> str:
    return log.read_text(errors="replace")[-3000:]


def _bcd(data: bytes) -> int:
    return int(data[::-1].hex())


def test_remote_device_read_of_dlt645_and_cjt188_meters_with_raw_frames(
    tmp_path: Path, sim: dict[str, str]
) -> None:
    (tmp_path / "broker").mkdir()
    with MosquittoBroker(workdir=tmp_path / "broker") as broker:
        config = _config(tmp_path, sim, broker)
        log = tmp_path / "gateway.log"
        with log.open("ab") as out:
            proc = subprocess.Popen(
                [sys.executable, "-m", "citynerve.gateway.cli", "run", "-c", str(config)],
                stdout=out,
                stderr=subprocess.STDOUT,
                env={**os.environ, "PYTHONUNBUFFERED": "1"},
                cwd=tmp_path,
            )
        try:
            asyncio.run(_scenario(broker, proc, log))
        finally:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(30)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()


async def _scenario(broker: MosquittoBroker, proc: subprocess.Popen[bytes], log: Path) -> None:
    async with FleetClient(broker.host, broker.port, CommandSigner(hmac_key=KEY), timeout_s=4) as fc:

        async def ask(args: dict[str, Any]) -> dict[str, Any]:
            return await fc.send("gw-meters", "device_read", args)

        first: dict[str, Any] = {}

        async def answered() -> bool:
            try:
                first.update(await ask({"device_id": "em-incomer", "point": "energy_import"}))
            except TimeoutError:
                return False
            return first.get("outcome") == "ok"

        deadline = asyncio.get_running_loop().time() + 90
        while not await answered():
            assert proc.poll() is None, _tail(log)
            assert asyncio.get_running_loop().time() < deadline, (first, _tail(log))
            await asyncio.sleep(0.5)

        # DL/T 645: a configured point (its DI 00010000), decoded and raw
        r = first["result"]
        assert (r["device_id"], r["bus"], r["di"], r["unit"]) == (
            "em-incomer",
            "rs485-power",
            "00010000",
            "kWh",
        ), r
        assert r["frames"]["protocol"] == "dlt645"
        tx, rx = _frame(r["frames"]["tx"]), _frame(r["frames"]["rx"])
        assert r["frames"]["tx"].startswith("fe fe fe fe 68")  # the preamble went out too
        assert tx[1:7][::-1].hex() == EM and tx[8] == 0x11  # read data, to our meter
        assert rx[1:7][::-1].hex() == EM and rx[8] == 0x91  # its normal reply
        data = bytes((b - 0x33) & 0xFF for b in rx[10 : 10 + rx[9]])
        assert data[:4] == bytes.fromhex("00010000")[::-1]
        assert r["value"] == pytest.approx(_bcd(data[4:8]) / 100) and r["value"] > 1000

        # a DI given as such (phase A voltage), and a bad request
        v = await ask({"device_id": "em-incomer", "di": "02010100"})
        assert v["outcome"] == "ok" and v["result"]["unit"] == "V", v
        assert 150 < v["result"]["value"] < 300, v
        bad = await ask({"device_id": "em-incomer"})
        assert (bad["outcome"], bad["reason"]) == ("rejected", "bad_value"), bad

        # CJ/T 188: the meter's 901F data, decoded and raw
        w = await ask({"device_id": "wm-0301"})
        assert w["outcome"] == "ok", w
        res = w["result"]
        assert res["di"] == "901F" and res["flow_total"] > 0, res
        assert res["frames"]["protocol"] == "cjt188"
        tx, rx = _frame(res["frames"]["tx"]), _frame(res["frames"]["rx"])
        assert tx[2:9][::-1].hex() == WM and tx[9] == 0x01  # read data
        assert rx[2:9][::-1].hex() == WM and rx[9] == 0x81  # its reply
        assert rx[11:13] in (b"\x90\x1f", b"\x1f\x90")  # DI 901F, either byte order
        # the total as the gateway decoded it is the BCD in the reply (4 bytes, 2 decimals)
        assert res["flow_total"] == pytest.approx(_bcd(rx[14:18]) / 100), (res, rx.hex(" "))

        # a device the config does not have: unknown_device
        none = await ask({"device_id": "em-9", "point": "energy_import"})
        assert none["reason"] == "unknown_device", none
