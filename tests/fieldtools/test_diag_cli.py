"""`citynerve diag ...` against real peers: a pymodbus building over TCP, a pty serial line, a real
outbox file, and a running gateway (then diag must go through its bus owner)."""

from __future__ import annotations

import asyncio
import io
import json
import logging
import os
import tarfile
import tomllib
from pathlib import Path
from typing import Any

import pytest
import serial
from click.testing import CliRunner, Result
from serial.tools import list_ports

from citynerve.gateway.cli import main
from citynerve.gateway.config import GatewayConfig
from citynerve.gateway.control import ControlError, ask
from citynerve.gateway.diagbus import DiagRoute, DiagSession, UnknownBusError, bus_diag
from citynerve.gateway.logs import field
from citynerve.gateway.runtime import Gateway
from citynerve.gateway.store import AsyncOutbox, Lane
from citynerve.hil.sim.modbus import ModbusBuilding

from .conftest import gateway_toml


def cli(*args: str, input: str | None = None) -> Result:
    return CliRunner().invoke(main, list(args), input=input, catch_exceptions=False)


async def acli(*args: str) -> Result:
    # The CLI runs its own event loop: call it from a thread while the test's loop runs the gateway.
    return await asyncio.to_thread(cli, *args)


# -- the shared helper ------------------------------------------------------------------------------


async def test_bus_diag_opens_the_port_itself_when_no_gateway_runs(config: GatewayConfig) -> None:
    async with DiagSession(config, "tcp-1") as session:
        assert session.route is DiagRoute.DIRECT
        result = await session.run("read", {"unit": 2, "table": "holding", "address": 0, "count": 2})
    assert len(result["registers"]) == 2
    one_shot = await bus_diag(config, "tcp-1", "scan", {"first": 1, "last": 4})
    assert [a["unit"] for a in one_shot["answered"]] == [1, 2, 3]


async def test_bus_diag_goes_through_the_running_gateway(gateway: Gateway, config: GatewayConfig) -> None:
    before = gateway.owners["tcp-1"].counters.transactions
    async with DiagSession(config, "tcp-1") as session:
        assert session.route is DiagRoute.GATEWAY
        result = await session.run("scan", {"first": 10, "last": 14})
    assert [a["unit"] for a in result["answered"]] == [11, 12, 13]
    # The owner ran it between its polls (one master on the line); a direct open would not count.
    assert gateway.owners["tcp-1"].counters.transactions > before


async def test_bus_diag_unknown_bus(config: GatewayConfig) -> None:
    try:
        await bus_diag(config, "rs485-9", "scan", {})
    except UnknownBusError as err:
        assert err.bus_id == "rs485-9" and err.known == ["tcp-1"]
    else:
        raise AssertionError("expected UnknownBusError")


# -- diag modbus ------------------------------------------------------------------------------------


async def test_modbus_scan_table_and_json(config_path: Path, building: ModbusBuilding) -> None:
    building.silence(3)
    r = await acli("diag", "modbus", "scan", "-c", str(config_path), "--bus", "tcp-1", "--to", "16", "--json")
    assert r.exit_code == 0, r.output
    out = json.loads(r.output)
    assert out["route"] == "direct"
    assert [a["unit"] for a in out["answered"]] == [1, 2, 11, 12, 13]
    assert out["scanned"] == [1, 16]
    r = await acli(
        "diag", "modbus", "scan", "-c", str(config_path), "--bus", "tcp-1", "--from", "10", "--to", "12"
    )
    assert r.exit_code == 0
    assert "2 of 3 unit ids answered" in r.output
    assert "11" in r.output and "12" in r.output


async def test_modbus_scan_finding_nothing_fails(config_path: Path) -> None:
    r = await acli(
        "diag", "modbus", "scan", "-c", str(config_path), "--bus", "tcp-1", "--from", "200", "--to", "205"
    )
    assert r.exit_code == 1
    assert "0 of 6 unit ids answered" in r.output


