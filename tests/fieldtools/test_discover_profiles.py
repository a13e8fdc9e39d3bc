"""`init --discover` offers every profile in the folders: one malformed, half-edited or odd file
among them is left out with a line naming it and the key, and every device still gets a verdict.
Real CLI, real files, a simulated building on a real Modbus server (and a CJ/T 188 meter on a pty)."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
from pathlib import Path

from click.testing import CliRunner, Result

from citynerve.gateway.cli import main
from citynerve.gateway.commissioning import available_profiles, discover, identify_found, propose
from citynerve.gateway.commissioning.profiles import ProfileInfo
from citynerve.gateway.config import load_config
from citynerve.hil.sim.modbus import ModbusBuilding
from citynerve.hil.sim.serial import SerialMeterBus, SimCjt188Meter

from .conftest import gateway_toml

IDENTITY = ("--gateway-id", "gw-1", "--city", "310100", "--district", "310106", "--street", "310106013")

BAD_SCALE = """\
id = "acme-bad"
family = "modbus"
[identify]
plausible = { voltage = [100, 300] }
[points.voltage]
table = "holding"
address = 0
scale = "0,1"
"""


def cli(*args: str) -> Result:
    return CliRunner().invoke(main, list(args), catch_exceptions=False)


async def init_discover(path: Path, building: ModbusBuilding, local: Path, *extra: str) -> Result:
    host, port = building.endpoint
    args = (
        "init", "-c", str(path), *IDENTITY, "--bus", f"tcp-1:modbus_tcp:{host}:{port}",
        "--profile-dir", str(local), "--discover", "--from", "11", "--to", "12", "--yes", "--json",
        *extra,
    )  # fmt: skip
    return await asyncio.to_thread(cli, *args)


async def test_a_malformed_profile_is_left_out_and_every_device_gets_its_verdict(
    short_dir: Path, building: ModbusBuilding
) -> None:
    local = short_dir / "profiles-local"
    local.mkdir()
    (local / "acme-bad.toml").write_text(BAD_SCALE)
    path = short_dir / "gw.toml"
    r = await init_discover(path, building, local)
    assert r.exit_code == 0, r.output
    out = json.loads(r.output)
    assert out["added"] == ["tcp-1-u11", "tcp-1-u12"]  # identified with the shipped profile
    [problem] = out["profile_problems"]
    assert str(local / "acme-bad.toml") in problem and "points.voltage.scale" in problem
    assert {d.profile for d in load_config(path).devices} == {"modbus-smoke-detector"}


async def test_a_profile_whose_values_break_identification_fails_alone(
    short_dir: Path, building: ModbusBuilding
) -> None:
    """The backstop behind available_profiles: a profile that reaches identification with a value
    it cannot use gets a failing verdict; the other profiles are judged as before."""
    host, port = building.endpoint
    path = short_dir / "gw.toml"
    path.write_text(gateway_toml(host, port, devices=(), rules=False))
    cfg = load_config(path)
    result = await discover(cfg, modbus_first=11, modbus_last=11)
    profiles = available_profiles(path)
    broken = ProfileInfo(
        id="acme-bad",
        family="modbus",
        description="",
        vendor="",
        model="",
        path=short_dir / "acme-bad.toml",
        points=("voltage",),
        raw_points={"voltage": {"table": "holding", "address": 0, "scale": "0,1"}},
        identify=profiles[0].identify.model_validate({"plausible": {"voltage": [100, 300]}}),
    )
    verdicts = await identify_found(cfg, result.found, [broken, *profiles])
    [(_, judged)] = verdicts.items()
    by_id = {v.profile: v for v in judged}
    assert [e.check for e in by_id["acme-bad"].evidence] == ["the profile's values can be used"]
    assert by_id["acme-bad"].score < 0
    [proposal] = propose(result.found, [broken, *profiles], verdicts=verdicts, address_code="310106013")
    assert proposal.profile == "modbus-smoke-detector"


async def test_a_broken_local_copy_shadows_the_shipped_profile_and_is_reported(
    short_dir: Path, building: ModbusBuilding
) -> None:
    """The loader takes the first file of an id; discovery must too. A half-edited local copy of
    the shipped smoke detector profile is reported, not skipped for the shipped one (whose
    assignment the save then refused: nothing was added)."""
    local = short_dir / "profiles-local"
    local.mkdir()
    (local / "modbus-smoke-detector.toml").write_text(
        'id = "modbus-smoke-detector"\n[points.alarm]\ntable = "holding"\naddress = 0\n'
    )
    path = short_dir / "gw.toml"
    r = await init_discover(path, building, local)
    assert r.exit_code == 0, r.output
    out = json.loads(r.output)
    [problem] = out["profile_problems"]
    assert str(local / "modbus-smoke-detector.toml") in problem and "family" in problem
    assert out["added"] == []
    assert all("modbus-smoke-detector" not in item["candidates"] for item in out["left_out"])
    assert cli("config", "check", str(path)).exit_code == 0


async def test_cjt188_meter_type_as_text_is_read_as_its_driver_reads_it(short_dir: Path) -> None:
    local = short_dir / "profiles-local"
    local.mkdir()
    (local / "acme-heat.toml").write_text(
        'id = "acme-heat"\nfamily = "cjt188"\n[device]\nmeter_type = "0x20"\n'
        '[points.heat_total]\nfield = "heat_total"\nunit = "kWh"\n'
    )
    (local / "acme-typo.toml").write_text(
        'id = "acme-typo"\nfamily = "cjt188"\n[device]\nmeter_type = "heat"\n'
        '[points.heat_total]\nfield = "heat_total"\nunit = "kWh"\n'
    )
    async with SerialMeterBus(
        meters=[SimCjt188Meter("00000000000077", meter_type=0x20)], baudrate=2400, wire_time=False
    ) as bus:
        path = short_dir / "gw.toml"
        base = gateway_toml("127.0.0.1", 1, devices=(), rules=False)
        base = base[: base.index("[[buses]]")]
        path.write_text(
            base + f'[[buses]]\nid = "heat"\nprotocol = "cjt188"\nport = "{bus.port}"\ntimeout_s = 0.3\n'
        )
        cfg = load_config(path)
        result = await discover(cfg)
        problems: list[object] = []
        profiles = available_profiles(path, [str(local)], problems)  # type: ignore[arg-type]
        verdicts = await identify_found(cfg, result.found, profiles)
    assert [str(p) for p in problems] == [
        f"{local / 'acme-typo.toml'}: device.meter_type: expected: meter type is a hex byte such as 10 "
        "(cold water), 20 (heat), 30 (gas), got 'heat'; found 'heat'"
    ]
    [proposal] = propose(result.found, profiles, verdicts=verdicts, address_code="310106013")
    acme = next(v for v in proposal.verdicts if v.profile == "acme-heat")
    assert [(e.check, e.passed) for e in acme.evidence] == [("meter type 20", True)]


def test_a_fifo_in_a_profile_folder_does_not_hang_discovery(short_dir: Path) -> None:
    """A FIFO named *.toml: opening it for reading waited for a writer for ever."""
    local = short_dir / "profiles-local"
    local.mkdir()
    os.mkfifo(local / "stale.toml")
    path = short_dir / "gw.toml"
    cmd = [sys.executable, "-m", "citynerve.gateway.cli", "init", "-c", str(path), *IDENTITY]
    cmd += ["--bus", "tcp-1:modbus_tcp:127.0.0.1:1", "--profile-dir", str(local), "--discover"]
    cmd += ["--from", "1", "--to", "1", "--no-interactive", "--json"]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=120, check=False)
    assert "Traceback" not in proc.stderr, proc.stderr
    out = json.loads(proc.stdout)
    assert out["profile_problems"] == [] and out["discovered"] == []
    # The config names the folder: `config check` reads around the FIFO too.
    check = subprocess.run(
        [sys.executable, "-m", "citynerve.gateway.cli", "config", "check", str(path)],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert check.returncode == 0, check.stdout + check.stderr
