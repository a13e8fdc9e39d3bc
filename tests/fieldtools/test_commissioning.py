"""`citynerve init` and `citynerve devices`: configs written from flags or prompts, devices found on a
simulated building and added with fitting profiles, safe edits, reload of a running gateway."""

from __future__ import annotations

import asyncio
import contextlib
import json
import tomllib
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner, Result
from hypothesis import given
from hypothesis import strategies as st

from citynerve.gateway.cli import main
from citynerve.gateway.commissioning import BusSpecError, dump_toml, parse_bus_spec
from citynerve.gateway.commissioning.redact import REDACTED, redact_config
from citynerve.gateway.config import load_config
from citynerve.gateway.runtime import Gateway
from citynerve.hil.sim.modbus import ModbusBuilding

from .conftest import PROFILES, wait_for


def cli(*args: str, input: str | None = None) -> Result:
    return CliRunner().invoke(main, list(args), input=input, catch_exceptions=False)


async def acli(*args: str, input: str | None = None) -> Result:
    return await asyncio.to_thread(cli, *args, input=input)


IDENTITY = (
    "--gateway-id",
    "gw-310106-0007",
    "--city",
    "310100",
    "--district",
    "310106",
    "--street",
    "310106013",
)


# -- bus specs --------------------------------------------------------------------------------------


def test_bus_specs_become_bus_tables() -> None:
    assert parse_bus_spec("rs485-1:modbus_rtu:/dev/ttyUSB0:9600:N") == {
        "id": "rs485-1",
        "protocol": "modbus_rtu",
        "port": "/dev/ttyUSB0",
        "baudrate": 9600,
        "parity": "N",
    }
    assert parse_bus_spec("meters:dlt645:/dev/ttyUSB1") == {
        "id": "meters",
        "protocol": "dlt645",
        "port": "/dev/ttyUSB1",
    }
    assert parse_bus_spec("w:cjt188:socket://10.0.0.5:4001:2400:E:1") == {
        "id": "w",
        "protocol": "cjt188",
        "port": "socket://10.0.0.5:4001",
        "baudrate": 2400,
        "parity": "E",
        "stopbits": 1,
    }
    assert parse_bus_spec("tcp-1:modbus_tcp:192.0.2.10:502") == {
        "id": "tcp-1",
        "protocol": "modbus_tcp",
        "host": "192.0.2.10",
        "port": 502,
    }
    assert parse_bus_spec("ble:bthome:hci1") == {"id": "ble", "protocol": "bthome", "adapter": "hci1"}


@pytest.mark.parametrize(
    ("spec", "why"),
    [
        ("rs485-1", "expected ID:PROTOCOL"),
        ("x:zigbee:/dev/ttyUSB0", "unknown protocol"),
        ("x:modbus_rtu", "needs a port"),
        ("x:modbus_rtu:/dev/ttyUSB0:fast", "baud rate"),
        ("x:modbus_rtu:/dev/ttyUSB0:9600:Q", "parity"),
        ("x:modbus_tcp", "needs a host"),
        ("x:modbus_tcp:h:99999", "port"),
        ("bad id!:modbus_tcp:h", "id"),
    ],
)
def test_bad_bus_specs_say_why(spec: str, why: str) -> None:
    with pytest.raises(BusSpecError) as err:
        parse_bus_spec(spec)
    assert err.value.spec == spec
    assert why in err.value.reason


@given(st.text(max_size=60))
def test_bus_spec_parser_never_crashes(spec: str) -> None:
    try:
        table = parse_bus_spec(spec)
    except BusSpecError:
        return
    assert table["id"] and table["protocol"]


# -- redaction --------------------------------------------------------------------------------------


def test_redaction_of_keys_and_urls() -> None:
    data = {
        "upstream": {"brokers": ["mqtts://u:pw@h:8883"], "password_file": "/etc/pw", "username": "gw"},
        "devices": [{"id": "m1", "key": "00112233445566778899aabbccddeeff", "address": "A4:C1"}],
        "web": {"password_file": "p", "bind": "0.0.0.0"},
        "x": {"api_token": "t", "hmac_key_file": "k", "enabled": True},
    }
    red = redact_config(data)
    assert red["upstream"]["brokers"] == [f"mqtts://u:{REDACTED}@h:8883"]
    assert red["upstream"]["password_file"] == REDACTED and red["upstream"]["username"] == "gw"
    assert red["devices"][0]["key"] == REDACTED and red["devices"][0]["address"] == "A4:C1"
    assert red["x"] == {"api_token": REDACTED, "hmac_key_file": REDACTED, "enabled": True}


