"""The building's device register: the property manager's CSV / .xlsx into the commissioned devices,
with a report of what does not match the bus, and the devices back out in the same columns."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import openpyxl
import pytest
from click.testing import CliRunner, Result

from citynerve.gateway.cli import main
from citynerve.gateway.commissioning.register import read_register
from citynerve.gateway.config import load_config

REGISTER = [
    ["表号", "楼栋", "楼层", "房号", "类型", "部件编码", "名称"],
    ["1", "7", "B1", "meter room", "三相电表", "3101060101000001", "incomer"],
    ["2", "7", "2", "201", "water meter", "3101060102000002", "flat 201 water"],
    ["3", "7", "3", "301", "smoke detector", "", ""],  # the bus has a water meter at 3
    ["99", "7", "9", "901", "water meter", "", ""],  # nothing answers at 99
    ["2", "7", "2", "202", "water meter", "", ""],  # given twice
    ["11", "7", "1", "stairwell", "烟感", "3101060103000011", ""],
]


def cli(*args: str) -> Result:
    return CliRunner().invoke(main, list(args), catch_exceptions=False)


def _check(config_path: Path, out: dict[str, object]) -> None:
    assert out["updated"] == ["em-1", "wm-2", "wm-3", "sd-11"]
    assert [r["address"] for r in out["not_on_bus"]] == ["99"]  # type: ignore[index]
    assert [(r["line"], r["device"]) for r in out["type_mismatch"]] == [(4, "wm-3")]  # type: ignore[index]
    assert [(r["line"], r["first_line"]) for r in out["duplicates"]] == [(6, 3)]  # type: ignore[index]
    assert out["not_in_register"] == ["sd-12"]
    cfg = load_config(config_path)
    em = cfg.device("em-1")
    assert (em.location.building, em.location.floor, em.location.room) == ("7", "B1", "meter room")
    assert em.component_code == "3101060101000001" and em.name == "incomer"
    assert cfg.device("wm-2").location.room == "201"  # the first row of a duplicate wins
    assert cfg.device("sd-11").component_code == "3101060103000011"


def test_csv_register_in_with_a_report(config_path: Path) -> None:
    register = config_path.parent / "register.csv"
    register.write_text("\n".join(",".join(r) for r in REGISTER) + "\n", encoding="utf-8-sig")
    dry = cli("devices", "import", "-c", str(config_path), str(register), "--dry-run", "--json")
    assert dry.exit_code == 1 and json.loads(dry.output)["changed"] == []
    before = config_path.read_text()
    r = cli("devices", "import", "-c", str(config_path), str(register), "--json")
    assert r.exit_code == 1, r.output  # rows that do not match: exit 1, the rest is taken
    out = json.loads(r.output)
    assert out["changed"] == ["em-1", "sd-11", "wm-2"] and Path(out["backup"]).read_text() == before
    _check(config_path, out)
    assert config_path.read_text().startswith("# test building")  # comments above stay
    text = cli("devices", "import", "-c", str(config_path), str(register)).output
    assert "on the bus, not in the register" in text and "no device with this address" in text


def test_xlsx_register_in_and_out(config_path: Path) -> None:
    book = openpyxl.Workbook()
    sheet = book.active
    for row in REGISTER:
        sheet.append([int(c) if c.isdigit() and len(c) < 6 else c for c in row])  # numbers as Excel has them
    register = config_path.parent / "register.xlsx"
    book.save(register)
    r = cli("devices", "import", "-c", str(config_path), str(register), "--json")
    assert r.exit_code == 1, r.output
    _check(config_path, json.loads(r.output))

    out = config_path.parent / "handover.xlsx"
    r = cli("devices", "export", "-c", str(config_path), str(out), "--json")
    assert r.exit_code == 0 and json.loads(r.output)["devices"] == 5
    rows = {row.address: row.values for row in read_register(out)}
    assert rows["1"]["room"] == "meter room" and rows["1"]["type"] == "electricity-meter-3ph"
    assert rows["2"]["component_code"] == "3101060102000002" and rows["12"]["id"] == "sd-12"
    # The exported file imports back cleanly: the register and the bus agree.
    r = cli("devices", "import", "-c", str(config_path), str(out), "--json")
    assert r.exit_code == 0, r.output
    assert json.loads(r.output)["clean"] is True


def test_unreadable_registers_are_one_line(tmp_path: Path, config_path: Path) -> None:
    bad = tmp_path / "x.xlsx"
    bad.write_bytes(b"not a zip")
    r = cli("devices", "import", "-c", str(config_path), str(bad))
    assert r.exit_code == 2 and "not a readable .xlsx" in r.output
    nohead = tmp_path / "x.csv"
    nohead.write_text("room,floor\n1,2\n")
    r = cli("devices", "import", "-c", str(config_path), str(nohead))
    assert r.exit_code == 2 and "no address" in r.output


def test_an_xlsx_without_openpyxl_says_what_works_on_an_installed_box(
    tmp_path: Path, config_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A gateway installed offline cannot `pip install`: the message names the bundle's install.py.
    register = tmp_path / "register.xlsx"
    register.write_bytes(b"PK")
    monkeypatch.setitem(sys.modules, "openpyxl", None)  # the import fails as if not installed
    r = cli("devices", "import", "-c", str(config_path), str(register))
    assert r.exit_code == 2
    assert "install.py installs it" in r.output and "citynerve[register]" in r.output


def test_single_column_register_is_read_as_csv(config_path: Path) -> None:
    """One column has no delimiter for csv.Sniffer to find: it raised csv.Error, a traceback."""
    register = config_path.parent / "register.csv"
    register.write_text("address\n1\n2\n", encoding="utf-8")
    assert [r.address for r in read_register(register)] == ["1", "2"]
    r = CliRunner().invoke(main, ["devices", "import", "-c", str(config_path), str(register), "--dry-run"])
    assert isinstance(r.exception, SystemExit) and r.exit_code == 1, r.output  # devices not listed
    assert "on the bus, not in the register" in r.output


def test_unparsable_csv_is_a_register_error_naming_the_file(config_path: Path) -> None:
    register = config_path.parent / "register.csv"
    register.write_text(
        'address,name\n1,"' + "x" * 200_000 + '"\n', encoding="utf-8"
    )  # over csv's field limit
    r = CliRunner().invoke(main, ["devices", "import", "-c", str(config_path), str(register), "--dry-run"])
    assert isinstance(r.exception, SystemExit) and r.exit_code == 2, r.output
    assert f"{register}: not a readable CSV table (line 2)" in r.output.replace("\n", ""), r.output


METERS_AND_NODES = """[gateway]
id = "gw-test-0001"
org = { city = "310100", district = "310106", street = "310106013" }
[control]
socket = "var/gw.sock"
[[buses]]
id = "meters"
protocol = "dlt645"
port = "/dev/ttyUSB1"
[[buses]]
id = "ble"
protocol = "bthome"
[[devices]]
id = "em-301"
bus = "meters"
profile = "dlt645-single-phase"
address = "000012345678"
location = { address_code = "310106013007" }
[[devices]]
id = "door-1"
bus = "ble"
profile = "bthome-door-contact"
address = "A4:C1:38:00:00:01"
location = { address_code = "310106013007" }
"""


def test_register_addresses_match_as_the_driver_reads_them(tmp_path: Path) -> None:
    """A meter number whose leading zeros the spreadsheet dropped and a MAC written without colons
    are the configured devices' addresses (each bus's driver normalises them); the same meter
    written both ways is one row given twice."""
    config = tmp_path / "gateway.toml"
    config.write_text(METERS_AND_NODES)
    register = tmp_path / "register.csv"
    rows = ["meter number,building,floor,room", "12345678,7,3,301", "a4c138000001,7,1,entrance"]
    register.write_text("\n".join(rows) + "\n")
    r = cli("devices", "import", "-c", str(config), str(register), "--json")
    assert r.exit_code == 0, r.output
    out = json.loads(r.output)
    assert out["updated"] == ["em-301", "door-1"] and not out["not_on_bus"] and not out["not_in_register"]
    cfg = load_config(config)
    assert cfg.device("em-301").location.room == "301" and cfg.device("door-1").location.room == "entrance"
    register.write_text("\n".join([*rows, "000012345678,7,3,302"]) + "\n")
    out = json.loads(cli("devices", "import", "-c", str(config), str(register), "--json").output)
    assert [(d["line"], d["first_line"]) for d in out["duplicates"]] == [(4, 2)]
