"""Commission the demo building from scratch, as an installer would with `citynerve init --discover
--yes` and the config in /etc-like place: every device that can be identified gets the right profile
(Modbus power meter, water meters and smoke detectors behind one converter, DL/T 645 and CJ/T 188
meters sharing their risers), and what cannot be identified is left out, saying why."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import pytest
from click.testing import CliRunner

from citynerve.gateway import shipped
from citynerve.gateway.cli import main
from citynerve.gateway.commissioning import available_profiles, discover, identify_found, propose
from citynerve.gateway.config import load_config
from citynerve.hil.demo_building import COVERS, DemoBuilding
from citynerve.hil.sim.modbus import DEFAULT_BUILDING, ModbusBuilding
from citynerve.hil.sim.serial._building import ELECTRICITY, WATER

pytestmark = pytest.mark.slow
IDENTITY_ARGS = (
    "--gateway-id",
    "gw-310106-0007",
    "--city",
    "310100",
    "--district",
    "310106",
    "--street",
    "310106013",
)
ELECTRICITY_ADDRESSES = [a for a, _, _ in ELECTRICITY]
WATER_ADDRESSES = [a for a, _, _ in WATER]


def short_config_dir(short_dir: Path) -> Path:
    """Where the installer guide puts the config (etc/citynerve), under a test folder."""
    folder = short_dir / "etc" / "citynerve"
    folder.mkdir(parents=True)
    return folder


@pytest.mark.long
async def test_the_demo_building_is_commissioned_right(short_dir: Path) -> None:
    path = short_config_dir(short_dir) / "gateway.toml"  # no profiles/ beside it: the shipped ones
    async with DemoBuilding(speed=1.0) as b:
        host, port = b.modbus.endpoint
        args = [
            "init", "-c", str(path), *IDENTITY_ARGS,
            "--bus", f"tcp-1:modbus_tcp:{host}:{port}",
            "--bus", f"power:dlt645:{b.serial.power_bus.port}",
            "--bus", f"water:cjt188:{b.serial.water_bus.port}",
            "--bus", f"panel:firepanel:{b.serial.panel.port}",
            "--discover", "--to", "16", "--search-timeout", "0.3", "--yes", "--json",
        ]  # fmt: skip
        r = await asyncio.to_thread(CliRunner().invoke, main, args, catch_exceptions=False)
        assert r.exit_code == 0, r.output
        out = json.loads(r.output)

        cfg = load_config(path)
        got = {(d.bus, str(d.address)): d.profile for d in cfg.devices}
        want = {("tcp-1", str(unit)): profile for profile, unit in DEFAULT_BUILDING}
        want |= {("power", a): "dlt645-single-phase" for a in ELECTRICITY_ADDRESSES}
        want |= {("water", a): "cjt188-water-cold" for a in WATER_ADDRESSES}
        assert got == want
        water = [d for d in cfg.devices if d.bus == "water"]
        assert all(getattr(d, "meter_type", None) == 0x10 for d in water)
        # Each assignment carries its evidence; the fire panel's printer port cannot be searched.
        by_addr = {(p["found"]["bus"], str(p["found"]["address"])): p for p in out["discovered"]}
        em = by_addr[("tcp-1", "1")]
        assert em["profile"] == "modbus-power-meter-3ph" and em["evidence"][0]["score"] >= 6
        assert any(p["bus"] == "panel" and "cannot be discovered" in p["message"] for p in out["problems"])

        # The manhole covers outside send encrypted adverts: no profile can be told from them
        # without the key, so they are listed with their candidates and not assigned.
        ble = path.parent / "ble.toml"
        ble.write_text(
            path.read_text().split("[[buses]]")[0]
            + '[[buses]]\nid = "ble0"\nprotocol = "bthome"\nbackend = "bumble"\n'
            + f'transport = "{b.radio.transport}"\n'
        )
        ble_cfg = load_config(ble)
        found = (await discover(ble_cfg, ble_duration_s=8.0)).found
        covers = [f for f in found if f.address in {mac for mac, _, _ in COVERS}]
        assert {f.address for f in covers} == {mac for mac, _, _ in COVERS}
        profiles = available_profiles(ble)
        proposals = propose(
            covers,
            profiles,
            verdicts=await identify_found(ble_cfg, covers, profiles),
            address_code="310106013",
        )
        assert all(p.profile is None and any("key" in n for n in p.notes) for p in proposals)
        assert all(len(p.candidates) >= 4 for p in proposals)


async def test_an_ambiguous_device_is_not_assigned(short_dir: Path) -> None:
    # Two installed profiles that the same device fits equally well (a look-alike of the smoke
    # detector's map): the installer is asked, and --yes leaves the device out and says so.
    folder = short_config_dir(short_dir)
    (folder / "profiles").mkdir()
    shipped_dir = shipped.profiles()
    text = (shipped_dir / "modbus-smoke-detector.toml").read_text()
    (folder / "profiles" / "smoke-lookalike.toml").write_text(
        text.replace('id = "modbus-smoke-detector"', 'id = "smoke-lookalike"')
    )
    path = folder / "gateway.toml"
    async with ModbusBuilding() as building:
        host, port = building.endpoint
        args = [
            "init", "-c", str(path), *IDENTITY_ARGS, "--bus", f"tcp-1:modbus_tcp:{host}:{port}",
            "--discover", "--from", "1", "--to", "12", "--yes", "--json",
        ]  # fmt: skip
        r = await asyncio.to_thread(CliRunner().invoke, main, args, catch_exceptions=False)
    assert r.exit_code == 0, r.output
    out = json.loads(r.output)
    cfg = load_config(path)
    assert {d.address: d.profile for d in cfg.devices} == {
        1: "modbus-power-meter-3ph", 2: "modbus-water-meter", 3: "modbus-water-meter",
    }  # fmt: skip
    left = {item["address"]: item for item in out["left_out"]}
    assert set(left) == {11, 12}
    assert left[11]["reason"].startswith("ambiguous")
    assert set(left[11]["candidates"][:2]) == {"modbus-smoke-detector", "smoke-lookalike"}
    # Without --json the installer reads it in one line per device.
    r2 = CliRunner().invoke(main, ["config", "check", str(path)])
    assert r2.exit_code == 0


async def test_an_ambiguous_device_is_chosen_at_the_prompt(short_dir: Path) -> None:
    folder = short_config_dir(short_dir)
    (folder / "profiles").mkdir()
    text = (shipped.profiles() / "modbus-smoke-detector.toml").read_text()
    (folder / "profiles" / "smoke-lookalike.toml").write_text(
        text.replace('id = "modbus-smoke-detector"', 'id = "smoke-lookalike"')
    )
    path = folder / "gateway.toml"
    async with ModbusBuilding() as building:
        host, port = building.endpoint
        args = [
            "init", "-c", str(path), *IDENTITY_ARGS, "--name", "riser", "--interactive",
            "--bus", f"tcp-1:modbus_tcp:{host}:{port}", "--discover", "--from", "11", "--to", "11",
        ]  # fmt: skip
        answers = "\n".join(["", "2"]) + "\n"  # no broker; the second candidate
        r = await asyncio.to_thread(CliRunner().invoke, main, args, input=answers, catch_exceptions=False)
    assert r.exit_code == 0, r.output
    assert (
        "ambiguous" in r.output
        and "1. modbus-smoke-detector" in r.output
        and "2. smoke-lookalike" in r.output
    )
    assert [(d.address, d.profile) for d in load_config(path).devices] == [(11, "smoke-lookalike")]


async def test_device_identification_fc43_is_evidence(short_dir: Path) -> None:
    # A device that answers Modbus FC 43 / MEI 14 (the simulator does, as pymodbus serves it) is
    # recognised by a profile naming its vendor and product code; a profile naming another vendor
    # loses points for it.
    folder = short_config_dir(short_dir)
    (folder / "profiles").mkdir()
    base = (shipped.profiles() / "modbus-water-meter.toml").read_text()
    head = base[: base.index("[identify]")]
    tail = base[base.index("\n[points.") :]
    for pid, vendor in (("sim-water", "CityNerve"), ("other-water", "Eastron")):
        text = head.replace('id = "modbus-water-meter"', f'id = "{pid}"')
        text += f'[identify]\ndevice_id = {{ vendor = "{vendor}", product_code = "SIM-MODBUS" }}\n' + tail
        (folder / "profiles" / f"{pid}.toml").write_text(text)
    path = folder / "gateway.toml"
    async with ModbusBuilding() as building:
        host, port = building.endpoint
        path.write_text(
            '[gateway]\nid = "gw-1"\norg = { city = "310100", district = "310106", street = "310106013" }\n'
            f'[[buses]]\nid = "tcp-1"\nprotocol = "modbus_tcp"\nhost = "{host}"\nport = {port}\n'
            "timeout_s = 0.3\n"
        )
        cfg = load_config(path)
        found = (await discover(cfg, modbus_first=2, modbus_last=2)).found
        profiles = [p for p in available_profiles(path) if p.id in ("sim-water", "other-water")]
        verdicts = await identify_found(cfg, found, profiles)
    (proposal,) = propose(found, profiles, verdicts=verdicts, address_code="310106013")
    assert proposal.profile == "sim-water", proposal.to_dict()
    sim = proposal.verdict("sim-water")
    other = proposal.verdict("other-water")
    assert sim is not None and other is not None
    fc43 = {e.check: (e.passed, e.found) for e in sim.evidence if e.check.startswith("FC 43")}
    assert fc43["FC 43 vendor ~ 'CityNerve'"] == (True, "CityNerve")
    assert sim.score - other.score >= 13  # +10 for the vendor against -3
