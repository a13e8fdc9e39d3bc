"""`citynerve diag decode` and `citynerve diag dlt645|cjt188`: help, JSON, exit codes, real meters
(simulated on a pty; the CLI runs as a real subprocess)."""

from __future__ import annotations

import asyncio
import json
import sys
from pathlib import Path

import pytest
import serial
from click.testing import CliRunner

from citynerve.drivers.dlt645 import codec
from citynerve.gateway.cli import main
from citynerve.hil.sim.serial import FirePanelStream, SerialMeterBus, SimCjt188Meter, SimDlt645Meter

CITYNERVE = str(Path(sys.executable).with_name("citynerve"))
ENERGY_REPLY = "68 61 01 00 00 00 00 68 91 08 33 33 34 33 59 33 33 33 8A 16"


def invoke(*args: str) -> tuple[int, str]:
    result = CliRunner().invoke(main, list(args))
    return result.exit_code, result.output


def test_decode_help_names_kinds() -> None:
    code, out = invoke("diag", "decode", "--help")
    assert code == 0 and "modbus-rtu, dlt645, cjt188 or bthome" in out and "--json" in out


def test_decode_dlt645_json_and_rich() -> None:
    code, out = invoke("diag", "decode", "dlt645", ENERGY_REPLY, "--json")
    doc = json.loads(out)
    assert code == 0 and doc["valid"] and doc["value"] == 0.26 and doc["unit"] == "kWh"
    assert doc["checksum"] == {"expected": "8A", "found": "8A", "ok": True} and doc["di"] == "00010000"
    code, out = invoke("diag", "decode", "dlt645", *ENERGY_REPLY.split())
    assert code == 0 and "forward active total energy" in out and "kWh" in out


def test_decode_bad_checksum_exits_1_with_verdict() -> None:
    code, out = invoke("diag", "decode", "dlt645", ENERGY_REPLY.replace("8A 16", "8B 16"), "--json")
    doc = json.loads(out)
    assert (
        code == 1 and not doc["valid"] and doc["checksum"] == {"expected": "8A", "found": "8B", "ok": False}
    )


def test_decode_cjt188_and_options() -> None:
    code, out = invoke(
        "diag", "decode", "cjt188", "68 10 12 00 00 00 00 00 00 01 03 90 1F 00 3D 16", "--json"
    )
    assert code == 0 and json.loads(out)["di_name"] == "current readings"
    code, out = invoke(
        "diag",
        "decode",
        "dlt645",
        codec.build_reply("000000000161", 0x01, bytes.fromhex("10 90 00 90 00 00")).hex(" "),
        "--version",
        "1997",
        "--json",
    )
    doc = json.loads(out)
    assert code == 0 and doc["version"] == "1997" and doc["di"] == "9010" and doc["value"] == 90.0


def test_decode_modbus_and_bthome_through_entry_points() -> None:
    code, out = invoke("diag", "decode", "modbus-rtu", "01 03 00 00 00 02 C4 0B", "--json")
    assert code == 0 and json.loads(out)["crc"]["ok"] is True
    code, out = invoke("diag", "decode", "bthome", "40 02 C4 09", "--json")  # temperature 25.00 °C
    assert code == 0, out


@pytest.mark.parametrize(
    ("args", "code", "text"),
    [
        (("dlt645", "68 6Z"), 2, "not a hex digit"),
        (("dlt645", "686"), 2, "odd number"),
        (("nosuch", "68"), 2, "no decoder 'nosuch'"),
        (("dlt645", "68 01"), 1, "not a valid dlt645 frame"),
        (("dlt645", "68", "-o", "bad"), 2, "KEY=VALUE"),
    ],
)
def test_decode_bad_input_one_line(args: tuple[str, ...], code: int, text: str) -> None:
    got, out = invoke("diag", "decode", *args)
    assert got == code and text in out and "Traceback" not in out


async def cli(*args: str) -> tuple[int, str, str]:
    """The CLI in a worker thread (its own asyncio.run) while the simulator runs on this loop."""

    def run() -> tuple[int, str, str]:
        result = CliRunner().invoke(main, list(args))
        return result.exit_code, result.stdout, result.stderr

    return await asyncio.to_thread(run)