async def test_modbus_read_decodes_and_write_round_trips(config_path: Path) -> None:
    r = await acli(
        "diag", "modbus", "read", "-c", str(config_path), "--bus", "tcp-1", "--unit", "1", "--table", "input",
        "--address", "0", "--type", "float32", "--json",
    )  # fmt: skip
    assert r.exit_code == 0, r.output
    out = json.loads(r.output)
    assert 200 < out["value"] < 260  # phase voltage of the simulated meter
    assert len(out["registers"]) == 2

    # A register write, then read back through the same path. No point is writable in this config:
    # --force (a technician commissioning a device the config does not describe yet).
    addr = "4"  # the water meter's velocity register: the simulator keeps what is written
    r = await acli(
        "diag", "modbus", "write", "-c", str(config_path), "--bus", "tcp-1", "--unit", "2",
        "--address", addr, "--value", "0x1234", "--yes", "--force", "--json",
    )  # fmt: skip
    assert r.exit_code == 0, r.output
    assert json.loads(r.output)["function"] == 6
    r = await acli(
        "diag", "modbus", "read", "-c", str(config_path), "--bus", "tcp-1", "--unit", "2",
        "--address", addr, "--json",
    )  # fmt: skip
    assert json.loads(r.output)["registers"] == [0x1234]


def _writable_velocity_config(short_dir: Path, building_endpoint: tuple[str, int]) -> Path:
    host, port = building_endpoint
    devices = (("wm-2", "modbus-water-meter", 2, "7", "2", "201"),)
    text = gateway_toml(
        host, port, devices=devices, rules=False, extra="[devices.points.velocity]\nwritable = true\n"
    )
    path = short_dir / "writable.toml"
    path.write_text(text)
    return path


async def test_raw_write_respects_writable_unless_forced_and_is_logged(
    short_dir: Path, building: ModbusBuilding, caplog: pytest.LogCaptureFixture
) -> None:
    path = _writable_velocity_config(short_dir, building.endpoint)
    args = ("diag", "modbus", "write", "-c", str(path), "--bus", "tcp-1", "--unit", "2", "--yes")
    # velocity is a writable float32 at 4..5: both registers may be written
    r = await acli(*args, "--address", "4", "--value", "1", "--value", "2")
    assert r.exit_code == 0, r.output
    # 8 is positive_total, not writable; 5..6 runs past the writable point
    for extra in (("--address", "8", "--value", "1"), ("--address", "5", "--value", "1", "--value", "2")):
        r = await acli(*args, *extra)
        assert r.exit_code == 1, r.output
        assert "raw write refused" in r.output and "--force" in r.output
    r = await acli(*args, "--address", "8", "--value", "7", "--force")
    assert r.exit_code == 0, r.output
    lines = [rec.getMessage() for rec in caplog.records if rec.name == "gateway.audit"]
    assert len(lines) == 4
    assert (
        lines[0].startswith("raw write by local user uid ")
        and "bus tcp-1 unit 2 holding 4 = [1, 2]: written" in (lines[0])
    )
    assert "holding 8 = 1: refused" in lines[1]
    assert "holding 8 = 7 (forced): written" in lines[3]


