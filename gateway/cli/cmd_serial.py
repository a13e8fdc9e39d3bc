"""`citynerve diag dlt645 | cjt188 ...`: commissioning RS-485 meters at the meter box.

Two ways to reach the line:
- `--bus ID` (with `-c CONFIG`): the configured bus, through the running gateway's bus owner when it
  runs (never two masters on one RS-485 line), else the port directly (`citynerve.gateway.diagbus`);
- `--port PATH` (with --baud/--parity): a laptop on a line no gateway config knows yet.
Drivers are found through the `citynerve.drivers` entry points. Exit 1 when the meter does not answer
or answers with an error, 2 for bad input.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from importlib.metadata import entry_points
from pathlib import Path
from typing import Any

import click
from pydantic import ValidationError
from rich.table import Table

from citynerve.gateway.api import ChannelError, DriverSpec, GatewayError, ListenDriver, PermanentError
from citynerve.gateway.cli._common import (
    EXIT_FAILED,
    EXIT_INVALID,
    FiniteRange,
    config_option,
    console,
    esc,
    fail,
    json_option,
    load_or_exit,
    print_json,
)
from citynerve.gateway.cli._groups import diag
from citynerve.gateway.cli._usage import configured_bus, dlt645_di, hex_byte, meter_address
from citynerve.gateway.diagbus import bus_diag


def _spec(protocol: str) -> DriverSpec:
    for ep in entry_points(group="citynerve.drivers"):
        if ep.name == protocol:
            try:
                spec = ep.load()
            except Exception as err:
                fail(f"driver {protocol!r} failed to load: {err}")
            if isinstance(spec, DriverSpec):
                return spec
    fail(f"no driver for protocol {protocol!r} is installed")


DIRECT_BUS = "cli"
"""The bus a --port command opens (no configured bus): its errors are said without that name."""


def _said(err: GatewayError) -> str:
    """An error's one line; a --port command's channel errors without the made-up bus name
    ("serial port /dev/ttyUSB9 not found ...", not "bus cli: serial port ...")."""
    if isinstance(err, ChannelError) and err.bus_id == DIRECT_BUS:
        return err.reason
    return str(err)


async def _direct(
    protocol: str, port: str, serial: dict[str, Any], timeout_s: float, action: str, params: dict[str, Any]
) -> dict[str, Any]:
    spec = _spec(protocol)
    try:
        bus = spec.bus_model.model_validate(
            {"id": DIRECT_BUS, "protocol": protocol, "timeout_s": timeout_s, "port": port, **serial}
        )
    except ValidationError as err:
        raise click.BadParameter(str(err.errors()[0]["msg"])) from err
    driver = spec.factory(bus, [])
    try:
        await driver.open()
        return await driver.diag(action, params)
    finally:
        await driver.close()


ADDRESS_DIGITS = {"dlt645": (12, "DL/T 645"), "cjt188": (14, "CJ/T 188")}


def _run(protocol: str, opts: dict[str, Any], action: str, params: dict[str, Any]) -> dict[str, Any]:
    """Run one diag action by --bus (config) or --port; turn typed errors into one line and an exit code.
    A `params["address"]` is checked first (its digits, or a device id of the bus): bad input is a
    usage error (exit 2) before the line is touched."""
    if bool(opts["bus_id"]) == bool(opts["port"]):
        raise click.UsageError("give either --bus (a configured bus) or --port (a serial port)")
    try:
        if opts["port"]:
            _check_address(protocol, params, set())
            serial = {"baudrate": opts["baud"], "parity": opts["parity"]}
            serial = {k: v for k, v in serial.items() if v is not None}
            return asyncio.run(_direct(protocol, opts["port"], serial, opts["timeout_s"], action, params))
        cfg = load_or_exit(opts["config_path"])
        bus = configured_bus(cfg, opts["bus_id"])
        if bus.protocol != protocol:
            fail(f"bus {bus.id} speaks {bus.protocol}, not {protocol}", EXIT_INVALID)
        _check_address(protocol, params, {d.id for d in cfg.devices if d.bus == bus.id})
        return asyncio.run(bus_diag(cfg, opts["bus_id"], action, params))
    except PermanentError as err:
        fail(str(err), EXIT_INVALID)
    except GatewayError as err:
        fail(_said(err), EXIT_FAILED)


def _check_address(protocol: str, params: dict[str, Any], device_ids: set[str]) -> None:
    if "address" in params and protocol in ADDRESS_DIGITS:
        digits, name = ADDRESS_DIGITS[protocol]
        meter_address(params["address"], digits=digits, protocol=name, device_ids=device_ids)


PROBE_BAUDS = (2400, 1200, 4800, 9600)


def _probe(
    protocol: str,
    port: str,
    parity: str | None,
    timeout_s: float,
    bauds: tuple[int, ...],
    params: dict[str, Any],
) -> dict[str, Any]:
    """read-address at each baud rate in turn until a meter answers (commissioning an unknown meter)."""
    tried: list[dict[str, Any]] = []
    for baud in bauds:
        serial = {"baudrate": baud, **({"parity": parity} if parity else {})}
        try:
            found = asyncio.run(_direct(protocol, port, serial, timeout_s, "read-address", params))
        except PermanentError as err:
            fail(str(err), EXIT_INVALID)
        except ChannelError as err:  # the port itself is missing or busy: other rates will not help
            fail(_said(err), EXIT_FAILED)
        except GatewayError as err:
            tried.append({"baudrate": baud, "error": str(err)})
            continue
        return {"baudrate": baud, **found, "tried": [t["baudrate"] for t in tried] + [baud]}
    return {"baudrate": None, "tried": tried}


def _bauds(text: str) -> tuple[int, ...]:
    try:
        bauds = tuple(int(b) for b in text.replace(" ", "").split(",") if b)
    except ValueError:
        raise click.BadParameter(
            f"{text!r}: expected baud rates like 2400,1200,4800", param_hint="--bauds"
        ) from None
    if not bauds or any(not 300 <= b <= 115200 for b in bauds):
        raise click.BadParameter(f"{text!r}: baud rates between 300 and 115200", param_hint="--bauds")
    return bauds


def _probe_command(group: click.Group, protocol: str, title: str) -> None:
    @group.command("probe")
    @click.option(
        "--port", help="Serial port, e.g. /dev/ttyUSB0 (one unknown meter; not while a gateway uses it)."
    )
    @click.option("--bus", "bus_id", help="A configured bus: probe its meters through the running gateway.")
    @click.option("--write", is_flag=True, help="With --bus: write the settings found to the config.")
    @click.option("--yes", is_flag=True, help="With --write: do not ask.")
    @config_option
    @click.option(
        "--bauds",
        default=",".join(map(str, PROBE_BAUDS)),
        show_default=True,
        help="Baud rates to try, in order (with --bus: after the configured one).",
    )
    @click.option(
        "--parity",
        type=click.Choice(["E", "N", "O"]),
        help="With --port: the line's parity (default E). With --bus: the parity to try after the "
        "configured one, which is always tried first (default: N, E and O).",
    )
    @click.option(
        "--timeout",
        "timeout_s",
        type=FiniteRange(0.05, 5),  # the probe action's own bound (gateway/bus/probe.py)
        default=0.5,
        show_default=True,
        help="Reply timeout per rate (s).",
    )
    @json_option
    def probe(
        port: str | None,
        bus_id: str | None,
        write: bool,
        yes: bool,
        config_path: Path,
        bauds: str,
        parity: str | None,
        timeout_s: float,
        as_json: bool,
    ) -> None:
        """Find the line settings: with --bus, the configured meters' baud rate x parity x stop bits
        (through the running gateway, which pauses polling; offers to write the fix); with --port,
        the baud rate of the only meter on an unconfigured line (read-address at each rate).

        Exits 1 when no setting gets an answer.
        """
        if bool(port) == bool(bus_id):
            raise click.UsageError("give either --bus (a configured bus) or --port (a serial port)")
        if bus_id:
            from citynerve.gateway.cli.cmd_probe import run_probe

            user_bauds = None if bauds == ",".join(map(str, PROBE_BAUDS)) else bauds
            run_probe(protocol, config_path, bus_id, user_bauds, parity, None, timeout_s, write, yes, as_json)
            return
        assert port is not None
        result = _probe(protocol, port, parity, timeout_s, _bauds(bauds), {})
        if as_json:
            print_json(result)
        elif result["baudrate"] is not None:
            _show(f"{title} found", result, False)
        if result["baudrate"] is None:
            if not as_json:
                tried = ", ".join(str(t["baudrate"]) for t in result["tried"])
                fail(f"no meter answered on {port} at {tried} baud")
            raise SystemExit(EXIT_FAILED)


def _line_options(f: Any) -> Any:
    for option in reversed(
        [
            config_option,
            click.option("--bus", "bus_id", help="Bus id from the config."),
            click.option("--port", help="Serial port instead of a configured bus, e.g. /dev/ttyUSB0."),
            click.option("--baud", type=click.IntRange(300, 115200), help="With --port (default 2400)."),
            click.option("--parity", type=click.Choice(["E", "N", "O"]), help="With --port (default E)."),
            click.option(
                "--timeout",
                "timeout_s",
                type=FiniteRange(0.05, 30),
                default=1.0,
                show_default=True,
                help="Reply timeout (s).",
            ),
            json_option,
        ]
    ):
        f = option(f)
    return f


def _show(title: str, result: dict[str, Any], as_json: bool) -> None:
    if as_json:
        print_json(result)
        return
    table = Table(title=title, show_header=False)
    for key, value in result.items():
        table.add_row(f"[bold]{esc(key)}[/]", esc(value))
    console.print(table)


# -- DL/T 645 ----------------------------------------------------------------------------------------


@diag.group("dlt645")
def dlt645_group() -> None:
    """DL/T 645 electricity meters: find a meter's address, read one data identifier (DI)."""