async def cli_process(*args: str) -> tuple[int, str, str]:
    """The installed `citynerve` command as a real process."""
    proc = await asyncio.create_subprocess_exec(
        CITYNERVE, *args, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE
    )
    out, err = await asyncio.wait_for(proc.communicate(), 60)
    return proc.returncode or 0, out.decode(), err.decode()


async def test_dlt645_commands_on_a_port() -> None:
    meter = SimDlt645Meter("000000000161", values={0x00010000: 0.26})
    async with SerialMeterBus(meters=[meter]) as bus:
        code, out, err = await cli("diag", "dlt645", "read-address", "--port", bus.port, "--json")
        assert code == 0, err
        assert json.loads(out)["address"] == "000000000161"
        code, out, err = await cli(
            "diag",
            "dlt645",
            "read",
            "--port",
            bus.port,
            "--address",
            "000000000161",
            "--di",
            "00010000",
            "--json",
        )
        assert code == 0, err
        assert json.loads(out) == {
            "address": "000000000161",
            "di": "00010000",
            "name": "forward active total energy",
            "value": 0.26,
            "unit": "kWh",
        }
        code, out, err = await cli(
            "diag",
            "dlt645",
            "read",
            "--port",
            bus.port,
            "--address",
            "000000000999",
            "--di",
            "00010000",
            "--timeout",
            "0.2",
        )
        assert code == 1 and "no answer" in err and "Traceback" not in err


async def test_cjt188_commands_on_a_port() -> None:
    meter = SimCjt188Meter("00000000000012", flow_m3=5.5)
    async with SerialMeterBus(meters=[meter]) as bus:
        code, out, err = await cli("diag", "cjt188", "read-address", "--port", bus.port, "--json")
        assert code == 0, err
        assert json.loads(out)["address"] == "00000000000012"
        code, out, err = await cli(
            "diag",
            "cjt188",
            "valve",
            "--port",
            bus.port,
            "--address",
            "00000000000012",
            "--state",
            "close",
            "--json",
        )
        assert code == 0, err
        assert meter.valve == "closed"
        code, out, err = await cli(
            "diag", "cjt188", "read", "--port", bus.port, "--address", "00000000000012"
        )
        assert code == 0 and "5.5" in out and "closed" in out


@pytest.mark.parametrize("protocol", ["cjt188", "dlt645"])
async def test_read_address_with_two_meters_on_the_line_says_several_may_have_answered(protocol: str) -> None:
    """Two meters answer the wildcard at once and their replies collide: the error says that more
    than one meter may have answered (it said only 'checksum mismatch: expected 8E, found 10')."""
    meters: list[SimCjt188Meter | SimDlt645Meter] = (
        [SimCjt188Meter("00000000000012"), SimCjt188Meter("00000000000013")]
        if protocol == "cjt188"
        else [SimDlt645Meter("000000000161"), SimDlt645Meter("000000000162")]
    )
    async with SerialMeterBus(meters=meters) as bus:
        code, _, err = await cli("diag", protocol, "read-address", "--port", bus.port, "--timeout", "0.5")
    assert code == 1, err
    text = " ".join(err.split())
    assert "more than one meter may have answered the wildcard address" in text, text
    assert "read-address is for one meter on the line" in text and "Traceback" not in text


async def test_serial_command_bad_input() -> None:
    code, _, err = await cli_process("diag", "dlt645", "read-address")
    assert code == 2 and "either --bus" in err
    code, _, err = await cli("diag", "dlt645", "read-address", "--port", "/nonexistent/ttyUSB9")
    assert code == 1 and "serial port /nonexistent/ttyUSB9 not found" in err and "Traceback" not in err
    code, _, err = await cli(
        "diag", "dlt645", "read", "--port", "/nonexistent/ttyUSB9", "--address", "12", "--di", "00010000"
    )
    assert code != 0 and "Traceback" not in err


