"""What a profile may say, judged by `config check` before `run` meets it: no device identity in its
[device] table, ordered and finite ranges, units the store takes, a bounded point table, identify
reads that stay inside the register space. Real CLI and loader on real files."""

from __future__ import annotations

import math
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
from click.testing import CliRunner, Result
from pydantic import ValidationError

from citynerve.drivers.bthome.config import BTHomePoint
from citynerve.gateway.api import ConfigError
from citynerve.gateway.api._config import MAX_UNIT_CHARS
from citynerve.gateway.cli import main
from citynerve.gateway.config import Profile, load_config
from citynerve.gateway.config.model import MAX_PROFILE_POINTS
from citynerve.gateway.store._codec import MAX_ID_CHARS

HEAD = """\
profile_dirs = ["profiles"]
[gateway]
id = "gw-1"
org = { city = "310100", district = "310106", street = "310106013" }
[control]
socket = "/tmp/cn-profile-rules.sock"
[[buses]]
id = "tcp1"
protocol = "modbus_tcp"
host = "127.0.0.1"
port = 1502
"""

LOC = 'location = { address_code = "310106013" }'


def setup(tmp_path: Path, profile: str, devices: str) -> Path:
    (tmp_path / "profiles").mkdir()
    (tmp_path / "profiles" / "acme.toml").write_text(textwrap.dedent(profile))
    path = tmp_path / "gw.toml"
    path.write_text(HEAD + textwrap.dedent(devices))
    return path


def check(path: Path) -> Result:
    return CliRunner().invoke(main, ["config", "check", str(path)])


def issues(path: Path) -> dict[str, str]:
    with pytest.raises(ConfigError) as info:
        load_config(path)
    return {f"{Path(i.file).name}:{i.path}": i.message for i in info.value.issues}


def test_a_profile_may_not_give_its_devices_an_id_or_address(tmp_path: Path) -> None:
    """Duplicates were judged on the entries as written: two entries of a profile whose [device]
    set id (or address) passed, and `run` kept one of the two devices."""
    profile = """\
        id = "acme"
        family = "modbus"
        [device]
        id = "meter"
        address = 1
        [points.voltage]
        table = "holding"
        address = 0
        """
    devices = f'[[devices]]\nbus = "tcp1"\nprofile = "acme"\n{LOC}\n' * 2
    path = setup(tmp_path, profile, devices)
    result = check(path)
    assert result.exit_code == 2, result.output
    assert "Traceback" not in result.output
    found = issues(path)
    assert "id, address belong in each [[devices]] entry" in found["acme.toml:device"]
    for key in ("bus", "profile"):
        with pytest.raises(ValidationError, match=f"{key} belong"):
            Profile.model_validate(
                {"id": "p", "family": "modbus", "device": {key: "x"}, "points": {"v": {"address": 0}}}
            )


def test_reversed_or_nan_ranges_are_refused(tmp_path: Path) -> None:
    profile = """\
        id = "acme"
        family = "modbus"
        [points.voltage]
        table = "holding"
        address = 0
        bounds = [260, 180]
        """
    devices = f'[[devices]]\nid = "m1"\nbus = "tcp1"\nprofile = "acme"\naddress = 1\n{LOC}\n'
    path = setup(tmp_path, profile, devices)
    assert check(path).exit_code == 2
    assert "min <= max; found [260, 180]" in issues(path)["acme.toml:points.voltage.bounds"]
    # The same in a device's override.
    (tmp_path / "profiles" / "acme.toml").write_text(
        textwrap.dedent(profile).replace("bounds = [260, 180]", "")
    )
    path.write_text(HEAD + devices + "[devices.points.voltage]\nbounds = [5, -5]\n")
    assert "found [5, -5]" in issues(path)["gw.toml:devices[0].points.voltage.bounds"]
    path.write_text(HEAD + devices + "[devices.points.voltage]\nbounds = [180, 260]\n")
    load_config(path)
    base = {"id": "p", "family": "modbus", "points": {"v": {"table": "input", "address": 0}}}
    for identify, match in (
        ({"plausible": {"v": [260, 180]}}, "v: a range"),
        ({"plausible": {"v": [math.nan, 1]}}, "finite"),
        ({"plausible": {"v": [0, math.inf]}}, "finite"),
        ({"registers": [{"address": 0, "min": 5, "max": 1}]}, "min <= max"),
        ({"registers": [{"address": 0, "min": math.nan}]}, "finite"),
        ({"registers": [{"address": 0, "equals": math.nan}]}, "finite"),
    ):
        with pytest.raises(ValidationError, match=match):
            Profile.model_validate({**base, "identify": identify})
    Profile.model_validate({**base, "identify": {"plausible": {"v": [7, 7]}}})  # one value: fine


