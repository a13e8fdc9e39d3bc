"""`citynerve diag ports | modbus scan/read/write | store | bundle`: the technician's checks.

Bus actions go through `citynerve.gateway.diagbus`: via the running gateway's bus owner when it runs
(never two masters on one RS-485 line), else straight to the port. Every command has --json and exits 1 when
the check fails, 2 on bad input.
"""

from __future__ import annotations

import asyncio
import time
from pathlib import Path
from typing import Any

import click

from citynerve.gateway.api import ConfigError, DiagParamError, GatewayError, TransientError
from citynerve.gateway.cli import _common
from citynerve.gateway.cli._common import (
    EXIT_FAILED,
    EXIT_INVALID,
    FiniteRange,
    config_option,
    fail,
    json_option,
    load_or_exit,
    print_config_issues,
    print_json,
)
from citynerve.gateway.cli._groups import diag
from citynerve.gateway.cli._usage import configured_bus
from citynerve.gateway.config import GatewayConfig

SCAN_CHUNK = 8  # unit ids per request to the bus owner: the bar moves, the bus is shared fairly

# -- ports -------------------------------------------------------------------------------------------


def list_ports() -> list[dict[str, Any]]:
    """Serial ports with their USB ids (vid:pid), serial number and description."""
    from serial.tools import list_ports as lp

    out = []
    for p in sorted(lp.comports(), key=lambda p: p.device):
        out.append(
            {
                "device": p.device,
                "usb_id": f"{p.vid:04x}:{p.pid:04x}" if p.vid is not None and p.pid is not None else None,
                "serial_number": p.serial_number,
                "manufacturer": p.manufacturer,
                "product": p.product,
                "description": p.description,
                "location": p.location,
            }
        )
    return out


@diag.command("ports")
@json_option
def ports(as_json: bool) -> None:
    """List serial ports with USB vid:pid, serial number and description.

    Use it to find which /dev/ttyUSB* is the RS-485 adapter (the serial number stays the same when
    the adapter moves to another USB socket; see /dev/serial/by-id). Exits 1 when there is none.
    """
    from rich.table import Table

    found = list_ports()
    if as_json:
        print_json({"ports": found})
    elif found:
        table = Table(title="serial ports")
        for col in ("device", "usb id", "serial number", "description"):
            table.add_column(col)
        for p in found:
            table.add_row(
                *(_common.esc(p[k] or "-") for k in ("device", "usb_id", "serial_number", "description"))
            )
        _common.console.print(table)
    else:
        _common.err_console.print("no serial ports found (is the USB RS-485 adapter plugged in?)")
    if not found:
        raise SystemExit(EXIT_FAILED)


# -- modbus ------------------------------------------------------------------------------------------


def _modbus_config(config_path: Path, bus_id: str) -> GatewayConfig:
    cfg = load_or_exit(config_path)
    bus = configured_bus(cfg, bus_id)
    if not bus.protocol.startswith("modbus"):
        fail(f"bus {bus_id} speaks {bus.protocol}, not Modbus", EXIT_INVALID)
    return cfg


async def _one(cfg: GatewayConfig, bus_id: str, action: str, params: dict[str, Any]) -> dict[str, Any]:
    from citynerve.gateway.diagbus import DiagSession

    async with DiagSession(cfg, bus_id) as session:
        result = await session.run(action, params)
        result["route"] = session.route.value if session.route else None
        return result


class ScanInterruptedError(TransientError):
    """A reload restarted the bus (or the gateway stopped) during a scan through the gateway: the
    units from `stopped_at` on were not asked."""

    def __init__(self, bus_id: str, first: int, stopped_at: int, answered: int) -> None:
        self.bus_id, self.first, self.stopped_at, self.answered = bus_id, first, stopped_at, answered
        done = f"units {first}..{stopped_at - 1} scanned, {answered} answered" if stopped_at > first else ""
        super().__init__(
            f"bus {bus_id}: the bus restarted during the scan (a config reload, or the gateway stopped)"
            f"{f' with {done}' if done else ''}: run it again"
        )


def _run_or_fail(coro: Any) -> Any:
    try:
        return asyncio.run(coro)
    except DiagParamError as err:  # bad input the driver found: exit 2, like click's own
        fail(str(err), EXIT_INVALID)
    except GatewayError as err:
        fail(str(err))