async def test_meter_commands_through_a_configured_bus(tmp_path: Path) -> None:
    """`--bus` with `-c`: the bus and its devices come from the config (no gateway running, so the
    command opens the port itself); a device id works in place of the address."""
    meter = SimDlt645Meter("000000000161", values={0x02010100: 231.4})
    async with SerialMeterBus(meters=[meter]) as bus:
        text = (Path(__file__).parent / "data" / "building-meters.toml").read_text(encoding="utf-8")
        config = tmp_path / "gateway.toml"
        config.write_text(text.replace('"/dev/ttyUSB0"', f'"{bus.port}"'), encoding="utf-8")
        code, out, err = await cli(
            "diag",
            "dlt645",
            "read",
            "-c",
            str(config),
            "--bus",
            "rs485-power",
            "--address",
            "em-incomer",
            "--di",
            "02010100",
            "--json",
        )
        assert code == 0, err
        assert json.loads(out)["value"] == 231.4
        code, out, err = await cli(
            "diag", "dlt645", "read-address", "-c", str(config), "--bus", "rs485-power"
        )
        assert code == 2 and "only valid with one meter" in err  # three meters configured on that bus
        code, out, err = await cli(
            "diag", "cjt188", "read-address", "-c", str(config), "--bus", "rs485-power"
        )
        assert code == 2 and "not cjt188" in err


@pytest.mark.parametrize(
    ("args", "says"),
    [
        (
            ("dlt645", "read", "--address", "161", "--di", "00010000"),
            "--address: a DL/T 645 address is 12 digits",
        ),
        (
            ("dlt645", "read", "--address", "em-incomer", "--di", "0001ZZ00"),
            "--di: a DL/T 645 DI is 8 hex digits",
        ),
        (("cjt188", "read", "--address", "123"), "--address: a CJ/T 188 address is 14 digits"),
        (("cjt188", "read", "--address", "00000000000012", "--type", "ZZ"), "--type: a CJ/T 188 meter type"),
    ],
)
async def test_bad_input_through_a_configured_bus_is_exit_2_in_the_fields_words(
    tmp_path: Path, args: tuple[str, ...], says: str
) -> None:
    """Checked before the line is touched (its port does not exist here: touching it is exit 1,
    'serial port ... not found'), whichever route: exit 2 and the option's own words, not pydantic's
    pattern or int()'s 'invalid literal' (it was exit 1 through a running gateway)."""
    text = (Path(__file__).parent / "data" / "building-meters.toml").read_text(encoding="utf-8")
    config = tmp_path / "gateway.toml"
    for n in range(3):  # ports that do not exist
        text = text.replace(f'"/dev/ttyUSB{n}"', f'"{tmp_path / f"ttyUSB{n + 7}"}"')
    config.write_text(text, encoding="utf-8")
    bus = "rs485-power" if args[0] == "dlt645" else "rs485-water"
    code, _, err = await cli("diag", *args, "-c", str(config), "--bus", bus)
    assert code == 2, err
    assert err.startswith(f"error: {says}") and err.strip().count("\n") == 0, err
    assert "pattern" not in err and "invalid literal" not in err


@pytest.mark.parametrize(
    "args",
    [
        ("dlt645", "read", "--address", "000000000161", "--di", "zz"),
        ("dlt645", "read", "--address", "12", "--di", "00010000"),
        ("dlt645", "read", "--address", "000000000161", "--di", "04000B99"),
        ("cjt188", "read", "--address", "00000000000012", "--type", "ZZ"),
        ("cjt188", "read", "--address", "123"),
    ],
)
async def test_bad_meter_requests_one_line_exit_2(args: tuple[str, ...]) -> None:
    async with SerialMeterBus(meters=[SimDlt645Meter("000000000161")]) as bus:
        code, _, err = await cli("diag", *args, "--port", bus.port)
    assert code == 2, err
    assert err.startswith("error:") and err.strip().count("\n") == 0 and "Traceback" not in err, err


