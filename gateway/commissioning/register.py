"""The building's device register: the property manager's spreadsheet of meters and detectors.

Import (CSV or .xlsx) matches each row to a device on the bus by its meter number / address and
writes the row's place (building, floor, room), component code and name into that device's entry;
the report lists every row that does not match what was found on the bus (no device with that
address, a type that is not the device's class, a row given twice) and every device on the bus that
the register does not list. Export writes the commissioned devices back in the same columns.

Columns (header names in any case, English or Chinese): address (meter number), room, floor,
building, type, component_code, name. Only `address` is required.
"""

from __future__ import annotations

import contextlib
import csv
import io
import re
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from citynerve.gateway.api import PermanentError

COLUMNS = ("address", "building", "floor", "room", "type", "component_code", "name", "id", "bus", "profile")
ALIASES = {
    "address": (
        "address",
        "meter number",
        "meter no",
        "meter_no",
        "meter",
        "number",
        "表号",
        "地址",
        "通信地址",
    ),
    "building": ("building", "楼栋", "楼号"),
    "floor": ("floor", "楼层", "层"),
    "room": ("room", "flat", "房号", "房间", "户号"),
    "type": ("type", "device type", "类型", "设备类型"),
    "component_code": ("component_code", "component code", "component", "部件编码", "部件代码"),
    "name": ("name", "名称"),
    "id": ("id", "device id"),
    "bus": ("bus",),
    "profile": ("profile",),
}
# What a register's `type` says, as device classes (profiles' device_class); first match wins.
TYPE_WORDS = (
    (("three-phase", "3-phase", "3ph", "三相"), "electricity-meter-3ph"),
    (("electric", "power", "energy", "电表", "电能"), "electricity-meter"),
    (("heat", "热"), "heat-meter"),
    (("flow", "流量"), "flow-meter"),
    (("water", "水"), "water-meter"),
    (("smoke", "烟"), "smoke-detector"),
    (("fire panel", "firepanel", "火灾报警控制器", "消防"), "fire-panel"),
    (("manhole", "井盖"), "manhole-cover"),
)
MAX_ROWS = 10_000
MAX_BYTES = 16 * 1024 * 1024
MAX_COLUMNS = 64
"""Columns of a .xlsx sheet read (the register has ten; notes beside them are not needed). Bounds
memory: a sheet whose stated dimension runs to column XFD would give 16,384 cells per row."""


class RegisterError(PermanentError):
    """A register file that cannot be read; `path` and `reason` say which and why."""

    def __init__(self, path: Path, reason: str) -> None:
        self.path = path
        self.reason = reason
        super().__init__(f"{path}: {reason}")


CODE_COLUMNS = ("address", "component_code")
"""Columns holding codes (meter numbers, 16-digit component codes): a number cell there past Excel's
15 significant digits has lost its last digits (3101060102000007 is kept as 3101060102000000)."""
EXCEL_DIGITS = 15


@dataclass(frozen=True, slots=True)
class Row:
    line: int  # the spreadsheet's row number (header = 1)
    values: dict[str, str]
    refused: dict[str, str] = field(default_factory=dict)  # column -> why it cannot be taken as read

    @property
    def address(self) -> str:
        return self.values.get("address", "").strip()


def _column(header: str) -> str | None:
    text = " ".join(header.strip().lower().replace("_", " ").split())
    for key, names in ALIASES.items():
        if text in {n.replace("_", " ") for n in names}:
            return key
    return None


def _rows(path: Path, table: list[list[Any]]) -> list[Row]:
    if not table:
        raise RegisterError(path, "empty: expected a header row (address, room, floor, type, component_code)")
    header = [_column(str(h or "")) for h in table[0]]
    if "address" not in header:
        raise RegisterError(path, f"no address / meter number column in the header {table[0]!r}")
    if len(table) - 1 > MAX_ROWS:
        raise RegisterError(path, f"{len(table) - 1} rows: more than {MAX_ROWS}")
    out = []
    for n, cells in enumerate(table[1:], start=2):
        values = {k: _text(c) for k, c in zip(header, cells, strict=False) if k is not None}
        refused = {
            k: f"{k} (cell {_cell_name(i, n)}) is a number cell: Excel keeps {EXCEL_DIGITS} digits "
            f"({values[k]} may not be the code typed); format the column as text and type the code again"
            for i, (k, c) in enumerate(zip(header, cells, strict=False))
            if k in CODE_COLUMNS and _cut_number(c)
        }
        if any(values.values()):
            out.append(Row(n, values, refused))
    return out


def _cut_number(cell: Any) -> bool:
    """A number cell (only .xlsx has them) too long for Excel's 15 significant digits."""
    if isinstance(cell, bool) or not isinstance(cell, int | float):
        return False
    return abs(cell) >= 10**EXCEL_DIGITS


def _cell_name(index: int, line: int) -> str:
    """Spreadsheet name of the cell in column `index` (0-based) and row `line`: F3."""
    letters = ""
    index += 1
    while index:
        index, rest = divmod(index - 1, 26)
        letters = chr(ord("A") + rest) + letters
    return f"{letters}{line}"