@given(
    st.dictionaries(
        st.sampled_from(["password", "token", "secret_x", "key", "name"]),
        st.text(min_size=1).filter(lambda v: v != REDACTED),
    )
)
def test_redaction_leaves_no_secret_value(data: dict[str, str]) -> None:
    red = redact_config(data)
    for k, v in red.items():
        if k != "name":
            assert v == REDACTED
        else:
            assert v == data[k] or ("://" in data[k] and "@" in data[k])


# -- init -------------------------------------------------------------------------------------------


def _backups(folder: Path) -> list[Path]:
    return sorted(folder.glob("*.bak"))


async def test_scripted_init_discovers_the_building(short_dir: Path, building: ModbusBuilding) -> None:
    host, port = building.endpoint
    building.silence(13)
    path = short_dir / "gw.toml"
    secret = short_dir / "broker.pw"  # `config check` refuses a password file that is not there
    secret.write_text("pw\n")
    secret.chmod(0o600)
    r = await acli(
        "init", "-c", str(path), *IDENTITY, "--name", "Daning Road No. 7",
        "--upstream", "mqtts://platform.example:8883", "--username", "gw-310106-0007",
        "--password-file", str(secret),
        "--bus", f"tcp-1:modbus_tcp:{host}:{port}", "--profile-dir", str(PROFILES),
        "--discover", "--to", "16", "--yes", "--json",
    )  # fmt: skip
    assert r.exit_code == 0, r.output
    out = json.loads(r.output)
    assert out["added"] == ["tcp-1-u1", "tcp-1-u2", "tcp-1-u3", "tcp-1-u11", "tcp-1-u12"]
    cfg = load_config(path)  # the result passes `config check`
    assert cfg.gateway.org.street == "310106013"
    assert cfg.upstream is not None and cfg.upstream.brokers == ("mqtts://platform.example:8883",)
    assert [d.address for d in cfg.devices] == [1, 2, 3, 11, 12]
    assert [d.profile for d in cfg.devices] == [  # identified, not the first profile in the alphabet
        "modbus-power-meter-3ph", "modbus-water-meter", "modbus-water-meter",
        "modbus-smoke-detector", "modbus-smoke-detector",
    ]  # fmt: skip
    check = cli("config", "check", str(path))
    assert check.exit_code == 0
    # A fresh file: nothing existed before, so nothing is kept (it left a .bak of its own first write).
    assert out["backup"] is None and not _backups(short_dir), _backups(short_dir)
    first = path.read_text()
    r = await acli(
        "init", "-c", str(path), *IDENTITY, "--bus", f"tcp-1:modbus_tcp:{host}:{port}",
        "--profile-dir", str(PROFILES), "--discover", "--to", "3", "--yes", "--force", "--json",
    )  # fmt: skip
    assert r.exit_code == 0, r.output
    [kept] = _backups(short_dir)  # the file that was there before; not init's own first write
    assert kept.read_text() == first and json.loads(r.output)["backup"] == str(kept)
    # The installer reads it: a header comment, tables in order.
    text = path.read_text()
    assert text.startswith("# CityNerve gateway config")
    assert text.index("[gateway]") < text.index("[[buses]]") < text.index("[[devices]]")


async def test_init_with_a_profile_for_the_family(short_dir: Path, building: ModbusBuilding) -> None:
    host, port = building.endpoint
    path = short_dir / "gw.toml"
    r = await acli(
        "init", "-c", str(path), *IDENTITY, "--bus", f"tcp-1:modbus_tcp:{host}:{port}",
        "--profile-dir", str(PROFILES), "--discover", "--from", "11", "--to", "12",
        "--profile", "modbus=modbus-smoke-detector", "--yes", "--json",
    )  # fmt: skip
    assert r.exit_code == 0, r.output
    cfg = load_config(path)
    assert {d.profile for d in cfg.devices} == {"modbus-smoke-detector"}