@diag.group("modbus")
def modbus() -> None:
    """Modbus on a configured bus: scan unit ids, read and write registers or coils."""


bus_option = click.option("--bus", "bus_id", required=True, help="Bus id from the config.")
baud_option = click.option(
    "--baud", type=click.IntRange(300, 115200), help="RTU: try this baud rate instead of the configured one."
)
parity_option = click.option(
    "--parity", type=click.Choice(["N", "E", "O"]), help="RTU: try this parity instead of the configured one."
)


def _settings(params: dict[str, Any], baud: int | None, parity: str | None) -> None:
    """Other line settings for one command (the running gateway pauses polling meanwhile)."""
    settings = {k: v for k, v in (("baudrate", baud), ("parity", parity)) if v is not None}
    if settings:
        params["settings"] = settings


table_choice = click.Choice(["holding", "input", "coil", "discrete"])


@modbus.command("scan")
@config_option
@bus_option
@click.option(
    "--from", "first", type=click.IntRange(1, 247), default=1, show_default=True, help="First unit."
)
@click.option("--to", "last", type=click.IntRange(1, 247), default=247, show_default=True, help="Last unit.")
@click.option("--table", type=table_choice, default="holding", show_default=True, help="Table to probe.")
@click.option("--address", type=click.IntRange(0, 65535), default=0, show_default=True, help="Probe address.")
@click.option("--timeout", "timeout_s", type=FiniteRange(0.01, 60), help="Per-unit timeout (s).")
@baud_option
@parity_option
@json_option
def modbus_scan(
    config_path: Path,
    bus_id: str,
    first: int,
    last: int,
    table: str,
    address: int,
    timeout_s: float | None,
    baud: int | None,
    parity: str | None,
    as_json: bool,
) -> None:
    """Find which unit ids answer on a Modbus bus (one read each; an exception reply counts).

    Through the running gateway one unit id at a time, with the polls due run between them, so
    polling goes on; each unit holds the line for at most --timeout. Shows a progress bar and a
    table of what answered. Exits 1 when nothing answered.
    """
    if last < first:
        fail(f"--to {last} is below --from {first}", EXIT_INVALID)
    cfg = _modbus_config(config_path, bus_id)
    params: dict[str, Any] = {"table": table, "address": address}
    if timeout_s is not None:
        params["timeout_s"] = timeout_s
    _settings(params, baud, parity)

    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
    from rich.table import Table

    from citynerve.gateway.bus.jobs import BusStoppedError
    from citynerve.gateway.control import ControlError
    from citynerve.gateway.diagbus import DiagSession

    async def scan() -> dict[str, Any]:
        answered: list[dict[str, Any]] = []
        garbled: list[int] = []
        unreached: list[int] = []
        started = time.monotonic()
        async with DiagSession(cfg, bus_id) as session:
            progress = Progress(
                TextColumn("scanning {task.description}"),
                BarColumn(),
                MofNCompleteColumn(),
                TextColumn("found {task.fields[hits]}"),
                TimeElapsedColumn(),
                console=_common.err_console,
                disable=as_json,
                transient=True,
            )
            with progress:
                task = progress.add_task(bus_id, total=last - first + 1, hits=0)
                for start in range(first, last + 1, SCAN_CHUNK):
                    end = min(start + SCAN_CHUNK - 1, last)
                    try:
                        part = await session.run("scan", {**params, "first": start, "last": end})
                    except ControlError as err:
                        if err.type != BusStoppedError.__name__:
                            raise
                        raise ScanInterruptedError(bus_id, first, start, len(answered)) from err
                    answered += part.get("answered", [])
                    garbled += part.get("garbled", [])
                    unreached += part.get("gateway_no_answer", [])
                    progress.update(task, completed=end - first + 1, hits=len(answered))
            return {
                "bus": bus_id,
                "route": session.route.value if session.route else None,
                "scanned": [first, last],
                "table": table,
                "address": address,
                "answered": answered,
                "garbled": garbled,
                "gateway_no_answer": unreached,
                "elapsed_s": round(time.monotonic() - started, 2),
            }

    result = _run_or_fail(scan())
    if as_json:
        print_json(result)
    else:
        if result["answered"]:
            t = Table(title=_common.esc(f"bus {bus_id}: units that answered ({result['route']})"))
            for col in ("unit", "reply", "exception code"):
                t.add_column(col)
            for a in result["answered"]:
                t.add_row(str(a["unit"]), _common.esc(a["reply"]), str(a.get("exception_code") or "-"))
            _common.console.print(t)
        _common.console.print(
            f"{len(result['answered'])} of {last - first + 1} unit ids answered in {result['elapsed_s']} s"
            + (
                f"; garbled replies from {result['garbled']}: at one unit while others are clean, two "
                "devices share that address; at every unit, parity / baud rate (`probe`) or line quality"
                if result["garbled"]
                else ""
            )
            + (
                f"; the TCP gateway answered for {len(result['gateway_no_answer'])} unit ids that nothing "
                "behind it answered (exception 10/11): not listed"
                if result["gateway_no_answer"]
                else ""
            ),
            highlight=False,
        )
    if not result["answered"]:
        raise SystemExit(EXIT_FAILED)


