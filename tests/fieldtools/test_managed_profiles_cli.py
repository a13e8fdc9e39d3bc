"""Profiles the platform sent (`<config>.profiles/`, searched first by the loader) count for the
installer's commands too: `devices add|remove` check a candidate with them, `citynerve report`
identifies devices with them. Real CLI, real files, a simulated building on a real Modbus server."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

from click.testing import CliRunner, Result

from citynerve.gateway.cli import main
from citynerve.gateway.commissioning.profiles import profile_dirs
from citynerve.gateway.config import load_config
from citynerve.gateway.config.paths import managed_profile_dir
from citynerve.hil.sim.modbus import ModbusBuilding

from .conftest import ADDRESS_CODE, DEVICES, PROFILES, gateway_toml


def cli(*args: str) -> Result:
    return CliRunner().invoke(main, list(args), catch_exceptions=False)


def managed_config(path: Path, host: str, port: int) -> Path:
    """wm-3 uses `site-water-meter`, a profile only the platform's folder holds."""
    devices = tuple(d if d[0] != "wm-3" else ("wm-3", "site-water-meter", *d[2:]) for d in DEVICES)
    path.write_text(gateway_toml(host, port, devices=devices, rules=False), encoding="utf-8")
    managed = managed_profile_dir(path)
    managed.mkdir()
    text = (PROFILES / "modbus-water-meter.toml").read_text(encoding="utf-8")
    assert 'id = "modbus-water-meter"' in text
    (managed / "site-water-meter.toml").write_text(
        text.replace('id = "modbus-water-meter"', 'id = "site-water-meter"'), encoding="utf-8"
    )
    load_config(path)  # what `config check` accepts
    return path


def test_devices_add_and_remove_check_with_the_managed_profiles(short_dir: Path) -> None:
    path = managed_config(short_dir / "gateway.toml", "127.0.0.1", 1502)
    r = cli(
        *("devices", "add", "-c", str(path), "--id", "wm-4", "--bus", "tcp-1"),
        *("--profile", "modbus-water-meter", "--address", "4", "--address-code", ADDRESS_CODE),
        "--no-reload",
    )
    assert r.exit_code == 0, r.output
    r = cli("devices", "remove", "-c", str(path), "wm-2", "--no-reload")
    assert r.exit_code == 0, r.output
    r = cli(
        *("devices", "add", "-c", str(path), "--id", "wm-5", "--bus", "tcp-1"),
        *("--profile", "site-water-meter", "--address", "5", "--address-code", ADDRESS_CODE),
        "--no-reload",
    )
    assert r.exit_code == 0, r.output
    cfg = load_config(path)
    assert {d.id: d.profile for d in cfg.devices}["wm-5"] == "site-water-meter"
    assert not list(path.parent.glob(".gateway.check.*"))  # the candidate file is gone


def test_report_and_the_loader_search_the_same_folders(short_dir: Path) -> None:
    path = managed_config(short_dir / "gateway.toml", "127.0.0.1", 1502)
    cfg = load_config(path)
    assert profile_dirs(path, [str(PROFILES)])[0] == managed_profile_dir(path)
    assert cfg.profiles["site-water-meter"].id == "site-water-meter"


async def test_report_identifies_a_device_with_a_managed_profile(
    short_dir: Path, building: ModbusBuilding
) -> None:
    host, port = building.endpoint
    path = managed_config(short_dir / "gateway.toml", host, port)
    r = await asyncio.to_thread(cli, "report", "-c", str(path), "--json")
    devices = {d["id"]: d for d in json.loads(r.output)["devices"]}
    assert devices["wm-3"]["profile"] == "site-water-meter"
    assert not any("profile not found" in item for item in devices["wm-3"]["open"]), devices["wm-3"]
    assert devices["wm-3"]["open"] == devices["wm-2"]["open"], devices  # as its shipped twin