async def test_interactive_init(short_dir: Path, building: ModbusBuilding) -> None:
    host, port = building.endpoint
    path = short_dir / "gw.toml"
    answers = "\n".join(
        [
            "gw-int-1",  # id
            "Pump house",  # name
            "310100",
            "310106",
            "310106013",
            "",  # no broker
            "tcp-1:modbus_tcp",  # a typo: asked again
            f"tcp-1:modbus_tcp:{host}:{port}",
            "",  # no more buses
            "y",  # add unit 2 (identified: a water meter)
            "n",  # not unit 3
        ]
    )
    r = await acli(
        "init", "-c", str(path), "--interactive", "--profile-dir", str(PROFILES),
        "--discover", "--from", "2", "--to", "3", input=answers + "\n",
    )  # fmt: skip
    assert r.exit_code == 0, r.output
    assert "needs a host" in r.output
    cfg = load_config(path)
    assert cfg.gateway.name == "Pump house"
    assert [(d.address, d.profile) for d in cfg.devices] == [(2, "modbus-water-meter")]
    assert "as tcp-1-u2 (modbus-water-meter)?" in r.output


def test_init_refuses_to_overwrite_and_bad_input(short_dir: Path) -> None:
    path = short_dir / "gw.toml"
    path.write_text("# mine\n")
    r = cli("init", "-c", str(path), *IDENTITY, "--no-interactive")
    assert r.exit_code == 1 and "exists" in r.output
    assert path.read_text() == "# mine\n"
    new = short_dir / "new.toml"
    r = cli("init", "-c", str(new), "--gateway-id", "gw-1", "--no-interactive")
    assert r.exit_code == 2 and "--city is required" in r.output
    r = cli("init", "-c", str(new), *IDENTITY[:-1], "31", "--no-interactive")
    assert r.exit_code == 2 and "gateway.org.street" in r.output
    assert not new.exists()
    r = cli("init", "-c", str(new), *IDENTITY, "--bus", "x:nope:/dev/x", "--no-interactive")
    assert r.exit_code == 2 and "unknown protocol" in r.output
    r = cli("init", "-c", str(path), *IDENTITY, "--force", "--no-interactive")
    assert r.exit_code == 0
    [kept] = short_dir.glob("gw.toml.*.bak")  # the replaced file was kept
    assert kept.read_text() == "# mine\n"


# -- devices ----------------------------------------------------------------------------------------


def test_devices_add_remove_keep_comments_and_backups(config_path: Path) -> None:
    original = config_path.read_text()
    r = cli(
        "devices", "add", "-c", str(config_path), "--id", "wm-13", "--bus", "tcp-1",
        "--profile", "modbus-water-meter", "--address", "13", "--building", "7", "--floor", "4",
        "--room", "401", "--tag", "elderly-alone", "--set", "max_gap=4", "--json",
    )  # fmt: skip
    assert r.exit_code == 0, r.output
    out = json.loads(r.output)
    assert out["reload"]["outcome"] == "not_running"
    assert Path(out["backup"]).read_text() == original
    cfg = load_config(config_path)
    dev = cfg.device("wm-13")
    assert dev.address == 13 and dev.location.floor == "4" and dev.tags == ("elderly-alone",)
    assert dev.location.address_code == "310106013"  # the gateway's street by default
    assert config_path.read_text().startswith("# test building")  # comments survive

    listed = json.loads(cli("devices", "list", "-c", str(config_path), "--json").output)
    assert [d["id"] for d in listed["devices"]][-1] == "wm-13"

    r = cli("devices", "remove", "-c", str(config_path), "wm-2", "--no-reload", "--json")
    assert r.exit_code == 0, r.output
    cfg = load_config(config_path)
    assert "wm-2" not in [d.id for d in cfg.devices] and "wm-13" in [d.id for d in cfg.devices]
    assert len(list(config_path.parent.glob("gateway.toml.*.bak"))) == 2