def _text(cell: Any) -> str:
    if cell is None:
        return ""
    if isinstance(cell, float) and cell.is_integer():
        cell = int(cell)
    return str(cell).strip()[:200]


def read_register(path: Path) -> list[Row]:
    """The rows of a .csv or .xlsx register. Raises RegisterError."""
    try:
        if path.stat().st_size > MAX_BYTES:
            raise RegisterError(path, f"larger than {MAX_BYTES // 1024 // 1024} MiB")
        if path.suffix.lower() == ".xlsx":
            return _rows(path, _read_xlsx(path))
        text = path.read_bytes().decode("utf-8-sig")
    except OSError as err:
        raise RegisterError(path, f"cannot read: {err.strerror or err}") from err
    except UnicodeDecodeError as err:
        raise RegisterError(path, f"not UTF-8 text (save the CSV as UTF-8): {err.reason}") from err
    dialect: type[csv.Dialect] = csv.excel
    # One column has no delimiter for the sniffer to find (csv.Error): commas are as good as any.
    with contextlib.suppress(csv.Error):
        if text.strip():
            dialect = csv.Sniffer().sniff(text[:4096], delimiters=",;\t")
    reader = csv.reader(io.StringIO(text), dialect)
    try:
        table = [list(r) for r in reader]
    except csv.Error as err:  # a field over csv's limit (128 KiB), a stray NUL ...
        raise RegisterError(path, f"not a readable CSV table (line {reader.line_num}): {err}") from None
    return _rows(path, table)


def _openpyxl(path: Path) -> Any:
    try:
        import openpyxl
    except ImportError as err:
        raise RegisterError(
            path,
            "reading .xlsx needs openpyxl: a release bundle's install.py installs it (run the current "
            "bundle's again); elsewhere pip install 'citynerve[register]'; or save the register as CSV",
        ) from err
    return openpyxl


def _read_xlsx(path: Path) -> list[list[Any]]:
    openpyxl = _openpyxl(path)
    try:
        book = openpyxl.load_workbook(path, read_only=True, data_only=True)
    except Exception as err:  # zipfile.BadZipFile, KeyError, openpyxl's own: a broken file is one error
        raise RegisterError(path, f"not a readable .xlsx workbook: {err}") from err
    try:
        sheet = book.worksheets[0]
        # The cells the sheet holds, not the <dimension> it claims (A1:XFD10001 padded every row of
        # a 140 KB file to 16,384 cells: 1.3 GB); and never past MAX_COLUMNS, whatever it holds.
        sheet.reset_dimensions()
        rows = sheet.iter_rows(max_col=MAX_COLUMNS, values_only=True)
        return [list(r) for _, r in zip(range(MAX_ROWS + 2), rows, strict=False)]
    finally:
        book.close()


def write_register(path: Path, rows: Sequence[dict[str, Any]]) -> None:
    """Write rows (COLUMNS) as .csv or .xlsx."""
    table = [list(COLUMNS)] + [[_text(r.get(c)) for c in COLUMNS] for r in rows]
    if path.suffix.lower() == ".xlsx":
        book = _openpyxl(path).Workbook()
        sheet = book.active
        sheet.title = "devices"
        for r in table:
            sheet.append(r)
        book.save(path)
        return
    with path.open("w", encoding="utf-8", newline="") as f:
        csv.writer(f).writerows(table)


def type_class(text: str) -> str | None:
    """The device class a register's type names: a class itself (as export writes it), or words."""
    low = text.strip().lower()
    if re.fullmatch(r"[a-z0-9]+(-[a-z0-9]+)+", low):
        return low
    for words, cls in TYPE_WORDS:
        if any(w in low for w in words):
            return cls
    return None


def _class_fits(wanted: str, have: str) -> bool:
    """Does a register's type fit the device's class? "electricity meter" fits both phase counts; a
    "water meter" may be an ultrasonic flow meter."""
    return have == wanted or have.startswith(wanted + "-") or (wanted, have) == ("water-meter", "flow-meter")


@dataclass(slots=True)
class ImportReport:
    updated: list[str] = field(default_factory=list)  # device ids that took a row
    not_on_bus: list[dict[str, Any]] = field(default_factory=list)  # rows with no such device
    type_mismatch: list[dict[str, Any]] = field(default_factory=list)
    duplicates: list[dict[str, Any]] = field(default_factory=list)
    not_in_register: list[str] = field(default_factory=list)  # device ids no row names
    invalid: list[dict[str, Any]] = field(default_factory=list)  # rows the config check refused
    rows: dict[str, dict[str, Any]] = field(default_factory=dict)  # device id -> the row it took

    @property
    def clean(self) -> bool:
        return not (
            self.not_on_bus or self.type_mismatch or self.duplicates or self.not_in_register or self.invalid
        )

    def refuse(self, device_id: str, why: str) -> None:
        """The row `device_id` took is not taken after all (its values fail the config check)."""
        self.invalid.append({**self.rows.get(device_id, {}), "device": device_id, "why": why})
        if device_id in self.updated:
            self.updated.remove(device_id)

    def to_dict(self) -> dict[str, Any]:
        return {
            "updated": self.updated,
            "not_on_bus": self.not_on_bus,
            "type_mismatch": self.type_mismatch,
            "duplicates": self.duplicates,
            "not_in_register": self.not_in_register,
            "invalid": self.invalid,
            "clean": self.clean,
        }


