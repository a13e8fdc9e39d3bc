"""`diag dlt645 probe --bus` on a live line through the running gateway: meters at 2400 baud behind a
line relay, the config at 9600. The probe names both settings, writes the fix through the safe config
editor, the gateway reloads, and the meters come online; `status` named the line before."""

from __future__ import annotations

import asyncio
import json
import textwrap
import tomllib
from pathlib import Path

from click.testing import CliRunner, Result

from citynerve.gateway.bus.probe import LineSettings
from citynerve.gateway.cli import main
from citynerve.gateway.commissioning.bussettings import set_bus_settings
from citynerve.gateway.config import load_config
from citynerve.hil.sim.serial import LineRelay, SerialMeterBus, SimDlt645Meter

from .conftest import run_gateway, wait_for

METERS = ("000000000161", "000000000162", "000000000163")


async def acli(*args: str) -> Result:
    return await asyncio.to_thread(lambda: CliRunner().invoke(main, list(args), catch_exceptions=False))


def meter_toml(port: str) -> str:
    text = textwrap.dedent(
        f"""\
        [gateway]
        id = "gw-probe-0001"
        org = {{ city = "320500", district = "320508", street = "320508001" }}

        [store]
        path = "var/outbox.db"

        [control]
        socket = "var/gw.sock"

        # the meter line in the basement
        [[buses]]
        id = "rs485-1"
        protocol = "dlt645"
        port = "{port}"
        baudrate = 9600  # from the old cabinet's label
        timeout_s = 0.3
        retries = 0
        offline_after = 2
        backoff_initial_s = 0.3
        min_poll_interval_s = 0.3  # the test polls fast
        backoff_max_s = 0.6
        """
    )
    for address in METERS:
        text += textwrap.dedent(
            f"""
            [[devices]]
            id = "em-{address[-3:]}"
            bus = "rs485-1"
            profile = "dlt645-single-phase"
            address = "{address}"
            poll_interval_s = 0.3
            location = {{ address_code = "320508001007" }}
            """
        )
    return text


def test_set_bus_settings_keeps_comments_and_adds_missing_keys(tmp_path: Path) -> None:
    text = meter_toml("/dev/ttyUSB0")
    new = set_bus_settings(text, "rs485-1", {"baudrate": 2400, "parity": "E"}, path=tmp_path / "g.toml")
    assert "baudrate = 2400  # from the old cabinet's label" in new
    assert 'id = "rs485-1"\nparity = "E"\n' in new
    assert "# the meter line in the basement" in new
    assert new.count("baudrate") == 1


def test_set_bus_settings_finds_a_bus_header_with_a_comment(tmp_path: Path) -> None:
    # `[[buses]]   # riser A` is a header (TOML allows the comment; `devices add` reads it so).
    text = meter_toml("/dev/ttyUSB0").replace("[[buses]]", "[[buses]]   # riser A, meter room", 1)
    assert "[[buses]]   # riser A, meter room\n" in text
    new = set_bus_settings(text, "rs485-1", {"baudrate": 2400, "parity": "E"}, path=tmp_path / "g.toml")
    assert "[[buses]]   # riser A, meter room\n" in new
    assert "baudrate = 2400  # from the old cabinet's label" in new and 'parity = "E"' in new
    tomllib.loads(new)


async def test_probe_through_the_running_gateway_writes_the_fix(short_dir: Path) -> None:
    meters = [SimDlt645Meter(a) for a in METERS]
    async with (
        SerialMeterBus(meters=meters, baudrate=2400) as sim,
        LineRelay([(sim.port, LineSettings(2400, "E", 1))]) as relay,
    ):
        path = short_dir / "gateway.toml"
        path.write_text(meter_toml(relay.port))
        config = load_config(path)
        async with run_gateway(config) as gw:

            async def line_named() -> bool:
                st = await gw.status()
                return bool(st["buses"][0]["verdict"]["cause"] == "line_silent")

            await wait_for(line_named, 30.0)
            r = await acli("status", "-c", str(path))
            assert "9600 8E1" in " ".join(r.output.split())
            r = await acli(
                "diag", "dlt645", "probe", "-c", str(path), "--bus", "rs485-1", "--bauds", "9600,4800,2400",
                "--write", "--yes", "--json",
            )  # fmt: skip
            assert r.exit_code == 0, r.output
            out = json.loads(r.stdout)
            assert out["route"] == "gateway"
            assert out["conclusion"] == "configured 9600 8E1, devices answer at 2400 8E1 (all devices answer)"
            assert "wrote 2400 8E1 to bus rs485-1" in r.stderr and "reloaded" in r.stderr
            assert "baudrate = 2400  # from the old cabinet's label" in path.read_text()

            async def online() -> bool:
                st = await gw.status()
                return all(d["state"] == "online" for d in st["buses"][0]["devices"])

            await wait_for(online, 30.0)