def test_invalid_edits_leave_the_file_alone(config_path: Path) -> None:
    before = config_path.read_text()
    # Address already used on the bus; a profile that does not exist.
    r = cli(
        "devices", "add", "-c", str(config_path), "--id", "dup", "--bus", "tcp-1",
        "--profile", "modbus-water-meter", "--address", "2",
    )  # fmt: skip
    assert r.exit_code == 2 and "already used" in r.output and "not changed" in r.output
    r = cli(
        "devices", "add", "-c", str(config_path), "--id", "x1", "--bus", "tcp-1",
        "--profile", "no-such-profile", "--address", "40",
    )  # fmt: skip
    assert r.exit_code == 2 and "no profile 'no-such-profile'" in r.output
    r = cli(
        "devices", "add", "-c", str(config_path), "--id", "wm-2", "--bus", "tcp-1",
        "--profile", "modbus-water-meter", "--address", "41",
    )  # fmt: skip
    assert r.exit_code == 2 and "already exists" in r.output
    r = cli("devices", "remove", "-c", str(config_path), "ghost")
    assert r.exit_code == 2 and "no device 'ghost'" in r.output
    assert config_path.read_text() == before
    assert not list(config_path.parent.glob("*.bak"))
    assert not [p for p in config_path.parent.iterdir() if p.name.startswith(".")]  # no temp files left


async def test_devices_add_reloads_the_running_gateway(gateway: Gateway, config_path: Path) -> None:
    r = await acli(
        "devices", "add", "-c", str(config_path), "--id", "sd-13", "--bus", "tcp-1",
        "--profile", "modbus-smoke-detector", "--address", "13", "--floor", "3", "--json",
    )  # fmt: skip
    assert r.exit_code == 0, r.output
    out = json.loads(r.output)
    reload = out["reload"]
    # The new detector is polled now and the building's smoke rules apply to it at once (the
    # rule engine is bound to the reloaded devices; it used to wait for a restart): one outcome.
    assert out["outcome"] == reload["outcome"] == "reloaded", out
    assert reload["restart_for"] == []
    assert "took the change" in out["message"] and "tcp-1" in out["message"], out["message"]
    await wait_for(lambda: "sd-13" in {d["id"] for d in gateway.owners["tcp-1"].snapshot()["devices"]})
    assert gateway.rules is not None
    assert any(i.device_id == "sd-13" for i in gateway.rules.instances.values())

    r = await acli("devices", "remove", "-c", str(config_path), "sd-13")
    assert r.exit_code == 0, r.output
    lines = [line for line in r.output.splitlines() if line.strip()]
    assert len(lines) == 2 and lines[0].startswith("removed sd-13"), r.output
    assert "took the change" in lines[1] and "{" not in r.output  # one sentence, no Python dict
    assert not any(i.device_id == "sd-13" for i in gateway.rules.instances.values())


def test_removed_block_takes_its_point_overrides(config_path: Path) -> None:
    text = config_path.read_text()
    override = "# wm-3 reads noisy\n[devices.points.flow_rate]\ndeadband = 0.2\n\n"
    at_wm3 = text.rindex("[[devices]]", 0, text.index('id = "wm-3"'))
    text = text[:at_wm3] + "# flat 301, meter behind the bath panel\n" + text[at_wm3:]
    at = text.index("[[devices]]", text.index('id = "wm-3"'))
    text = text[:at] + override + text[at:]
    at_sd11 = text.rindex("[[devices]]", 0, text.index('id = "sd-11"'))
    config_path.write_text(text[:at_sd11] + "# 1F stairwell detector\n" + text[at_sd11:])
    assert load_config(config_path).device("wm-3").points["flow_rate"].deadband == 0.2
    r = cli("devices", "remove", "-c", str(config_path), "wm-3", "--no-reload")
    assert r.exit_code == 0, r.output
    after = config_path.read_text()
    assert "deadband = 0.2" not in after and "bath panel" not in after
    assert '# 1F stairwell detector\n[[devices]]\nid = "sd-11"' in after  # the next device's comment stays
    assert after.startswith("# test building")
    assert [d.id for d in load_config(config_path).devices] == ["em-1", "wm-2", "sd-11", "sd-12"]


# -- the TOML writer --------------------------------------------------------------------------------

