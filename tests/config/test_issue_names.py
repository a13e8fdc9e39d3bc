"""A config error inside a `[[buses]]` or `[[devices]]` entry names the entry's id as well as its key
path, so an installer finds `devices[4]` in a file of two hundred devices."""

from __future__ import annotations

import json
import textwrap
from pathlib import Path

import pytest
from click.testing import CliRunner

from citynerve.gateway.api import ConfigError
from citynerve.gateway.cli import main
from citynerve.gateway.config import load_config

TEXT = """
[gateway]
id = "gw-1"
org = { city = "310100", district = "310106", street = "310106013" }

[[buses]]
id = "rs485-1"
protocol = "modbus_rtu"
port = "/dev/ttyUSB0"

[[buses]]
id = "rs485-2"
protocol = "modbus_rtu"
port = "/dev/ttyUSB1"
baudrate = -5

[[devices]]
id = "wm-1"
bus = "rs485-1"
profile = "modbus-water-meter"
address = 1
location = { address_code = "310106013007" }

[[devices]]
id = "wm-3"
bus = "rs485-1"
profile = "modbus-water-meter"
address = 3
location = { address_code = "310106013007" }
points = { flow_rate = { scale = "abc" } }

[[devices]]
bus = "rs485-9"
profile = "modbus-water-meter"
address = 4
location = { address_code = "310106013007" }
"""


def test_issues_name_the_entry_id(tmp_path: Path) -> None:
    path = tmp_path / "gw.toml"
    path.write_text(textwrap.dedent(TEXT))
    with pytest.raises(ConfigError) as info:
        load_config(path)
    shown = {str(i) for i in info.value.issues}
    by_path = {i.path: i for i in info.value.issues}
    # The machine key path stays as it was; people see the id beside the index.
    assert "devices[1].points.flow_rate.scale" in by_path
    assert any(s.startswith(f"{path}: devices[1] (id 'wm-3').points.flow_rate.scale: ") for s in shown), shown
    assert any(s.startswith(f"{path}: buses[1] (id 'rs485-2').baudrate: ") for s in shown), shown
    # An entry without an id is named by its index alone.
    assert any(s.startswith(f"{path}: devices[2].bus: no bus 'rs485-9'") for s in shown), shown

    r = CliRunner().invoke(main, ["config", "check", "--json", str(path)])
    assert r.exit_code == 2
    issues = json.loads(r.output)["issues"]
    assert {
        "path": "devices[1].points.flow_rate.scale",
        "shown": "devices[1] (id 'wm-3').points.flow_rate.scale",
    }.items() <= next(i for i in issues if i["path"] == "devices[1].points.flow_rate.scale").items()