def test_units_and_texts_stay_within_what_the_store_takes(tmp_path: Path) -> None:
    """A 1,101-character unit passed check, and the store refused every reading of the point."""
    long_unit = "V" * 1101
    profile = f"""\
        id = "acme"
        family = "modbus"
        [points.voltage]
        table = "holding"
        address = 0
        unit = "{long_unit}"
        """
    devices = f'[[devices]]\nid = "m1"\nbus = "tcp1"\nprofile = "acme"\naddress = 1\n{LOC}\n'
    path = setup(tmp_path, profile, devices)
    assert check(path).exit_code == 2
    assert "at most 64 characters" in issues(path)["acme.toml:points.voltage.unit"]
    (tmp_path / "profiles" / "acme.toml").write_text(textwrap.dedent(profile).replace(long_unit, "m3/h"))
    path.write_text(HEAD + devices + f'[devices.points.voltage]\ndescription = "{"d" * 1025}"\n')
    assert "at most 1024" in issues(path)["gw.toml:devices[0].points.voltage.description"]
    path.write_text(HEAD + devices + f'[devices.points.voltage]\nunit = "{"u" * 64}"\n')
    load_config(path)
    assert MAX_UNIT_CHARS <= MAX_ID_CHARS  # what the limit is there for: the store keeps every reading
    with pytest.raises(ValidationError, match="at most 64"):
        BTHomePoint.model_validate({"object": "rotation", "event_kind": "k" * 65})


def test_points_per_profile_are_bounded(tmp_path: Path) -> None:
    """32,000 writable points took 21 s to check (every pair compared): a profile holds at most
    1,024, and overlaps are found by sorting, not by pairs."""
    n = MAX_PROFILE_POINTS + 1
    profile = 'id = "acme"\nfamily = "modbus"\n' + "".join(
        f'[points.p{i}]\ntable = "holding"\naddress = {i}\nwritable = true\n' for i in range(n)
    )
    devices = f'[[devices]]\nid = "m1"\nbus = "tcp1"\nprofile = "acme"\naddress = 1\n{LOC}\n'
    path = setup(tmp_path, profile, devices)
    result = check(path)
    assert result.exit_code == 2 and "Traceback" not in result.output
    assert (
        issues(path)["acme.toml:points"]
        == f"expected: at most {MAX_PROFILE_POINTS} points in a profile; found {n}"
    )
    # At the bound it passes; overlaps are still found, also with a span that is not the neighbour.
    single = "".join(
        f'[points.p{i}]\ntable = "holding"\naddress = {i}\nwritable = true\n'
        for i in range(MAX_PROFILE_POINTS - 3)
    )
    wide = '[points.wide]\ntable = "holding"\naddress = 2000\ntype = "string"\nlength = 10\nwritable = true\n'
    (tmp_path / "profiles" / "acme.toml").write_text('id = "acme"\nfamily = "modbus"\n' + single + wide)
    load_config(path)
    inside = "".join(
        f'[points.in_wide_{a}]\ntable = "holding"\naddress = {a}\nwritable = true\n' for a in (2003, 2008)
    )
    (tmp_path / "profiles" / "acme.toml").write_text(
        'id = "acme"\nfamily = "modbus"\n' + single + wide + inside
    )
    found = issues(path)
    assert set(found) == {"gw.toml:devices[0].points.in_wide_2003", "gw.toml:devices[0].points.in_wide_2008"}
    assert all("overlaps writable point 'wide'" in m for m in found.values()), found


def test_an_identify_register_past_the_last_address_is_refused(tmp_path: Path) -> None:
    """{address = 65535, type = "float32"} sent a two-register read at 65535."""
    profile = """\
        id = "acme"
        family = "modbus"
        [identify]
        registers = [{ address = 65535, type = "float32", min = 0 }]
        [points.voltage]
        table = "holding"
        address = 0
        """
    devices = f'[[devices]]\nid = "m1"\nbus = "tcp1"\nprofile = "acme"\naddress = 1\n{LOC}\n'
    path = setup(tmp_path, profile, devices)
    proc = subprocess.run(
        [sys.executable, "-m", "citynerve.gateway.cli", "config", "check", str(path)],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    assert "identify.registers[0]" in proc.stdout + proc.stderr
    assert "runs past the last address 65535" in proc.stdout + proc.stderr
    for ok in ({"address": 65535}, {"address": 65534, "type": "float32"}):
        Profile.model_validate(
            {"id": "p", "family": "modbus", "identify": {"registers": [ok]}, "points": {"v": {"address": 0}}}
        )