_keys = (
    st.from_regex(r"[a-z][a-z0-9_]{0,8}", fullmatch=True)
    | st.text(min_size=0, max_size=8)
    # The shapes that broke writers before: a key holding " = ", dots, quotes, brackets, a hash.
    | st.sampled_from([" = ", "a = b", "x =", "a.b", '"q"', "'s'", "[t]", "[[u]]", "# c", "\n", "\\"])
)
_scalars = (
    st.text(max_size=20)
    | st.integers(-(2**63), 2**63 - 1)
    | st.floats(allow_nan=False)
    | st.booleans()
    | st.lists(st.integers(0, 9), max_size=3)
)
_tables = st.recursive(
    st.dictionaries(_keys, _scalars, max_size=4),
    lambda inner: st.dictionaries(
        _keys, _scalars | inner | st.lists(inner, min_size=1, max_size=2), max_size=4
    ),
    max_leaves=12,
)


@given(_tables)
def test_toml_writer_round_trips(data: dict[str, object]) -> None:
    text = dump_toml(data, "a header\n\nwith a blank line")
    assert tomllib.loads(text) == data


@pytest.mark.parametrize("key", [" = ", "a = b", "x =", "= y", "k = 0", "a.b", "[t]", "\n", ""])
def test_toml_writer_quotes_keys_holding_an_equals_sign(key: str) -> None:
    # Once found by the property test above (then only replayed from a local example database):
    # a key holding " = " was cut at the first " = " and the text was not TOML.
    data = {key: {key: 1, "n": [{key: "v"}]}, "plain": {key: {"deep": {key: 2}}}}
    assert tomllib.loads(dump_toml(data)) == data


def test_toml_writer_layout() -> None:
    text = dump_toml(
        {
            "profile_dirs": ["p"],
            "gateway": {"id": "g", "org": {"city": "310100"}},
            "devices": [
                {"id": "d", "location": {"address_code": "310106013"}, "points": {"f": {"scale": 2}}}
            ],
        }
    )
    assert text == (
        'profile_dirs = ["p"]\n\n[gateway]\nid = "g"\norg = { city = "310100" }\n\n'
        '[[devices]]\nid = "d"\nlocation = { address_code = "310106013" }\n\n'
        "[devices.points]\nf = { scale = 2 }\n"
    )


async def test_reload_outcomes_from_a_real_control_server(short_dir: Path) -> None:
    from citynerve.gateway.api import ConfigError, ConfigIssue
    from citynerve.gateway.commissioning import ReloadOutcome, ask_reload
    from citynerve.gateway.control import ControlServer
    from citynerve.gateway.control.server import Handler

    sock = short_dir / "c.sock"
    assert (await ask_reload(sock)).outcome is ReloadOutcome.NOT_RUNNING

    async def ping(_: dict[str, Any]) -> dict[str, Any]:
        return {}

    async def bad_reload(_: dict[str, Any]) -> dict[str, Any]:
        raise ConfigError([ConfigIssue("gw.toml", "devices[0].bus", "no bus 'x'")])

    cases: list[tuple[dict[str, Handler], ReloadOutcome]] = [
        ({"ping": ping}, ReloadOutcome.UNSUPPORTED),  # an older gateway without the op
        ({"ping": ping, "reload": bad_reload}, ReloadOutcome.FAILED),
    ]
    for handlers, outcome in cases:
        task = asyncio.create_task(ControlServer(sock, handlers).run())
        try:
            for _ in range(100):
                if sock.exists():
                    break
                await asyncio.sleep(0.02)
            report = await ask_reload(sock)
            assert report.outcome is outcome, report
        finally:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
    assert "no bus 'x'" in str(report.detail)


def test_shipped_profiles_found_wherever_the_config_lives(short_dir: Path) -> None:
    # The guide puts the config in /etc/citynerve: no profiles/ folder beside it, no --profile-dir.
    from citynerve.gateway import shipped
    from citynerve.gateway.commissioning import available_profiles

    path = short_dir / "etc" / "citynerve" / "gateway.toml"
    path.parent.mkdir(parents=True)
    names = sorted(p.stem for p in shipped.profiles().glob("*.toml"))
    assert names and sorted(p.id for p in available_profiles(path)) == names
    assert sorted(p.id for p in available_profiles(Path("/etc/citynerve/gateway.toml"))) == names