async def test_probe_finds_the_baud_rate() -> None:
    meter = SimDlt645Meter("000000000161")
    async with SerialMeterBus(meters=[meter], baudrate=4800, enforce_baud=True) as bus:
        code, out, err = await cli(
            "diag", "dlt645", "probe", "--port", bus.port, "--timeout", "0.1", "--json"
        )
        assert code == 0, err
        found = json.loads(out)
        assert found["baudrate"] == 4800 and found["address"] == "000000000161"
        assert found["tried"] == [2400, 1200, 4800]
        code, out, err = await cli(
            "diag", "dlt645", "probe", "--port", bus.port, "--timeout", "0.1", "--bauds", "2400,9600"
        )
        assert code == 1 and "no meter answered" in err
    water = SimCjt188Meter("00000000000012")
    async with SerialMeterBus(meters=[water], baudrate=1200, enforce_baud=True) as bus:
        code, out, err = await cli(
            "diag", "cjt188", "probe", "--port", bus.port, "--timeout", "0.1", "--json"
        )
        assert code == 0 and json.loads(out)["baudrate"] == 1200, err
    code, out, err = await cli("diag", "dlt645", "probe", "--port", "/nonexistent/tty", "--bauds", "x")
    assert code == 2 and "baud rates" in err


async def test_firepanel_watch_shows_parsed_records() -> None:
    async with FirePanelStream() as panel:
        task = asyncio.create_task(
            cli("diag", "firepanel", "watch", "--port", panel.port, "--seconds", "2", "--json")
        )
        await asyncio.sleep(1.0)  # the port is open by now; a printer port drops what came before
        await panel.alarm(4, 4, location="一层大厅东侧")
        await panel.line("GST200 V2.31")
        code, out, err = await task
    assert code == 0, err
    lines = [json.loads(line) for line in out.splitlines()]
    assert lines[0]["kind"] == "smoke" and lines[0]["attrs"]["location_text"] == "一层大厅东侧"
    # severity and state by name in lower case, as in status, the alarm views and json-v1
    assert (lines[0]["state"], lines[0]["severity"]) == ("raised", "critical")
    assert {"raw": "GST200 V2.31"} in lines
    code, _, err = await cli("diag", "firepanel", "watch", "--port", "/nonexistent/tty", "--seconds", "1")
    assert code == 1 and "serial port /nonexistent/tty not found (is the adapter plugged in?)" in err
    assert "bus cli" not in err  # a --port command has no configured bus to name
    code, _, err = await cli("diag", "firepanel", "watch", "--port", "/dev/null", "--model", "acme")
    assert code == 2 and "unknown panel model" in err


@pytest.mark.parametrize("protocol", ["dlt645", "cjt188", "modbus"])
async def test_a_serial_port_missing_or_held_is_said_in_one_wording_for_every_bus(
    tmp_path: Path, protocol: str
) -> None:
    """A missing port showed pyserial's doubled text ('[Errno 2] could not open port ...: [Errno 2]
    No such file ...'), a meter line held by another program its 'Could not exclusively lock'; Modbus
    said 'in use by another program'. One wording now, whatever the protocol."""
    missing = tmp_path / "ttyUSB9"
    async with SerialMeterBus() as line:

        def command(port: Path | str) -> tuple[str, ...]:
            if protocol != "modbus":
                return ("diag", protocol, "read-address", "--port", str(port), "--timeout", "0.2")
            config = tmp_path / "gw.toml"
            config.write_text(
                '[gateway]\nid = "gw-1"\n'
                'org = { city = "310100", district = "310106", street = "310106013" }\n'
                f'[control]\nsocket = "{tmp_path}/gw.sock"\n'
                f'[[buses]]\nid = "rs485-1"\nprotocol = "modbus_rtu"\nport = "{port}"\n'
            )
            return ("diag", "modbus", "scan", "-c", str(config), "--bus", "rs485-1", "--to", "1")

        code, _, err = await cli_process(*command(missing))
        text = " ".join(err.split())
        assert code == 1 and f"serial port {missing} not found (is the adapter plugged in?)" in text, text
        assert "Errno" not in text and "could not open port" not in text and "bus cli" not in text, text
        holder = serial.serial_for_url(line.port, exclusive=True)  # another program holds it
        try:
            code, _, err = await cli_process(*command(line.port))
        finally:
            holder.close()
        text = " ".join(err.split())
        assert code == 1 and f"serial port {line.port} is in use by another program" in text, text
        assert "exclusively lock" not in text and "Errno" not in text, text