@modbus.command("read")
@config_option
@bus_option
@click.option(
    "--unit", type=click.IntRange(0, 255), required=True, help="Unit id (slave address; 248-255: Modbus TCP)."
)
@click.option(
    "--reply-unit",
    type=click.IntRange(0, 255),
    help="Modbus TCP: the unit id the device's replies carry, if not --unit (default: the configured "
    "device's reply_unit).",
)
@click.option("--table", type=table_choice, default="holding", show_default=True, help="Register table.")
@click.option("--address", type=click.IntRange(0, 65535), required=True, help="0-based address.")
@click.option("--count", type=click.IntRange(1, 2000), help="Registers or bits (default: what --type needs).")
@click.option(
    "--type",
    "type_",
    type=click.Choice(
        ["int16", "uint16", "int32", "uint32", "int64", "uint64", "float32", "float64", "string"]
    ),
    help="Also decode the registers as this type.",
)
@click.option("--order", type=click.Choice(["ABCD", "CDAB", "BADC", "DCBA"]), help="Word/byte order.")
@baud_option
@parity_option
@json_option
def modbus_read(
    config_path: Path,
    bus_id: str,
    unit: int,
    reply_unit: int | None,
    table: str,
    address: int,
    count: int | None,
    type_: str | None,
    order: str | None,
    baud: int | None,
    parity: str | None,
    as_json: bool,
) -> None:
    """Read registers or bits from one unit and show them raw (decimal and hex) and decoded.

    Two registers or more are also decoded in all four word / byte orders (ABCD, CDAB, BADC, DCBA),
    and the orders giving a believable value are named (within the configured point's physical
    bounds when a device at this unit has a point at this address).
    """
    cfg = _modbus_config(config_path, bus_id)
    params: dict[str, Any] = {"unit": unit, "table": table, "address": address}
    reply_unit = _reply_unit(cfg, bus_id, unit, reply_unit)
    for key, value in (("count", count), ("type", type_), ("order", order), ("reply_unit", reply_unit)):
        if value is not None:
            params[key] = value
    _settings(params, baud, parity)
    result = _run_or_fail(_one(cfg, bus_id, "read", params))
    if "orders" in result:
        result["plausible_orders"] = _plausible_orders(cfg, bus_id, unit, address, result["orders"])
    if as_json:
        print_json(result)
        return
    from rich.table import Table

    t = Table(title=f"bus {bus_id} unit {unit} {table} from {address} ({result['route']})")
    t.add_column("address", justify="right")
    t.add_column("value", justify="right")
    if "bits" in result:
        for i, bit in enumerate(result["bits"]):
            t.add_row(str(address + i), "1" if bit else "0")
    else:
        t.add_column("hex")
        for i, reg in enumerate(result["registers"]):
            t.add_row(str(address + i), str(reg), f"0x{reg:04X}")
    _common.console.print(t)
    if "value" in result:
        _common.console.print(
            f"as {result['type']}: [bold]{_common.esc(result['value'])}[/]", highlight=False
        )
    if "orders" in result:
        _show_orders(result)


def _reply_unit(cfg: GatewayConfig, bus_id: str, unit: int, given: int | None) -> int | None:
    """--reply-unit, or else the `reply_unit` of a device configured at `unit` on the bus."""
    if given is not None:
        return given
    for device in cfg.devices_on(bus_id):
        if device.address == unit and (configured := getattr(device, "reply_unit", None)) is not None:
            return int(configured)
    return None


