"""`devices import` judges each register row on its own: a row whose values the config check refuses
is reported with its register line and not taken; the other rows are. A config whose devices are an
inline array cannot be edited: every device-editing command says so (exit 2), never a traceback."""

from __future__ import annotations

import json
from pathlib import Path

from click.testing import CliRunner, Result

from citynerve.gateway.cli import main
from citynerve.gateway.config import load_config


def cli(*args: str) -> Result:
    return CliRunner().invoke(main, list(args))


# Line 2: a component code Excel shortened to 15 digits (the config refuses it); line 3: fine.
BAD_ROW = "address,room,component_code\n2,flat 201,310106010200002\n3,flat 301,3101060102000003\n"


def test_one_invalid_row_is_reported_with_its_line_and_the_others_are_taken(config_path: Path) -> None:
    register = config_path.parent / "register.csv"
    register.write_text(BAD_ROW, encoding="utf-8")
    r = cli("devices", "import", "-c", str(config_path), str(register), "--json")
    assert r.exit_code == 1, r.output  # a row was not taken: reported, not fatal
    out = json.loads(r.output)
    assert out["changed"] == ["wm-3"] and out["updated"] == ["wm-3"]
    [bad] = out["invalid"]
    assert (bad["line"], bad["address"], bad["device"]) == (2, "2", "wm-2")
    assert bad["why"].startswith("component_code: ") and "16-digit" in bad["why"]
    cfg = load_config(config_path)
    assert cfg.device("wm-3").location.room == "flat 301"
    assert cfg.device("wm-3").component_code == "3101060102000003"
    assert cfg.device("wm-2").location.room == "201" and cfg.device("wm-2").component_code is None
    text = cli("devices", "import", "-c", str(config_path), str(register)).output
    assert "not taken into wm-2: component_code" in text.replace("\n", " ").replace("│", "")


def test_dry_run_reports_the_invalid_row_and_changes_nothing(config_path: Path) -> None:
    register = config_path.parent / "register.csv"
    register.write_text(BAD_ROW, encoding="utf-8")
    before = config_path.read_text()
    r = cli("devices", "import", "-c", str(config_path), str(register), "--dry-run", "--json")
    assert r.exit_code == 1, r.output
    out = json.loads(r.output)
    assert [(i["line"], i["device"]) for i in out["invalid"]] == [(2, "wm-2")] and out["changed"] == []
    assert config_path.read_text() == before


WM2 = 'id = "wm-2", bus = "tcp-1", profile = "modbus-water-meter", address = 2'
INLINE = f"""devices = [
  {{ {WM2}, location = {{ address_code = "310106013007" }} }},
]
[gateway]
id = "gw-1"
org = {{ city = "310100", district = "310106", street = "310106013" }}
[control]
socket = "var/gw.sock"
[[buses]]
id = "tcp-1"
protocol = "modbus_tcp"
host = "127.0.0.1"
"""


def test_inline_device_array_is_refused_by_every_editing_command(tmp_path: Path) -> None:
    config = tmp_path / "gw.toml"
    config.write_text(INLINE)
    load_config(config)  # `config check` accepts it
    register = tmp_path / "register.csv"
    register.write_text("address,room\n2,flat 201\n")
    want = "devices written as an inline array cannot be edited; write them as [[devices]] blocks"
    add = ["--address", "3", "--no-reload"]
    for args in (
        ["devices", "import", "-c", str(config), str(register)],
        ["devices", "remove", "-c", str(config), "wm-2", "--no-reload"],
        [
            "devices",
            "add",
            "-c",
            str(config),
            "--id",
            "wm-3",
            "--bus",
            "tcp-1",
            "--profile",
            "modbus-water-meter",
            *add,
        ],
    ):
        r = cli(*args)
        assert r.exit_code == 2 and isinstance(r.exception, SystemExit), (args, r.output)
        assert want in " ".join(r.output.split()), (args, r.output)
    assert config.read_text() == INLINE


def test_a_component_code_in_an_xlsx_number_cell_is_refused_naming_the_cell(config_path: Path) -> None:
    """Excel keeps 15 significant digits of a number: a typed 3101060102000007 is stored as
    3101060102000000.0, a plausible 16-digit code that is not the one typed. Only the CSV text form
    (3.10106E+15) was refused; the number cell was taken silently with the wrong code."""
    import openpyxl

    book = openpyxl.Workbook()
    sheet = book.active
    sheet.append(["address", "room", "component_code"])
    sheet.append([2, "flat 201", 3101060102000000.0])  # what Excel stored for ...0007
    sheet.append([3, "flat 301", "3101060102000003"])  # formatted as text: taken
    register = config_path.parent / "register.xlsx"
    book.save(register)
    r = cli("devices", "import", "-c", str(config_path), str(register), "--json")
    assert r.exit_code == 1, r.output
    out = json.loads(r.output)
    assert out["updated"] == ["wm-3"] and out["changed"] == ["wm-3"]
    [bad] = out["invalid"]
    assert (bad["line"], bad["address"], bad["device"]) == (2, "2", "wm-2")
    assert bad["why"].startswith("component_code (cell C2) is a number cell: Excel keeps 15 digits")
    assert "format the column as text and type the code again" in bad["why"]
    assert "wm-2" not in out["not_in_register"]
    cfg = load_config(config_path)
    assert cfg.device("wm-2").component_code is None
    assert cfg.device("wm-3").component_code == "3101060102000003"