@dlt645_group.command("read-address")
@_line_options
def dlt645_read_address(**opts: Any) -> None:
    """Ask the only meter on the line for its address (function 13, AA..AA wildcard).

    Only valid with one meter connected: several meters would all answer at once.
    """
    result = _run("dlt645", opts, "read-address", {})
    _show("DL/T 645 meter", result, opts["as_json"])


@dlt645_group.command("read")
@_line_options
@click.option("--address", required=True, help="Meter address, 12 digits (as printed), or a device id.")
@click.option("--di", required=True, help="Data identifier, e.g. 00010000 (2007) or 9010 (1997).")
@click.option(
    "--meter-version", "version", type=click.Choice(["2007", "1997"]), default="2007", show_default=True
)
@click.option("--length", type=click.IntRange(1, 64), help="Bytes of a DI that is not in the built-in table.")
@click.option("--decimals", type=click.IntRange(0, 8), help="Implied decimals of that DI.")
@click.option("--signed/--unsigned", default=None, help="Top bit is a sign (BCD).")
@click.option("--format", "fmt", type=click.Choice(["bcd", "binary", "hex", "ascii"]), help="Value format.")
def dlt645_read(
    address: str,
    di: str,
    version: str,
    length: int | None,
    decimals: int | None,
    signed: bool | None,
    fmt: str | None,
    **opts: Any,
) -> None:
    """Read one DI of one meter and show the value with its unit."""
    di = dlt645_di(di)
    params = {
        "address": address,
        "di": di,
        "version": version,
        "length": length,
        "decimals": decimals,
        "signed": signed,
        "format": fmt,
    }
    result = _run("dlt645", opts, "read-di", {k: v for k, v in params.items() if v is not None})
    _show(f"DL/T 645 meter {address}", result, opts["as_json"])