def _plausible_orders(
    cfg: GatewayConfig, bus_id: str, unit: int, address: int, orders: dict[str, Any]
) -> dict[str, Any]:
    from citynerve.gateway.bus.plausibility import bounds_of, plausible_orders

    bounds = None
    point_name = None
    for device in cfg.devices_on(bus_id):
        if device.address != unit:
            continue
        for name, point in device.points.items():
            if getattr(point, "address", None) == address:
                bounds, point_name = bounds_of(point), f"{device.id}.{name}"
    return {"point": point_name, "bounds": bounds, "by_type": plausible_orders(orders, bounds)}


def _show_orders(result: dict[str, Any]) -> None:
    from rich.table import Table

    orders: dict[str, dict[str, Any]] = result["orders"]
    types = list(next(iter(orders.values())).keys()) if orders else []
    t = Table(title="the first registers in each word / byte order")
    t.add_column("order")
    for type_ in types:
        t.add_column(type_, justify="right")
    plausible = result["plausible_orders"]["by_type"]
    for layout, values in orders.items():
        cells = [
            _common.esc(values.get(tp)) + (" [green]plausible[/]" if layout in plausible.get(tp, []) else "")
            for tp in types
        ]
        t.add_row(layout, *cells)
    _common.console.print(t)
    where = result["plausible_orders"]
    against = (
        f"the bounds of {where['point']} {where['bounds']}"
        if where["point"]
        else "generic bounds (no point here)"
    )
    found = "; ".join(f"{tp}: {', '.join(layouts)}" for tp, layouts in plausible.items()) or "none"
    _common.console.print(f"plausible against {against}: {found}", highlight=False, markup=False)


def _parse_value(text: str) -> int:
    try:
        return int(text, 0)
    except ValueError:
        raise click.BadParameter(f"{text!r} is not an integer (decimal or 0x hex)") from None


@modbus.command("write")
@config_option
@bus_option
@click.option(
    "--unit",
    type=click.IntRange(0, 255),
    required=True,
    help="Unit id (0 = broadcast on a serial line; 248-255: Modbus TCP).",
)
@click.option(
    "--reply-unit",
    type=click.IntRange(0, 255),
    help="Modbus TCP: the unit id the device's replies carry, if not --unit (default: the configured "
    "device's reply_unit).",
)
@click.option(
    "--table",
    type=click.Choice(["holding", "coil"]),
    default="holding",
    show_default=True,
    help="What to write.",
)
@click.option("--address", type=click.IntRange(0, 65535), required=True, help="0-based address.")
@click.option("--value", "values", multiple=True, required=True, help="Value (repeat for several).")
@click.option("--yes", is_flag=True, help="Do not ask for confirmation.")
@click.option(
    "--force",
    is_flag=True,
    help="Write even where no point of the config marked writable covers the address.",
)
@json_option
def modbus_write(
    config_path: Path,
    bus_id: str,
    unit: int,
    reply_unit: int | None,
    table: str,
    address: int,
    values: tuple[str, ...],
    yes: bool,
    force: bool,
    as_json: bool,
) -> None:
    """Write one or more holding registers (0..65535) or coils (0/1) of one unit by address.

    Writes change a device's behaviour (set points, relays): it asks first unless --yes. Only
    addresses inside points marked `writable` in the config are written, unless --force. Every
    attempt is logged (who, where, what value) by the gateway, or by this command when it opens
    the port itself.
    """
    cfg = _modbus_config(config_path, bus_id)
    try:
        parsed = [_parse_value(v) for v in values]
    except click.BadParameter as err:
        fail(f"--value: {err.message}", EXIT_INVALID)
    if not yes and not click.confirm(
        f"write {parsed} to {table} {address} of unit {unit} on bus {bus_id}?", err=True
    ):
        fail("not written", EXIT_FAILED)
    params: dict[str, Any] = {"unit": unit, "table": table, "address": address, "raw": True}
    if (reply_unit := _reply_unit(cfg, bus_id, unit, reply_unit)) is not None:
        params["reply_unit"] = reply_unit
    params["values" if len(parsed) > 1 else "value"] = parsed if len(parsed) > 1 else parsed[0]
    if force:
        params["force"] = True
    result = _run_or_fail(_one(cfg, bus_id, "write", params))
    if as_json:
        print_json(result)
        return
    _common.console.print(
        f"[green]written[/]: unit {unit} {table} {address} = {result['values']} "
        f"(function {result['function']}, {result['route']})",
        highlight=False,
    )


