"""Every config error names the file, the key path and what was expected; all are listed at once."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
from click.testing import CliRunner

from citynerve.gateway.api import ConfigError
from citynerve.gateway.cli import main
from citynerve.gateway.config import load_config

REPO = Path(__file__).resolve().parents[2]
EXAMPLES = sorted((REPO / "config" / "examples").glob("*.toml"))

HEAD = """
[gateway]
id = "gw-1"
org = { city = "310100", district = "310106", street = "310106013" }
"""

BUS = """
[[buses]]
id = "rs485-1"
protocol = "modbus_rtu"
port = "/dev/ttyUSB0"
"""

LOC = 'location = { address_code = "310106013007" }'


def write(tmp_path: Path, text: str, name: str = "gw.toml") -> Path:
    path = tmp_path / name
    path.write_text(textwrap.dedent(text))
    (tmp_path / "profiles").mkdir(exist_ok=True)
    for profile in (REPO / "config" / "profiles").glob("*.toml"):
        (tmp_path / "profiles" / profile.name).write_text(profile.read_text())
    return path


def issues(path: Path) -> dict[str, str]:
    with pytest.raises(ConfigError) as info:
        load_config(path)
    return {i.path: i.message for i in info.value.issues}


@pytest.mark.parametrize("example", EXAMPLES, ids=lambda p: p.name)
def test_shipped_examples_are_valid(example: Path) -> None:
    cfg = load_config(example)
    assert cfg.devices and cfg.buses


def test_every_error_is_listed_with_its_key_path(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        HEAD
        + BUS
        + f"""
[[buses]]
id = "rs485-1"
protocol = "modbus_rtu"
port = "/dev/ttyUSB1"

[[buses]]
id = "x"
protocol = "carrier_pigeon"

[[devices]]
id = "wm-1"
bus = "rs485-1"
profile = "modbus-water-meter"
address = 1
{LOC}
[devices.points.flow_rate]
scale = "abc"
deadbnd = 1

[[devices]]
id = "wm-1"
bus = "rs485-1"
profile = "modbus-water-meter"
address = 2
{LOC}

[[devices]]
id = "wm-3"
bus = "rs485-9"
profile = "modbus-water-meter"
address = 3
{LOC}

[[devices]]
id = "wm-4"
bus = "rs485-1"
profile = "no-such-profile"
address = 4
{LOC}

[[devices]]
id = "wm-5"
bus = "rs485-1"
profile = "modbus-water-meter"
address = 2
component_code = "12345"
colour = "red"
{LOC}
[devices.points.flo_rate]
scale = 2
""",
    )
    found = issues(path)
    assert found["buses[1].id"] == "duplicate bus id 'rs485-1'"
    assert found["buses[2].protocol"].startswith("unknown protocol (known: ")
    assert "modbus_tcp" in found["buses[2].protocol"]
    assert found["devices[0].points.flow_rate.scale"].startswith("expected: input should be a valid number")
    assert "found 'abc'" in found["devices[0].points.flow_rate.scale"]
    assert found["devices[0].points.flow_rate.deadbnd"] == "unknown key (did you mean 'deadband'?)"
    assert found["devices[1].id"] == "duplicate device id 'wm-1' (also devices[0])"
    assert found["devices[2].bus"] == "no bus 'rs485-9' (buses: rs485-1)"
    assert found["devices[3].profile"].startswith(
        "no profile 'no-such-profile'; looked for no-such-profile.toml"
    )
    assert "16-digit" in found["devices[4].component_code"]
    assert found["devices[4].colour"].startswith("unknown key")
    assert found["devices[4].points.flo_rate"].startswith("profile 'modbus-water-meter' has no such point")
    assert len(found) == 10, found


def test_device_address_used_twice_on_a_bus(tmp_path: Path) -> None:
    devices = "".join(
        f"""
[[devices]]
id = "wm-{i}"
bus = "rs485-1"
profile = "modbus-water-meter"
address = 7
{LOC}
"""
        for i in range(2)
    )
    found = issues(write(tmp_path, HEAD + BUS + devices))
    assert found == {"devices[1].address": "address 7 is already used on bus 'rs485-1' by devices[0]"}


@pytest.mark.parametrize("second", ["a4c138000001", "a4-c1-38-00-00-01", " A4:c1:38:00:00:01"])
def test_one_ble_mac_written_two_ways_is_used_twice(tmp_path: Path, second: str) -> None:
    """A MAC is compared as the driver reads it: the driver would give one node's adverts to one
    device and leave the other without readings."""
    ble = """
[[buses]]
id = "ble0"
protocol = "bthome"
backend = "bleak"
"""
    devices = "".join(
        f"""
