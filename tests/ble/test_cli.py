"""`citynerve diag ble scan` as a technician runs it: a real subprocess, a bumble host over TCP to a
virtual dongle on the same virtual radio as the simulated nodes."""

from __future__ import annotations

import asyncio
import json
import sys
from pathlib import Path

from ble_support import KEY, MAC
from click.testing import CliRunner

from citynerve.gateway.cli import main
from citynerve.hil.sim.ble import ManholeCoverNode, VirtualAdvertiser, VirtualDongle, VirtualRadio

CITYNERVE = str(Path(sys.executable).parent / "citynerve")


def _config(tmp_path: Path, transport: str, key: bytes = KEY) -> Path:
    cfg = tmp_path / "gw.toml"
    cfg.write_text(
        f"""
[gateway]
id = "gw-test"
org = {{ city = "320500", district = "320508", street = "320508001" }}
[store]
path = "{tmp_path / "gw.db"}"
[control]
socket = "{tmp_path / "gw.sock"}"
[[buses]]
id = "ble0"
protocol = "bthome"
backend = "bumble"
transport = "{transport}"
[[devices]]
id = "mh-1"
bus = "ble0"
profile = "bthome-manhole-cover"
address = "{MAC}"
key = "{key.hex()}"
location = {{ address_code = "320508001" }}
"""
    )
    return cfg


async def _scan_while_advertising(radio: VirtualRadio, args: list[str]) -> tuple[int, str, str]:
    node = ManholeCoverNode(radio, MAC, key=KEY)
    stranger = VirtualAdvertiser(radio, "11:22:33:44:55:66")
    proc = await asyncio.create_subprocess_exec(
        CITYNERVE,
        "diag",
        "ble",
        "scan",
        *args,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )

    async def advertise() -> None:
        await node.advertiser.advertise(node.payload(node.objects(tilt_deg=4.5, water_mm=80)), interval_ms=50)
        await stranger.advertise(bytes.fromhex("4002CA0903BF13"), interval_ms=50)

    await advertise()
    out, err = await asyncio.wait_for(proc.communicate(), 60)
    await node.close()
    await stranger.close()
    assert proc.returncode is not None
    return proc.returncode, out.decode(), err.decode()


async def test_scan_json_through_config(tmp_path: Path) -> None:
    with VirtualRadio("cli-json") as radio:
        async with VirtualDongle(radio) as dongle:
            cfg = _config(tmp_path, dongle.client_transport)
            rc, out, err = await _scan_while_advertising(
                radio, ["-c", str(cfg), "--duration", "1.5", "--json"]
            )
    assert rc == 0, err
    result = json.loads(out)
    assert result["route"] == "direct"  # no gateway runs: the CLI opened the dongle itself
    by_mac = {d["address"]: d for d in result["devices"]}
    mh = by_mac[MAC]
    assert mh["configured"] and mh["device_id"] == "mh-1" and mh["encrypted"]
    assert mh["values"]["rotation"] == 4.5 and mh["values"]["distance_mm"] == 80
    assert mh["rssi"] == -50
    other = by_mac["11:22:33:44:55:66"]
    assert not other["configured"] and other["values"] == {"temperature": 25.06, "humidity": 50.55}


async def test_scan_wrong_key_fails_and_says_so(tmp_path: Path) -> None:
    with VirtualRadio("cli-key") as radio:
        async with VirtualDongle(radio) as dongle:
            cfg = _config(tmp_path, dongle.client_transport, key=bytes(16))
            rc, out, _err = await _scan_while_advertising(radio, ["-c", str(cfg), "--duration", "1.5"])
    assert rc == 1
    assert "wrong_key" in out and "mh-1" in out  # the rich table names the node and the reason


def test_bad_input_is_one_line(tmp_path: Path) -> None:
    runner = CliRunner()
    res = runner.invoke(main, ["diag", "ble", "scan", "-c", str(tmp_path / "missing.toml")])
    assert res.exit_code == 2
    cfg = _config(tmp_path, "virtual:x")
    res = runner.invoke(main, ["diag", "ble", "scan", "-c", str(cfg), "--bus", "rs485"])
    assert res.exit_code == 2 and "no BLE bus 'rs485'" in res.output and "Traceback" not in res.output
    res = runner.invoke(main, ["diag", "ble", "scan", "--duration", "0"])
    assert res.exit_code == 2
    res = runner.invoke(main, ["diag", "ble", "scan", "--transport", "serial:/dev/nope", "--duration", "0.2"])
    assert res.exit_code == 1 and "ble-adhoc" in res.output and "Traceback" not in res.output


def test_help() -> None:
    res = CliRunner().invoke(main, ["diag", "ble", "scan", "--help"])
    assert res.exit_code == 0 and "RSSI" in res.output and "--json" in res.output
