"""A config that raises no alarm is valid but warned about: no `[rules]` at all (the installer's guide
gave a gateway whose smoke detector in alarm raised nothing), a pack that selects no device, and a
pack whose selector matches only devices of classes it is not written for (the guide's elderly-alone
flow meter under `elderly-water`: the pack silently did nothing for the resident). `config check`,
`diag rules check` and `report` say so; none of them is an error."""

from __future__ import annotations

import json
from pathlib import Path

from click.testing import CliRunner, Result

from citynerve.gateway.cli import main
from citynerve.gateway.config import load_config
from tests.fieldtools.conftest import gateway_toml

WATER_PACK = """
[rules]
[[rules.packs]]
name = "elderly-water"
select = { tags = ["elderly-alone"] }
"""
# The guide's `devices add` example: a TUF-2000M flow meter (class flow-meter) tagged elderly-alone.
FLOW_METER = """
[[devices]]
id = "wm-0301"
bus = "tcp-1"
profile = "modbus-water-meter"
address = 5
tags = ["elderly-alone"]
location = { address_code = "310106013", building = "7", floor = "3", room = "301" }
"""


def _cli(*args: str) -> Result:
    return CliRunner().invoke(main, list(args))


def _config(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "gateway.toml"
    path.write_text(text)
    return path


def test_no_rules_is_a_warning_that_no_alarm_will_be_raised(tmp_path: Path) -> None:
    path = _config(tmp_path, gateway_toml("127.0.0.1", 1, rules=False))
    [warning] = load_config(path).warnings
    assert warning.path == "rules" and "no alarms will be raised" in warning.message
    r = _cli("config", "check", str(path))
    assert r.exit_code == 0 and "no alarms will be raised" in r.output, r.output
    r = _cli("config", "check", str(path), "--json")
    assert [w["path"] for w in json.loads(r.output)["warnings"]] == ["rules"]
    # With rules, or without any device (nothing to raise on), nothing is said.
    assert load_config(_config(tmp_path, gateway_toml("127.0.0.1", 1))).warnings == ()
    assert (
        load_config(_config(tmp_path, gateway_toml("127.0.0.1", 1, devices=(), rules=False))).warnings == ()
    )


def test_a_pack_selecting_only_devices_of_other_classes_is_warned_about(tmp_path: Path) -> None:
    path = _config(tmp_path, gateway_toml("127.0.0.1", 1, rules=False, extra=FLOW_METER + WATER_PACK))
    [warning] = load_config(path).warnings
    assert warning.path == "rules.packs[0]"
    assert warning.message == (
        "warning: pack elderly-water selects 1 device (wm-0301), none of class water-meter: "
        "it raises nothing for them"
    )
    r = _cli("config", "check", str(path))
    assert r.exit_code == 0 and "none of class water-meter" in r.output, r.output
    r = _cli("diag", "rules", "check", str(path))
    assert r.exit_code == 0 and "none of class water-meter" in r.output, r.output
    r = _cli("diag", "rules", "check", str(path), "--json")
    assert "none of class water-meter" in json.loads(r.output)["warnings"][0]


def test_a_pack_selecting_no_device_is_warned_about(tmp_path: Path) -> None:
    pack = WATER_PACK.replace("elderly-alone", "nobody-has-this-tag")
    path = _config(tmp_path, gateway_toml("127.0.0.1", 1, rules=False, extra=pack))
    [warning] = load_config(path).warnings
    assert warning.message == "warning: pack elderly-water selects no device: it raises nothing"
    # An empty selector over devices none of which the pack is written for: the same warning kind.
    pack = '\n[rules]\n[[rules.packs]]\nname = "manhole"\n'
    [warning] = load_config(_config(tmp_path, gateway_toml("127.0.0.1", 1, rules=False, extra=pack))).warnings
    assert (
        "pack manhole selects every device" in warning.message
        and "none of class manhole-cover" in warning.message
    )


def test_a_pack_that_reaches_a_device_of_its_class_is_not_warned_about(tmp_path: Path) -> None:
    # The shared fixture: smoke-fire selecting the building's smoke detectors.
    assert load_config(_config(tmp_path, gateway_toml("127.0.0.1", 1))).warnings == ()
    mixed = FLOW_METER + WATER_PACK.replace(
        'tags = ["elderly-alone"]', 'profiles = ["modbus-water-meter", "cjt188-water-cold"]'
    )
    path = _config(tmp_path, gateway_toml("127.0.0.1", 1, rules=False, extra=mixed))
    assert [w.path for w in load_config(path).warnings] == ["rules.packs[0]"]  # still only flow meters