[[devices]]
id = "mh-{i}"
bus = "ble0"
profile = "bthome-manhole-cover"
address = "{mac}"
{LOC}
"""
        for i, mac in enumerate(["A4:C1:38:00:00:01", second])
    )
    found = issues(write(tmp_path, HEAD + ble + devices))
    assert found == {"devices[1].address": f"address {second!r} is already used on bus 'ble0' by devices[0]"}
    # A bad MAC is not compared: the device model says what is wrong with it.
    found = issues(write(tmp_path, HEAD + ble + devices.replace(second, "0xA4C1380000")))
    assert set(found) == {"devices[1].address"} and "not 6 bytes" in found["devices[1].address"]


def test_bad_values_in_sections_and_missing_gateway(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        """
colour = 1
[store]
max_bytes = "lots"
[log]
level = "loud"
"""
        + BUS.replace('port = "/dev/ttyUSB0"', 'port = "/dev/ttyUSB0"\nbaudrate = -5\nparity = "X"'),
    )
    found = issues(path)
    assert found["gateway"].startswith("required table [gateway] is missing")
    assert found["colour"].startswith("unknown key (allowed: gateway, ")
    assert "found 'lots'" in found["store.max_bytes"]
    assert "'debug', 'info', 'warning' or 'error'" in found["log.level"]
    assert "greater than 0" in found["buses[0].baudrate"]
    assert "found 'X'" in found["buses[0].parity"]


def test_org_codes_and_ids_are_checked(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        """
[gateway]
id = "gw 1"
org = { city = "31", district = "310106", street = "310106013" }
""",
    )
    found = issues(path)
    assert set(found) == {"gateway.id", "gateway.org.city"}
    assert "found '31'" in found["gateway.org.city"]


def test_profile_errors_name_the_profile_file(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        HEAD
        + BUS
        + f"""
[[devices]]
id = "x-1"
bus = "rs485-1"
profile = "broken"
address = 1
{LOC}
""",
    )
    (tmp_path / "profiles" / "broken.toml").write_text(
        'id = "broken"\nfamily = "modbus"\n[points.a]\ntable = "holding"\naddress = 70000\n'
        '[points.b]\ntable = "input"\naddress = 1\nwritable = true\n'
    )
    with pytest.raises(ConfigError) as info:
        load_config(path)
    by_path = {(Path(i.file).name, i.path): i.message for i in info.value.issues}
    assert "less than or equal to 65535" in by_path[("broken.toml", "points.a.address")]
    assert "read-only" in by_path[("broken.toml", "points.b")]


def test_profile_of_another_family_is_refused(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        HEAD
        + BUS
        + f"""
[[devices]]
id = "x-1"
bus = "rs485-1"
profile = "broken"
address = 1
{LOC}
""",
    )
    (tmp_path / "profiles" / "broken.toml").write_text(
        'id = "broken"\nfamily = "dlt645"\n[points.a]\ndi = "00010000"\n'
    )
    found = issues(path)
    assert found["devices[0].profile"] == (
        "profile 'broken' is for dlt645 devices, but bus 'rs485-1' speaks modbus_rtu (modbus)"
    )


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("[gateway\n", "not valid TOML: "),
        ("\xff\xfe", "not UTF-8 text"),
    ],
)
def test_unreadable_files(tmp_path: Path, text: str, message: str) -> None:
    path = tmp_path / "gw.toml"
    path.write_bytes(text.encode("latin-1"))
    found = issues(path)
    assert found[""].startswith(message)


def test_cli_check_lists_every_issue_and_exits_2(tmp_path: Path) -> None:
    path = write(tmp_path, HEAD + BUS + "[[devices]]\nid = 'a'\n")
    result = CliRunner().invoke(main, ["config", "check", str(path)])
    assert result.exit_code == 2
    # The key path names the device's id, so an installer finds the entry in a long file.
    assert f"{path}: devices[0] (id 'a').bus: required key is missing" in result.output
    assert f"{path}: devices[0] (id 'a').profile: required key is missing" in result.output
    ok = CliRunner().invoke(main, ["config", "check", "--json", str(EXAMPLES[0])])
    assert ok.exit_code == 0 and '"valid": true' in ok.output


def test_cli_missing_file_is_one_line(tmp_path: Path) -> None:
    result = CliRunner().invoke(main, ["config", "check", str(tmp_path / "nope.toml")])
    assert result.exit_code == 2
    assert "nope.toml: no such file" in result.output
    assert "Traceback" not in result.output


def test_run_refuses_an_invalid_config_with_the_same_messages(tmp_path: Path) -> None:
    path = write(tmp_path, HEAD + BUS + "[[devices]]\nid = 'a'\n")
    proc = subprocess.run(
        [sys.executable, "-m", "citynerve.gateway.cli", "run", "-c", str(path)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == 2
    assert "devices[0] (id 'a').bus: required key is missing" in proc.stderr
    assert "Traceback" not in proc.stderr


def test_overlapping_writable_points_are_refused(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        HEAD
        + BUS
        + f"""
[[devices]]
id = "v-1"
bus = "rs485-1"
profile = "valves"
address = 1
{LOC}
""",
    )
    (tmp_path / "profiles" / "valves.toml").write_text(
        'id = "valves"\nfamily = "modbus"\n'
        '[points.setpoint]\ntable = "holding"\naddress = 10\ntype = "uint32"\nwritable = true\n'
        '[points.mode]\ntable = "holding"\naddress = 11\ntype = "uint16"\nwritable = true\n'
        '[points.status]\ntable = "holding"\naddress = 11\ntype = "uint16"\n'
        '[points.relay]\ntable = "coil"\naddress = 11\nwritable = true\n'
    )
    found = issues(path)
    # the read-only status on the same register and the coil (another table) are fine
    assert list(found) == ["devices[0].points.mode"]
    assert "overlaps writable point 'setpoint'" in found["devices[0].points.mode"]