_probe_command(dlt645_group, "dlt645", "DL/T 645 meter")


# -- CJ/T 188 ----------------------------------------------------------------------------------------


@diag.group("cjt188")
def cjt188_group() -> None:
    """CJ/T 188 water, gas and heat meters: find the address, read current values, open/close the valve."""


@cjt188_group.command("read-address")
@_line_options
@click.option(
    "--di-order",
    type=click.Choice(["901F", "1F90"]),
    default="901F",
    show_default=True,
    help="DI byte order the meter expects (2004 style 901F, 2018 style 1F90).",
)
def cjt188_read_address(di_order: str, **opts: Any) -> None:
    """Ask the only meter on the line for its address and type (03, DI 810A, AA..AA wildcard)."""
    result = _run("cjt188", opts, "read-address", {"di_order": di_order})
    _show("CJ/T 188 meter", result, opts["as_json"])


_type_option = click.option(
    "--type",
    "meter_type",
    default="10",
    show_default=True,
    help="Meter type byte in hex: 10 cold water, 11 hot water, 20 heat, 30 gas.",
)
_order_option = click.option(
    "--di-order",
    type=click.Choice(["901F", "1F90"]),
    default="901F",
    show_default=True,
    help="DI byte order (2004 style 901F, 2018 style 1F90).",
)


@cjt188_group.command("read")
@_line_options
@click.option("--address", required=True, help="Meter address, 14 digits, or a device id.")
@_type_option
@_order_option
def cjt188_read(address: str, meter_type: str, di_order: str, **opts: Any) -> None:
    """Read the meter's current values (901F): flows with units, meter time, valve, battery."""
    hex_byte(meter_type, param="--type", what="a CJ/T 188 meter type")
    result = _run(
        "cjt188", opts, "read", {"address": address, "meter_type": meter_type, "di_order": di_order}
    )
    _show(f"CJ/T 188 meter {address}", result, opts["as_json"])


@cjt188_group.command("valve")
@_line_options
@click.option("--address", required=True, help="Meter address, 14 digits, or a device id.")
@click.option("--state", type=click.Choice(["open", "close"]), required=True, help="Open or close the valve.")
@_type_option
@_order_option
def cjt188_valve(address: str, state: str, meter_type: str, di_order: str, **opts: Any) -> None:
    """Open or close a meter's valve (04, DI A017: 55 open, 99 close)."""
    hex_byte(meter_type, param="--type", what="a CJ/T 188 meter type")
    params = {"address": address, "state": state, "meter_type": meter_type, "di_order": di_order}
    result = _run("cjt188", opts, "valve", params)
    _show(f"CJ/T 188 meter {address}", result, opts["as_json"])