def _norm(address: Any) -> str:
    return str(address).strip().lower()


AddressKey = Callable[[Any], str]


def apply_register(
    rows: Iterable[Row],
    devices: Sequence[dict[str, Any]],
    classes: dict[str, str],
    bus_keys: Mapping[str, AddressKey] | None = None,
) -> tuple[dict[str, dict[str, Any]], ImportReport]:
    """New entries for the devices the rows name (by address), and the report.

    `devices`: the config's [[devices]] tables as written; `classes`: profile id -> device_class;
    `bus_keys`: bus id -> its driver's address key (DriverSpec.address_key), so a register row
    matches its device however the address is written (a MAC without colons, a meter number whose
    leading zeros the spreadsheet dropped). Without one, addresses compare as written (any case)."""
    keys = dict(bus_keys or {})

    def device_key(d: dict[str, Any]) -> str:
        return keys.get(str(d.get("bus", "")), _norm)(str(d.get("address", "")).strip())

    def row_keys(address: str, bus: str) -> list[str]:
        if bus:
            return [keys.get(bus, _norm)(address)]
        return list(dict.fromkeys([_norm(address), *(k(address) for k in keys.values())]))

    report = ImportReport()
    by_address: dict[str, list[dict[str, Any]]] = {}
    for d in devices:
        by_address.setdefault(device_key(d), []).append(d)
    changed: dict[str, dict[str, Any]] = {}
    seen: dict[str, int] = {}
    for row in rows:
        found = row_keys(row.address, row.values.get("bus", ""))
        item = {"line": row.line, "address": row.address, **{k: v for k, v in row.values.items() if v}}
        if row.refused:  # not taken; an address that may have lost digits names no device
            matched = [] if "address" in row.refused else [d for k in found for d in by_address.get(k, [])]
            taker = str(matched[0].get("id")) if len(matched) == 1 else ""
            report.invalid.append({**item, "device": taker, "why": "; ".join(row.refused.values())})
            if taker:
                for k in found:
                    seen.setdefault(k, row.line)
            continue
        first = next((seen[k] for k in found if k in seen), None)
        if first is not None:
            report.duplicates.append({**item, "first_line": first})
            continue
        for k in found:
            seen[k] = row.line
        matches = list({id(d): d for k in found for d in by_address.get(k, [])}.values())
        if row.values.get("bus"):
            matches = [d for d in matches if d.get("bus") == row.values["bus"]]
        if len(matches) != 1:
            why = (
                "no device with this address was found on the bus (or it was found but not identified: "
                "add it with `devices add`)"
                if not matches
                else "several buses have it: add a bus column"
            )
            report.not_on_bus.append({**item, "why": why})
            continue
        device = matches[0]
        wanted = type_class(row.values.get("type", ""))
        have = classes.get(str(device.get("profile")), "")
        if row.values.get("type") and (wanted is None or not _class_fits(wanted, have)):
            report.type_mismatch.append(
                {**item, "device": device.get("id"), "profile": device.get("profile"), "class": have}
            )
        entry = dict(device)
        location = dict(entry.get("location") or {})
        for k in ("building", "floor", "room"):
            if row.values.get(k):
                location[k] = row.values[k]
        entry["location"] = location
        if row.values.get("component_code"):
            entry["component_code"] = row.values["component_code"]
        if row.values.get("name"):
            entry["name"] = row.values["name"]
        if entry != device:
            changed[str(device["id"])] = entry
        report.updated.append(str(device["id"]))
        report.rows[str(device["id"])] = item
    named = {str(d["id"]) for d in devices if device_key(d) in seen}
    report.not_in_register = [str(d.get("id")) for d in devices if str(d.get("id")) not in named]
    return changed, report


def export_rows(devices: Sequence[dict[str, Any]], classes: dict[str, str]) -> list[dict[str, Any]]:
    """The commissioned devices in the register's columns."""
    out = []
    for d in devices:
        loc = d.get("location") or {}
        out.append(
            {
                "address": d.get("address", ""),
                "building": loc.get("building", ""),
                "floor": loc.get("floor", ""),
                "room": loc.get("room", ""),
                "type": classes.get(str(d.get("profile")), ""),
                "component_code": d.get("component_code", ""),
                "name": d.get("name", ""),
                "id": d.get("id", ""),
                "bus": d.get("bus", ""),
                "profile": d.get("profile", ""),
            }
        )
    return out