async def test_raw_write_through_the_gateway_needs_the_flag_and_is_logged(
    gateway: Gateway, config_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    sock = Path(gateway.config.control.socket)
    params = {"unit": 2, "table": "holding", "address": 4, "value": 9}
    with pytest.raises(ControlError, match="needs the explicit flag raw=true"):
        await ask(sock, "diag", bus="tcp-1", action="write", params=params)
    with pytest.raises(ControlError, match="not within points marked writable"):
        await ask(sock, "diag", bus="tcp-1", action="write", params={**params, "raw": True})
    done = await ask(sock, "diag", bus="tcp-1", action="write", params={**params, "raw": True, "force": True})
    assert done["values"] == [9]
    lines = [rec.getMessage() for rec in caplog.records if rec.name == "gateway.audit"]
    assert len(lines) == 3
    assert all(f"pid {os.getpid()} (control socket)" in line for line in lines)
    assert lines[0].endswith("refused (a raw write needs the explicit flag raw=true)")
    assert lines[2].endswith("holding 4 = 9 (forced): written")


def test_log_fields_cannot_forge_lines() -> None:
    assert field("wm-3") == "wm-3"
    assert field("wm-3\n12:00:00 ERROR fake") == "'wm-3\\n12:00:00 ERROR fake'"
    assert field("\x1b[2Jx") == "'\\x1b[2Jx'"
    assert len(field("x" * 10_000)) == 200
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    from citynerve.gateway.logs import _RedactingFormatter

    handler.setFormatter(_RedactingFormatter("%(levelname)s %(message)s"))
    logger = logging.getLogger("test.forge")
    logger.addHandler(handler)
    try:
        logger.warning("device %s", "d1\nERROR forged line")
    finally:
        logger.removeHandler(handler)
    assert stream.getvalue().count("\n") == 1 and "d1\\nERROR forged line" in stream.getvalue()


async def test_modbus_write_asks_first(config_path: Path) -> None:
    r = await asyncio.to_thread(
        lambda: CliRunner().invoke(
            main,
            ["diag", "modbus", "write", "-c", str(config_path), "--bus", "tcp-1", "--unit", "2",
             "--address", "5", "--value", "7"],
            input="n\n",
        )
    )  # fmt: skip
    assert r.exit_code == 1
    assert "not written" in r.output


async def test_modbus_commands_through_a_running_gateway(gateway: Gateway, config_path: Path) -> None:
    r = await acli("diag", "modbus", "scan", "-c", str(config_path), "--bus", "tcp-1", "--to", "12", "--json")
    assert r.exit_code == 0, r.output
    out = json.loads(r.output)
    assert out["route"] == "gateway"
    assert [a["unit"] for a in out["answered"]] == [1, 2, 3, 11, 12]
    r = await acli(
        "diag", "modbus", "read", "-c", str(config_path), "--bus", "tcp-1", "--unit", "11", "--address", "0",
        "--json",
    )  # fmt: skip
    assert json.loads(r.output)["route"] == "gateway"


def test_bad_input_is_one_line(config_path: Path) -> None:
    r = cli("diag", "modbus", "scan", "-c", str(config_path), "--bus", "nope")
    assert r.exit_code == 2  # bad input (it was 1, a failed check)
    assert "--bus: no bus 'nope'" in r.output and "Traceback" not in r.output
    r = cli(
        "diag", "modbus", "read", "-c", str(config_path), "--bus", "nope", "--unit", "1", "--address", "0"
    )
    assert r.exit_code == 2 and "--bus: no bus 'nope'" in r.output
    r = cli("diag", "line", "-c", str(config_path), "--bus", "nope")
    assert r.exit_code == 2 and "--bus: no bus 'nope'" in r.output
    r = cli("diag", "modbus", "scan", "-c", str(config_path), "--bus", "tcp-1", "--from", "9", "--to", "3")
    assert r.exit_code == 2
    r = cli("diag", "modbus", "write", "-c", str(config_path), "--bus", "tcp-1", "--unit", "1", "--address",
            "0", "--value", "lots", "--yes")  # fmt: skip
    assert r.exit_code == 2 and "not an integer" in r.output


def _rtu_config(short_dir: Path, port: str) -> Path:
    text = gateway_toml("127.0.0.1", 1, devices=(), rules=False)
    text += f'\n[[buses]]\nid = "rs485-1"\nprotocol = "modbus_rtu"\nport = "{port}"\nbaudrate = 9600\n'
    path = short_dir / "rtu.toml"
    path.write_text(text)
    return path


def test_missing_serial_port_is_one_clear_line(short_dir: Path) -> None:
    path = _rtu_config(short_dir, "/dev/ttyUSB-does-not-exist")
    r = cli("diag", "modbus", "scan", "-c", str(path), "--bus", "rs485-1", "--to", "2")
    assert r.exit_code == 1
    lines = [line for line in r.output.splitlines() if line.strip()]
    assert len(lines) == 1 and "ttyUSB-does-not-exist" in lines[0], r.output


def test_serial_port_in_use_is_one_clear_line(short_dir: Path) -> None:
    master, slave = os.openpty()
    try:
        name = os.ttyname(slave)
        holder = serial.Serial(name, exclusive=True)  # type: ignore[attr-defined]  # another program holds the adapter
        try:
            path = _rtu_config(short_dir, name)
            r = cli("diag", "modbus", "scan", "-c", str(path), "--bus", "rs485-1", "--to", "2")
        finally:
            holder.close()
    finally:
        os.close(master)
        os.close(slave)
    assert r.exit_code == 1
    lines = [line for line in r.output.splitlines() if line.strip()]
    assert len(lines) == 1 and "in use" in lines[0], r.output


# -- diag ports -------------------------------------------------------------------------------------


def test_ports_lists_what_pyserial_sees() -> None:
    r = cli("diag", "ports", "--json")
    expected = sorted(p.device for p in list_ports.comports())
    assert [p["device"] for p in json.loads(r.output)["ports"]] == expected
    assert r.exit_code == (0 if expected else 1)


# -- diag store -------------------------------------------------------------------------------------


async def _filled_store(config: GatewayConfig) -> None:
    from citynerve.gateway.api import Reading

    async with AsyncOutbox(Path(config.store.path), synchronous="normal") as ob:
        await ob.append(
            [Reading("wm-2", "flow_rate", float(i), "m3/h", 1_790_000_000.0 + i) for i in range(5)], []
        )


async def test_store_health(config: GatewayConfig, config_path: Path) -> None:
    r = await acli("diag", "store", "-c", str(config_path), "--json")
    assert r.exit_code == 1  # no outbox yet
    assert json.loads(r.output)["healthy"] is False
    await _filled_store(config)
    r = await acli("diag", "store", "-c", str(config_path), "--json")
    assert r.exit_code == 0, r.output
    out = json.loads(r.output)
    assert out["integrity"] == "ok" and out["healthy"] is True
    telemetry = next(lane for lane in out["lanes"] if lane["lane"] == "telemetry")
    assert telemetry["rows"] == 5 and telemetry["oldest_age_s"] > 0
    r = await acli("diag", "store", "-c", str(config_path))
    assert r.exit_code == 0 and "integrity ok" in r.output


async def test_store_health_names_why_rows_were_dropped(config: GatewayConfig, config_path: Path) -> None:
    # Field session: 3,512 readings evicted on a full disk were listed as "dropped by size cap".
    await _filled_store(config)
    async with AsyncOutbox(Path(config.store.path), synchronous="normal") as ob:
        (row,) = await ob.peek(Lane.TELEMETRY, limit=1)
        assert await ob.drop_too_large(Lane.TELEMETRY, row.seq) == 1
    r = await acli("diag", "store", "-c", str(config_path))
    assert r.exit_code == 0, r.output
    assert "size cap" not in r.output and "dropped unsent by reason: too_large 1" in r.output


def _scribble(db: Path) -> None:
    """Damage b-tree pages of a closed outbox, as a failing SD card would."""
    for suffix in ("-wal", "-shm"):
        Path(str(db) + suffix).unlink(missing_ok=True)
    data = bytearray(db.read_bytes())
    for i in range(4096 + 100, min(len(data), 4096 * 3), 7):
        data[i] = 0xA5
    db.write_bytes(bytes(data))


async def test_store_damage_is_reported(config: GatewayConfig, config_path: Path) -> None:
    await _filled_store(config)
    _scribble(Path(config.store.path))
    r = await acli("diag", "store", "-c", str(config_path), "--json")
    assert r.exit_code == 1
    out = json.loads(r.output)
    assert out["healthy"] is False
    assert "malformed" in out.get("error", "") + out.get("integrity", "")


# -- diag bundle ------------------------------------------------------------------------------------


def _members(path: Path) -> dict[str, bytes]:
    with tarfile.open(path) as tar:
        return {m.name: tar.extractfile(m).read() for m in tar.getmembers() if m.isfile()}  # type: ignore[union-attr]


SECRET_EXTRA = """
[upstream]
brokers = ["mqtts://platform.example:8883"]
username = "gw-test-0001"
password_file = "/etc/citynerve/secret-broker-password"
[upstream.commands]
enabled = true
hmac_key_file = "/etc/citynerve/hmac.key"
"""


async def test_bundle_redacts_secrets_and_holds_status(
    gateway: Gateway, config_path: Path, short_dir: Path
) -> None:
    out = short_dir / "bundle.tar.gz"
    # The running gateway uses the plain config; the bundle reads a copy with secrets in it.
    secret_cfg = short_dir / "secret.toml"
    await asyncio.to_thread(secret_cfg.write_text, config_path.read_text() + SECRET_EXTRA)  # noqa: ASYNC240
    r = await acli("diag", "bundle", "-c", str(secret_cfg), "-o", str(out), "--json")
    assert r.exit_code == 0, r.output
    members = _members(out)
    config_text = members["config/gateway.toml"].decode()
    assert "secret-broker-password" not in config_text and "hmac.key" not in config_text
    assert "<redacted>" in config_text
    assert 'username = "gw-test-0001"' in config_text  # not a secret: support needs it
    parsed = tomllib.loads(config_text.split("\n# config check:")[0])
    assert parsed["upstream"]["password_file"] == "<redacted>"
    versions = json.loads(members["versions.json"])
    assert versions["packages"]["pymodbus"].startswith("3.11")
    manifest = json.loads(members["manifest.json"])
    assert set(manifest["members"]) <= set(members)
    assert oct(out.stat().st_mode & 0o777) == "0o600"


async def test_bundle_of_the_running_gateway(gateway: Gateway, config_path: Path, short_dir: Path) -> None:
    out = short_dir / "b.tar.gz"
    await asyncio.sleep(1.0)  # a few polls
    r = await acli("diag", "bundle", "-c", str(config_path), "-o", str(out), "--json")
    assert r.exit_code == 0, r.output
    members = _members(out)
    status: dict[str, Any] = json.loads(members["status.json"])
    bus = status["buses"][0]
    assert bus["id"] == "tcp-1" and bus["counters"]["transactions"] > 0  # bus error counters
    stats = json.loads(members["store/stats.json"])
    assert stats["integrity"] == "ok"


async def test_bundle_of_a_config_invalid_elsewhere_still_holds_status_and_store(
    gateway: Gateway, config_path: Path
) -> None:
    # `status` reads only [control], so it answers with this config; the bundle must find the running
    # gateway (and its outbox) the same way instead of leaving both out.
    broken = config_path.with_name("invalid.toml")  # same folder: the same relative socket and outbox
    text = await asyncio.to_thread(config_path.read_text)
    await asyncio.to_thread(
        broken.write_text, text.replace("poll_interval_s = 0.5", 'poll_interval_s = "abc"', 1)
    )
    assert (await acli("status", "-c", str(broken))).exit_code == 0
    out = config_path.with_name("invalid.tar.gz")
    r = await acli("diag", "bundle", "-c", str(broken), "-o", str(out), "--json")
    assert r.exit_code == 0, r.output
    members = _members(out)
    assert json.loads(members["status.json"])["buses"][0]["id"] == "tcp-1"
    assert json.loads(members["store/stats.json"])["integrity"] == "ok"
    assert "poll_interval_s" in members["config/gateway.toml"].decode()  # the check's issues, redacted
    report = json.loads(r.output)
    assert "status" not in report["missing"] and "store" not in report["missing"]
    assert "config_check" in report["missing"]


def test_bundle_of_a_broken_config_still_works_and_leaves_the_config_out(short_dir: Path) -> None:
    broken = short_dir / "broken.toml"
    # Not TOML, secrets spelled in ways no line pattern would guess.
    broken.write_text('[gateway\nid = "x"\n"mqtt pw" = "hunter2"\nbrokers = [mqtt://u:zebra9@h]\nq=abc\n')
    out = short_dir / "broken.tar.gz"
    r = cli("diag", "bundle", "-c", str(broken), "-o", str(out), "--json")
    assert r.exit_code == 0, r.output
    members = _members(out)
    assert "config/gateway.toml" not in members
    for data in members.values():
        assert b"hunter2" not in data and b"zebra9" not in data and b"abc" not in data
    report = json.loads(r.output)
    assert "not valid TOML" in report["missing"]["config"] and "left out" in report["missing"]["config"]
    assert "store" in report["missing"] and "status" in report["missing"]
    manifest = json.loads(members["manifest.json"])
    assert "left out" in manifest["missing"]["config"]


def test_bundle_refuses_an_existing_file_and_a_symlink(config_path: Path, short_dir: Path) -> None:
    existing = short_dir / "planted.tar.gz"
    existing.write_bytes(b"someone else's file")
    r = cli("diag", "bundle", "-c", str(config_path), "-o", str(existing))
    assert r.exit_code == 1 and "exists already" in r.output and "Traceback" not in r.output
    assert existing.read_bytes() == b"someone else's file"
    victim = short_dir / "victim"
    victim.write_bytes(b"precious")
    link = short_dir / "link.tar.gz"
    link.symlink_to(victim)
    r = cli("diag", "bundle", "-c", str(config_path), "-o", str(link))
    assert r.exit_code == 1 and "symlink" in r.output
    assert victim.read_bytes() == b"precious"
    dangling = short_dir / "dangling.tar.gz"
    dangling.symlink_to(short_dir / "would-be-created")
    r = cli("diag", "bundle", "-c", str(config_path), "-o", str(dangling))
    assert r.exit_code == 1 and not (short_dir / "would-be-created").exists()
    fresh = short_dir / "fresh.tar.gz"
    assert cli("diag", "bundle", "-c", str(config_path), "-o", str(fresh)).exit_code == 0
    assert fresh.stat().st_mode & 0o777 == 0o600


def test_bundle_cannot_write_is_one_line(config_path: Path) -> None:
    r = cli("diag", "bundle", "-c", str(config_path), "-o", "/proc/no/such/dir/b.tar.gz")
    assert r.exit_code == 1
    assert "cannot write" in r.output and "Traceback" not in r.output