_probe_command(cjt188_group, "cjt188", "CJ/T 188 meter")


# -- fire panel --------------------------------------------------------------------------------------


@diag.group("firepanel")
def firepanel_group() -> None:
    """Fire alarm control panels: watch the printer port and see how each line is parsed."""


class _PrintSink:
    """Shows what the listener delivers, as it arrives."""

    def __init__(self, as_json: bool) -> None:
        self.as_json = as_json
        self.events = 0
        self.raw = 0

    def submit(self, batch: Any) -> None:
        for sample in batch.samples:
            if sample.point == "raw":
                self.raw += 1
                if self.as_json:
                    click.echo(json.dumps({"raw": sample.value}, ensure_ascii=False))
                else:
                    console.print(f"[dim]raw[/]   {sample.value}", highlight=False, markup=False)

    def event(self, event: Any) -> None:
        self.events += 1
        if self.as_json:
            record = {
                "kind": event.kind,
                "state": str(event.state),
                "severity": event.severity.name.lower(),  # named, as in status, alarms and json-v1
                "message": event.message,
                "attrs": event.attrs,
            }
            click.echo(json.dumps(record, ensure_ascii=False, default=str))
        else:
            colour = "bold red" if event.severity.name == "CRITICAL" else "yellow"
            console.print(
                f"[{colour}]{esc(event.kind)} {esc(event.state)}[/] {esc(event.message)} "
                f"[dim](panel time {esc(event.attrs.get('panel_time'))})[/]",
                highlight=False,
            )


async def _watch(
    port: str, serial: dict[str, Any], device: dict[str, Any], seconds: float, sink: _PrintSink
) -> None:
    spec = _spec("firepanel")
    try:
        bus = spec.bus_model.model_validate(
            {"id": DIRECT_BUS, "protocol": "firepanel", "port": port, **serial}
        )
        panel = spec.device_model.model_validate(
            {
                "id": "panel",
                "bus": DIRECT_BUS,
                "profile": "cli",
                "location": {"address_code": "000000"},
                "points": {"raw": {"field": "raw"}},
                **device,
            }
        )
    except ValidationError as err:
        first = err.errors()[0]
        raise click.BadParameter(f"{'.'.join(str(p) for p in first['loc'])}: {first['msg']}") from err
    driver = spec.factory(bus, [panel])
    try:
        await driver.open()
        if not isinstance(driver, ListenDriver):
            fail("the firepanel driver is not a listener", EXIT_FAILED)
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(driver.listen(sink), seconds if seconds > 0 else None)
    finally:
        await driver.close()


@firepanel_group.command("watch")
@click.option("--port", required=True, help="The panel's printer/CRT serial port, e.g. /dev/ttyUSB2.")
@click.option("--baud", type=click.IntRange(300, 115200), default=9600, show_default=True, help="Baud rate.")
@click.option("--parity", type=click.Choice(["E", "N", "O"]), default="N", show_default=True, help="Parity.")
@click.option("--model", "panel_model", default="gst", show_default=True, help="Panel parser plugin.")
@click.option("--encoding", default="gb18030", show_default=True, help="Text encoding of the print stream.")
@click.option(
    "--date-order",
    type=click.Choice(["ymd", "dmy", "mdy"]),
    default="ymd",
    show_default=True,
    help="Order of the panel's 2-digit-year dates.",
)
@click.option(
    "--seconds",
    type=FiniteRange(0, 86400),
    default=0,
    show_default=True,
    help="Stop after this long (0: until Ctrl-C).",
)
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object per record (JSON lines).")
def firepanel_watch(
    port: str,
    baud: int,
    parity: str,
    panel_model: str,
    encoding: str,
    date_order: str,
    seconds: float,
    as_json: bool,
) -> None:
    """Listen to a panel's printer port and show each record as the gateway parses it.

    Events (fire, smoke, faults, reset...) with their location text, and lines no parser knows
    (kept as raw). Use it to check a panel model's parser before adding the panel to a gateway.
    """
    sink = _PrintSink(as_json)
    device = {"address": "cli", "panel_model": panel_model, "encoding": encoding, "date_order": date_order}
    try:
        asyncio.run(_watch(port, {"baudrate": baud, "parity": parity}, device, seconds, sink))
    except KeyboardInterrupt:
        pass
    except GatewayError as err:
        fail(_said(err), EXIT_FAILED)
    if not as_json:
        console.print(f"{sink.events} events, {sink.raw} raw lines", highlight=False)