# -- store -------------------------------------------------------------------------------------------


@diag.command("store")
@config_option
@json_option
def store_check(config_path: Path, as_json: bool) -> None:
    """Outbox health: SQLite quick integrity check, WAL size, rows and oldest age per lane.

    Read-only, safe while the gateway runs. Exits 1 when the file is missing or damaged.
    """
    from citynerve.gateway.commissioning.bundle import store_health
    from citynerve.gateway.config.sections import store_path

    try:  # only [store] is checked: a device table broken by an edit does not hide the outbox
        path = str(store_path(config_path))
    except ConfigError as err:
        print_config_issues(err)
        raise SystemExit(EXIT_INVALID) from None
    try:
        health = store_health(path)
    except GatewayError as err:
        if as_json:
            print_json({"healthy": False, "path": path, "error": str(err)})
            raise SystemExit(EXIT_FAILED) from None
        fail(str(err))
    if as_json:
        print_json(health)
    else:
        mark = "[green]ok[/]" if health["healthy"] else f"[red]{_common.esc(health['integrity'])}[/]"
        _common.console.print(f"outbox {_common.esc(health['path'])}: integrity {mark}", highlight=False)
        _common.console.print(
            f"file {health['file_bytes'] / 1e6:.2f} MB, WAL {health['wal_bytes'] / 1e6:.2f} MB, "
            f"schema v{health['schema_version']}, next seq {health['next_seq']}",
            highlight=False,
        )
        from rich.table import Table

        t = Table()
        for col in ("lane", "rows", "oldest", "dropped unsent"):  # every reason, not the size cap's alone
            t.add_column(col)
        for lane in health["lanes"]:
            age = lane["oldest_age_s"]
            t.add_row(
                lane["lane"], str(lane["rows"]), "-" if age is None else f"{age:.0f} s", str(lane["dropped"])
            )
        _common.console.print(t)
        if health.get("dropped_by"):
            by = ", ".join(f"{reason} {n}" for reason, n in sorted(health["dropped_by"].items()))
            _common.console.print(f"dropped unsent by reason: {by}", highlight=False, markup=False)
        if health.get("corrupt_copy"):
            line = _common.corrupt_copy_line(health["corrupt_copy"])
            _common.console.print(line, style="yellow", highlight=False, markup=False)
    if not health["healthy"]:
        raise SystemExit(EXIT_FAILED)


# -- bundle ------------------------------------------------------------------------------------------


@diag.command("bundle")
@config_option
@click.option(
    "-o",
    "--output",
    type=click.Path(dir_okay=False, path_type=Path),
    help="Archive to write (default: citynerve-bundle-<UTC time>.tar.gz here).",
)
@click.option("--log-file", type=click.Path(dir_okay=False, path_type=Path), help="Log file if no journald.")
@click.option(
    "--journal-lines",
    type=click.IntRange(1, 1_000_000),
    default=2000,
    show_default=True,
    help="Recent journal lines to include.",
)
@json_option
def bundle(
    config_path: Path, output: Path | None, log_file: Path | None, journal_lines: int, as_json: bool
) -> None:
    """Write a support archive (.tar.gz): config with secrets redacted, recent logs, store stats,
    versions, and the running gateway's status with bus error counters.

    Works with a broken config too (that is when support needs it). Exits 1 if it cannot be written.
    """
    from citynerve.gateway.commissioning.bundle import build_bundle

    if output is None:
        stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime())
        output = Path(f"citynerve-bundle-{stamp}.tar.gz")
    try:
        report = build_bundle(config_path, output, log_file=log_file, journal_lines=journal_lines)
    except OSError as err:  # BundleExistsError too: an existing file or a symlink is never reused
        fail(f"cannot write {output}: {err.strerror or err}")
    if as_json:
        print_json(report.to_dict())
        return
    _common.console.print(
        f"[green]wrote[/] {_common.esc(report.path)} ({len(report.members)} files)", highlight=False
    )
    for part, why in report.missing.items():
        _common.console.print(f"  [yellow]not included[/]: {_common.esc(f'{part}: {why}')}", highlight=False)
