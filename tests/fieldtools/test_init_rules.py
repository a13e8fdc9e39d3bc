"""`citynerve init` turns the alarms on: the shipped packs that fit the device classes it found are
written into `[rules]` (on where they need nothing per household, commented out with what to set
where they do), so a smoke detector commissioned by the installer's guide raises its alarm."""

from __future__ import annotations

import json
import tomllib
from pathlib import Path

from citynerve.gateway.commissioning.configfile import validate_text
from citynerve.gateway.commissioning.initconfig import fitting_packs, rules_text
from citynerve.gateway.config import load_config
from citynerve.gateway.rules.packs import PACKS_DIR, load_pack
from citynerve.hil.sim.modbus import ModbusBuilding

from .conftest import DEVICES, gateway_toml
from .test_commissioning import IDENTITY, acli, cli

PACKS = [load_pack(f) for f in sorted(PACKS_DIR.glob("*.toml"))]


async def test_init_turns_on_the_smoke_alarm_of_the_detectors_it_found(
    short_dir: Path, building: ModbusBuilding
) -> None:
    host, port = building.endpoint
    path = short_dir / "gw.toml"
    r = await acli(
        "init", "-c", str(path), *IDENTITY, "--bus", f"tcp-1:modbus_tcp:{host}:{port}",
        "--discover", "--to", "12", "--yes", "--json",
    )  # fmt: skip
    assert r.exit_code == 0, r.output
    out = json.loads(r.output)
    assert {(i["pack"], i["on"]) for i in out["rules"]} == {("smoke-fire", True), ("electricity", False)}
    cfg = load_config(path)
    assert cfg.rules is not None
    [smoke] = cfg.rules.packs  # electricity waits for the households' breaker rating
    assert smoke.name == "smoke-fire" and smoke.select.profiles == ("modbus-smoke-detector",)
    assert '# name = "electricity"' in path.read_text() and "current_max_a" in path.read_text()
    check = cli("config", "check", str(path))
    assert check.exit_code == 0 and "no alarms" not in check.output, check.output

    # The guide's last step: the detector's status register in alarm raises `smoke`.
    readings = short_dir / "readings.csv"
    readings.write_text("ts,device,point,value\n1800000000,tcp-1-u11,smoke_alarm,true\n")
    r = cli("diag", "rules", "replay", str(readings), "-c", str(path), "--json")
    assert r.exit_code == 0, r.output
    alarms = json.loads(r.output)["alarms"]
    assert [(a["device"], a["event"]) for a in alarms][:1] == [("tcp-1-u11", "smoke")]


def test_packs_needing_a_household_are_written_off_with_what_to_set(short_dir: Path) -> None:
    devices = [
        ("wm-0301", "cjt188-water-cold", "water-meter"),
        ("bed-0301", "bthome-bed-occupancy", "bed-occupancy"),
        ("mh-1", "bthome-manhole-cover", "manhole-cover"),
        ("lamp-1", "modbus-lamp-controller", "street-lamp"),
        ("fm-1", "modbus-water-meter", "flow-meter"),  # no pack is written for flow meters
    ]
    choices = fitting_packs(devices, PACKS)
    assert [(c.pack, c.on) for c in choices] == [
        ("elderly-bed", False),
        ("elderly-water", False),
        ("manhole", True),
        ("street-lamp", True),
    ]
    text = rules_text(choices)
    data = tomllib.loads(text)
    assert [p["name"] for p in data["rules"]["packs"]] == ["manhole", "street-lamp"]
    assert "up_by" in text and "no-use" in text  # what the installer must set, said where it is off
    # Uncommented as the comment says, the off packs load: the lines are a valid pack entry.
    on = tomllib.loads(
        text.replace("# [[rules", "[[rules").replace("# name", "name").replace("# select", "select")
    )
    assert [p["name"] for p in on["rules"]["packs"]] == [
        "elderly-bed",
        "elderly-water",
        "manhole",
        "street-lamp",
    ]
    assert on["rules"]["packs"][1]["select"] == {"devices": ["wm-0301"]}
    assert rules_text([]) == ""


def test_init_writes_no_rules_when_no_pack_fits(short_dir: Path) -> None:
    # A site of flow meters only: nothing written, and `config check` says that no alarm is raised.
    devices = (("fm-1", "modbus-water-meter", 2, "7", "1", "101"),)
    path = short_dir / "gw.toml"
    text = gateway_toml("127.0.0.1", 1, devices=devices, rules=False)
    path.write_text(text)
    assert rules_text(fitting_packs([("fm-1", "modbus-water-meter", "flow-meter")], PACKS)) == ""
    cfg = validate_text(path, text)
    assert [w.path for w in cfg.warnings] == ["rules"]


async def test_the_report_lists_no_rules_as_an_open_item(short_dir: Path, building: ModbusBuilding) -> None:
    host, port = building.endpoint
    path = short_dir / "gateway.toml"
    path.write_text(gateway_toml(host, port, devices=DEVICES[3:4], rules=False))
    r = await acli("report", "-c", str(path), "--json")
    assert r.exit_code == 1
    rules = [i for i in json.loads(r.output)["open"] if i.startswith("rules")]
    assert rules == [
        "rules: no [rules]: no alarms will be raised "
        "(turn on the rule packs for the devices: docs/installer-guide.md)"
    ]
    path.write_text(gateway_toml(host, port, devices=DEVICES[3:4]))
    r = await acli("report", "-c", str(path), "--json")
    assert not [i for i in json.loads(r.output)["open"] if i.startswith("rules")]


def test_diag_rules_check_of_a_gateway_config_without_rules_says_no_alarm(short_dir: Path) -> None:
    path = short_dir / "gw.toml"
    path.write_text(gateway_toml("127.0.0.1", 1, rules=False))
    r = cli("diag", "rules", "check", str(path))
    assert r.exit_code == 2 and "no [rules] table: no alarms will be raised" in r.output, r.output


def test_init_help_gives_the_stop_bits_of_a_bus_spec() -> None:
    # The guide's bus specs end in :STOPBITS (`parse_bus_spec` takes it); the help left it out.
    r = cli("init", "--help")
    assert "ID:PROTOCOL:PORT[:BAUD[:PARITY[:STOPBITS]]]" in " ".join(r.output.split())


def test_diag_rules_packs_shows_classes_and_what_to_set_per_household() -> None:
    # The guide's "turn on the alarms" step sends the installer here to match packs to classes.
    r = cli("diag", "rules", "packs", "--json")
    packs = {p["id"]: p for p in json.loads(r.output)["packs"]}
    assert packs["smoke-fire"]["classes"] == ["smoke-detector", "fire-panel"]
    assert packs["smoke-fire"]["per_household"] == ""
    assert "no-use" in packs["elderly-water"]["per_household"]
    text = " ".join(cli("diag", "rules", "packs").output.split())
    assert "device classes: water-meter" in text and "set per household first: each resident's meter" in text


async def test_init_that_adds_no_device_writes_no_rules(short_dir: Path, building: ModbusBuilding) -> None:
    host, port = building.endpoint
    path = short_dir / "gw.toml"
    r = await acli(
        "init", "-c", str(path), *IDENTITY, "--bus", f"tcp-1:modbus_tcp:{host}:{port}",
        "--discover", "--from", "200", "--to", "201", "--yes", "--json",
    )  # fmt: skip
    assert r.exit_code == 1, r.output  # nothing answered on the only bus: that bus is named
    out = json.loads(r.output)
    assert [p["bus"] for p in out["problems"]] == ["tcp-1"]
    assert out["rules"] == [] and "[rules]" not in path.read_text()
