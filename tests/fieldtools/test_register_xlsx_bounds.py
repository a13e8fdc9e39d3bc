"""A register .xlsx is read within MAX_COLUMNS columns, whatever its sheet claims: a sheet whose
<dimension> says A1:XFD... (what Excel writes once a stray cell sits in the last column) made
openpyxl pad every row to 16,384 cells (a 140 KB register of 10,000 rows took 1.3 GB)."""

from __future__ import annotations

import json
import re
import zipfile
from pathlib import Path

import openpyxl
from click.testing import CliRunner

from citynerve.gateway.cli import main
from citynerve.gateway.commissioning.register import MAX_COLUMNS, _read_xlsx, read_register

ROWS = 200


def _wide_register(folder: Path) -> Path:
    """The register with a note in column XFD, and the dimension Excel writes for it."""
    plain = folder / "plain.xlsx"
    book = openpyxl.Workbook(write_only=True)
    sheet = book.create_sheet("register")
    sheet.append(["address", "room", *([None] * 16381), "note"])
    for i in range(1, ROWS + 1):
        sheet.append([i, f"flat {i}"])
    book.save(plain)
    wide = folder / "wide.xlsx"
    with zipfile.ZipFile(plain) as src, zipfile.ZipFile(wide, "w", zipfile.ZIP_DEFLATED) as out:
        for item in src.infolist():
            data = src.read(item.filename)
            if item.filename == "xl/worksheets/sheet1.xml":
                text = re.sub(r"<dimension[^>]*/>", "", data.decode())
                text = text.replace("<sheetViews>", f'<dimension ref="A1:XFD{ROWS + 1}"/><sheetViews>', 1)
                data = text.encode()
            out.writestr(item, data)
    return wide


def test_a_sheet_claiming_column_xfd_is_read_within_the_column_bound(tmp_path: Path) -> None:
    wide = _wide_register(tmp_path)
    table = _read_xlsx(wide)
    assert len(table) == ROWS + 1
    assert max(len(r) for r in table) <= MAX_COLUMNS  # was 16,384 cells in every row
    rows = read_register(wide)
    assert [(r.line, r.address, r.values["room"]) for r in rows[:2]] == [
        (2, "1", "flat 1"),
        (3, "2", "flat 2"),
    ]


def test_devices_import_takes_such_a_register(tmp_path: Path, config_path: Path) -> None:
    wide = _wide_register(tmp_path)
    r = CliRunner().invoke(
        main, ["devices", "import", "-c", str(config_path), str(wide), "--dry-run", "--json"]
    )
    assert r.exit_code == 1, r.output  # rows with no device on the bus: reported
    out = json.loads(r.output)
    assert out["rows"] == ROWS and out["updated"] == ["em-1", "wm-2", "wm-3", "sd-11", "sd-12"]