def rtu_toml(port: str) -> str:
    profiles = Path(__file__).resolve().parents[2] / "config" / "profiles"
    return f'profile_dirs = ["{profiles}"]\n' + textwrap.dedent(
        f"""\
        [gateway]
        id = "gw-probe-0002"
        org = {{ city = "320500", district = "320508", street = "320508001" }}

        [store]
        path = "var/outbox.db"

        [control]
        socket = "var/gw.sock"

        [[buses]]
        id = "rtu"
        protocol = "modbus_rtu"
        port = "{port}"
        baudrate = 9600
        timeout_s = 0.3
        retries = 0

        [[devices]]
        id = "wm-2"
        bus = "rtu"
        profile = "modbus-water-meter"
        address = 2
        location = {{ address_code = "320508001007" }}
        """
    )


async def test_modbus_scan_at_another_baud_rate_and_probe(short_dir: Path) -> None:
    from citynerve.hil.sim.modbus import SimDevice, SimProfile, serve_rtu

    async with LineRelay([(None, LineSettings(19200, "N", 1))]) as relay:
        server = await serve_rtu(
            [SimDevice(SimProfile.load("modbus-water-meter"), 2)], url=relay.device_ports[0]
        )
        try:
            path = short_dir / "gateway.toml"
            path.write_text(rtu_toml(relay.port))
            scan = (
                "diag",
                "modbus",
                "scan",
                "-c",
                str(path),
                "--bus",
                "rtu",
                "--to",
                "3",
                "--timeout",
                "0.2",
            )
            r = await acli(*scan, "--json")
            assert r.exit_code == 1 and json.loads(r.stdout)["answered"] == []  # 9600: nothing
            r = await acli(*scan, "--baud", "19200", "--json")
            assert r.exit_code == 0, r.output
            assert [a["unit"] for a in json.loads(r.stdout)["answered"]] == [2]
            r = await acli(
                "diag", "modbus", "probe", "-c", str(path), "--bus", "rtu", "--parities", "N", "--json"
            )
            assert r.exit_code == 0, r.output
            out = json.loads(r.stdout)
            assert (
                out["conclusion"] == "configured 9600 8N1, devices answer at 19200 8N1 (all devices answer)"
            )
            assert "baudrate = 9600" in path.read_text()  # not written without --write
        finally:
            await server.close()


async def test_probe_of_a_configured_bus_tries_the_parity_asked_after_the_configured_one(
    short_dir: Path,
) -> None:
    """`--parity E` with `--bus` (configured 9600 8N1, meters at 2400): at each rate the configured
    parity is tried first, then E, as the help now says (it said "Parity (default E)", read as the
    only parity tried). A pty cannot carry parity, so the meters answer at 2400 8N1 here."""
    meters = [SimDlt645Meter(a) for a in METERS]
    async with (
        SerialMeterBus(meters=meters, baudrate=2400) as sim,
        LineRelay([(sim.port, LineSettings(2400, "E", 1))]) as relay,
    ):
        path = short_dir / "gateway.toml"
        path.write_text(meter_toml(relay.port).replace("baudrate = 9600", 'baudrate = 9600\nparity = "N"'))
        r = await acli(
            "diag", "dlt645", "probe", "-c", str(path), "--bus", "rs485-1", "--bauds", "2400",
            "--parity", "E", "--json",
        )  # fmt: skip
        assert r.exit_code == 0, r.output
        out = json.loads(r.stdout)
        assert [t["settings"] for t in out["trials"]] == ["9600 8N1", "9600 8E1", "2400 8N1"]
    help_text = " ".join((await acli("diag", "dlt645", "probe", "--help")).output.split())
    assert "With --bus: the parity to try after the configured one, which is always tried first" in help_text
