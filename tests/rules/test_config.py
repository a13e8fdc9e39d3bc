"""The [rules] config: shipped packs load, bad input gives pydantic errors with key paths,
cross-checks against devices give ConfigIssues, the gateway config loader takes the table."""

from __future__ import annotations

import shutil
import tomllib
from pathlib import Path
from typing import Any

import pytest
from pydantic import ValidationError

from citynerve.gateway.api import ConfigIssue
from citynerve.gateway.rules import PACKS_DIR, RulesConfig, check_rules, load_pack
from citynerve.gateway.rules import config as rules_config

from .conftest import dev

SHIPPED = ("elderly-water", "manhole", "smoke-fire", "electricity")
STREET = (  # issue 18: tested in tests/rules/test_street_packs.py
    "curtain-wall",
    "elderly-bed",
    "entrance",
    "fire-hydrant",
    "fire-lane",
    "litter-bin",
    "meter-box",
    "street-lamp",
)


def errors(data: dict[str, Any]) -> list[tuple[str, str]]:
    with pytest.raises(ValidationError) as info:
        RulesConfig.model_validate(data)
    return [(".".join(str(p) for p in e["loc"]), e["msg"]) for e in info.value.errors()]


def test_every_shipped_pack_loads_and_cites_its_source() -> None:
    assert sorted(p.stem for p in PACKS_DIR.glob("*.toml")) == sorted(SHIPPED + STREET)
    for name in SHIPPED:
        pack = load_pack(PACKS_DIR / f"{name}.toml")
        assert pack.id == name and pack.description
        cfg = RulesConfig.model_validate({"packs": [{"name": name}]})
        assert cfg.all_rules()
    assert "field-protocols.md section 9" in load_pack(PACKS_DIR / "elderly-water.toml").source
    assert "field-protocols.md section 8" in load_pack(PACKS_DIR / "manhole.toml").source
    assert "GB/T 12325" in load_pack(PACKS_DIR / "electricity.toml").source


def test_published_thresholds_are_in_the_packs() -> None:
    cfg = RulesConfig.model_validate({"packs": [{"name": n} for n in SHIPPED]})
    rules = {r.id: r for r in cfg.all_rules()}
    no_use = rules["elderly-water.water_no_use_12h"]
    assert (no_use.below, no_use.window_s) == (0.01, 43200)  # type: ignore[union-attr]
    assert rules["elderly-water.water_over_use_day"].above == 2.0  # type: ignore[union-attr]
    leak = rules["elderly-water.water_leak"]
    assert (leak.slot_s, leak.slots) == (1800, 48)  # type: ignore[union-attr]
    tilt, opened = rules["manhole.cover_tilt"], rules["manhole.cover_open"]
    assert (tilt.above, tilt.hold_s) == (10.0, 2.0)  # type: ignore[union-attr]
    assert (opened.above, opened.hold_s, opened.severity) == (90.0, 0.0, "critical")  # type: ignore[union-attr]
    for r in ("smoke-fire.smoke", "smoke-fire.fire"):
        assert (rules[r].severity, rules[r].hold_s) == ("critical", 0.0)


def test_pack_parameters_points_selector_and_disable() -> None:
    cfg = RulesConfig.model_validate(
        {
            "packs": [
                {
                    "name": "manhole",
                    "params": {"tilt_deg": 15.0},
                    "points": {"tilt": "angle"},
                    "select": {"tags": ["sewer"]},
                    "disable": ["gas_h2s"],
                }
            ]
        }
    )
    rules = {r.id: r for r in cfg.all_rules()}
    assert "manhole.gas_h2s" not in rules
    tilt = rules["manhole.cover_tilt"]
    assert (tilt.above, tilt.point, tilt.select.tags) == (15.0, "angle", ("sewer",))  # type: ignore[union-attr]


def test_errors_carry_key_paths() -> None:
    errs = errors({"rules": [{"id": "x", "kind": "threshold", "point": "p"}]})
    assert errs[0][0] == "rules.0.threshold" and "above" in errs[0][1]
    errs = errors({"rules": [{"id": "x", "kind": "thresold", "point": "p"}]})
    assert errs[0][0] == "rules.0" and "thresold" in errs[0][1]
    errs = errors({"rules": [{"id": "x", "kind": "threshold", "point": "p", "above": 1, "hold_s": -1}]})
    assert errs[0][0] == "rules.0.threshold.hold_s"
    errs = errors({"rules": [{"id": "x", "kind": "boolean", "point": "p", "colour": "red"}]})
    assert errs[0][0] == "rules.0.boolean.colour"
    errs = errors(
        {"rules": [{"id": "x", "kind": "consumption", "point": "p", "window": "day", "tz": "Mars/Base"}]}
    )
    assert "Mars/Base" in errs[0][1]
    errs = errors({"packs": [{"name": "no-such-pack"}]})
    assert errs[0][0] == "packs.0" and "shipped packs" in errs[0][1]
    errs = errors({"packs": [{"name": "manhole", "params": {"tilt": 3}}]})
    assert errs[0][0] == "packs.0" and "no parameters ['tilt']" in errs[0][1]
    errs = errors({"packs": [{"name": "manhole", "params": {"tilt_deg": "steep"}}]})
    assert errs[0][0] == "packs.0" and "cover_tilt" in errs[0][1]
    errs = errors({"schedules": [{"id": "q", "start": "25:00", "end": "06:00"}]})
    assert errs[0][0] == "schedules.0.start"
    errs = errors({"contacts": [{"id": "c", "phone": "call me"}]})
    assert errs[0][0] == "contacts.0.phone"


def test_cross_references_are_checked() -> None:
    base = {"id": "a", "kind": "boolean", "point": "p"}
    (err,) = errors({"rules": [base, {**base}]})
    assert "duplicate rule ids: ['a']" in err[1]
    (err,) = errors({"rules": [base, {"id": "c", "kind": "composite", "mode": "all", "of": ["a", "zz"]}]})
    assert "unknown rule zz" in err[1]
    (err,) = errors({"rules": [{**base, "suppress_during": ["night"], "escalate": ["son"]}]})
    assert "unknown schedule night" in err[1] and "unknown contact son" in err[1]
    (err,) = errors({"rules": [base], "actions": [{"id": "x", "on": ["b"], "point": "v", "value": 1}]})
    assert "action x: `on` names unknown rule b" in err[1]


def test_bad_pack_files(tmp_path: Path) -> None:
    bad = tmp_path / "bad.toml"
    bad.write_text('id = "other"\ndescription = "d"\nsource = "s"\n')
    (err,) = errors({"packs": [{"name": "bad", "path": str(bad)}]})
    assert "must equal the file stem" in err[1]
    bad.write_text('id = "bad"\ndescription = "d"\n')
    (err,) = errors({"packs": [{"name": "bad", "path": str(bad)}]})
    assert "source" in err[1]
    bad.write_text(
        'id = "bad"\ndescription = "d"\nsource = "s"\n[[rules]]\nid = "r"\nkind = "boolean"\npoint = "$p"\n'
    )
    (err,) = errors({"packs": [{"name": "bad", "path": str(bad)}]})
    assert "$p is not defined" in err[1]
    bad.write_text("id = [")
    (err,) = errors({"packs": [{"name": "bad", "path": str(bad)}]})
    assert "cannot read rule pack" in err[1]


def test_check_rules_against_devices() -> None:
    devices = [dev("m1", points=("volume",)), dev("m2", points=("flow",))]
    cfg = RulesConfig.model_validate(
        {
            "packs": [{"name": "elderly-water", "select": {"devices": ["m1", "ghost"]}}],
            "rules": [
                {
                    "id": "r",
                    "kind": "threshold",
                    "point": "volume",
                    "above": 1,
                    "select": {"devices": ["m2"]},
                },
                {"id": "s", "kind": "boolean", "point": "x", "select": {"profiles": ["nobody"]}},
            ],
            "actions": [{"id": "a", "on": ["r"], "device": "m9", "point": "valve", "value": False}],
            "away": ["m7"],
        }
    )
    issues = check_rules(cfg, devices, "gw.toml")
    assert all(isinstance(i, ConfigIssue) and i.file == "gw.toml" for i in issues)
    paths = {i.path: i.message for i in issues}
    assert "unknown device 'ghost'" in paths["rules.packs[0].select.devices[1]"]
    assert "has no point 'volume'" in paths["rules.rules[0].point"]
    assert "selects no device" in paths["rules.rules[1].select"]
    assert "unknown device 'm9'" in paths["rules.actions[0].device"]
    assert "unknown device 'm7'" in paths["rules.away[0]"]
    assert cfg.check(devices, "gw.toml") == issues


def test_example_rules_table_in_the_docs_is_valid() -> None:
    doc = (Path(__file__).parents[2] / "docs" / "rules.md").read_text(encoding="utf-8")
    block = doc.split("```toml\n", 1)[1].split("```", 1)[0]
    data = tomllib.loads(block)
    cfg = RulesConfig.model_validate(data["rules"])
    assert cfg.packs and cfg.actions and cfg.schedules and cfg.contacts


def _gateway_toml(tmp_path: Path, rules: str) -> Path:
    example = (Path(__file__).parents[2] / "config" / "examples" / "street-manholes-ble.toml").read_text()
    lines = []
    for line in example.splitlines():
        if line.startswith("path ="):
            line = f'path = "{tmp_path / "gw.db"}"'
        elif line.startswith("socket ="):
            line = f'socket = "{tmp_path / "gw.sock"}"'
        elif line.startswith("key_file"):
            line = 'key = "00112233445566778899aabbccddeeff"'
        lines.append(line)
    path = tmp_path / "gw.toml"
    path.write_text("\n".join(lines) + "\n" + rules)
    return path


def test_the_gateway_config_loader_reports_rules_errors_with_key_paths(tmp_path: Path) -> None:
    from citynerve.gateway.api import ConfigError
    from citynerve.gateway.config import load_config

    rules = """
[rules]
[[rules.packs]]
name = "manhole"
select = { profiles = ["bthome-manhole-cover"] }

[[rules.rules]]
id = "x"
kind = "threshold"
point = "tilt"
above = 5
select = { devices = ["mh-0001", "ghost"] }
hold_s = -1
"""
    with pytest.raises(ConfigError) as info:
        load_config(_gateway_toml(tmp_path, rules))
    paths = [i.path for i in info.value.issues]
    assert paths == ["rules.rules[0].threshold.hold_s"]  # cross-checks need a valid table first


def test_loader_cross_checks_and_engine_on_loaded_devices(tmp_path: Path) -> None:
    from citynerve.gateway.api import ConfigError
    from citynerve.gateway.config import load_config
    from citynerve.gateway.rules import RuleEngine

    rules = """
[rules]
[[rules.packs]]
name = "manhole"
select = { profiles = ["bthome-manhole-cover"] }

[[rules.rules]]
id = "x"
kind = "threshold"
point = "tilt"
above = 5
select = { devices = ["mh-0001", "ghost"] }
"""
    with pytest.raises(ConfigError) as info:
        load_config(_gateway_toml(tmp_path, rules))
    assert [(i.path, i.message) for i in info.value.issues] == [
        ("rules.rules[0].select.devices[1]", "unknown device 'ghost'")
    ]
    cfg = load_config(_gateway_toml(tmp_path, rules.replace(', "ghost"', "")))
    engine = RuleEngine(cfg.rules, {d.id: d for d in cfg.devices})
    # The profile's points decide which pack rules each cover gets (no ch4/h2s analog sensors here).
    assert "manhole.cover_tilt|mh-0001" in engine.instances and "x|mh-0001" in engine.instances
    assert "manhole.gas_ch4|mh-0001" not in engine.instances
    assert "manhole.gas|mh-0002" in engine.instances


def test_pack_rules_for_other_classes_are_not_asked_of_devices_selected_by_id() -> None:
    """With the profiles' classes known, a meter selected by id is held to the rules written for its
    class only: a single-phase meter is not asked for `current_a`, a three-phase one for `current`;
    a three-phase meter without phase B current is still refused. Without the classes every rule
    that is not optional is asked (a profile of unknown class)."""
    one = dev("m1", points=("voltage", "current", "energy_import", "power"), profile="p1")
    three = ("voltage_a", "voltage_b", "voltage_c", "current_a", "current_b", "current_c", "energy_import")
    cfg = RulesConfig.model_validate(
        {"packs": [{"name": "electricity", "select": {"devices": ["m1", "m3"]}}]}
    )
    classes = {"p1": "electricity-meter-1ph", "p3": "electricity-meter-3ph"}
    assert check_rules(cfg, [one, dev("m3", points=three, profile="p3")], "gw.toml", classes) == []
    no_b = dev("m3", points=[p for p in three if p != "current_b"], profile="p3")
    issues = check_rules(cfg, [one, no_b], "gw.toml", classes)
    assert [i.path for i in issues] == ["rules.packs[0](electricity.over_current_b).point"]
    strict = {i.path for i in check_rules(cfg, [one, dev("m3", points=three, profile="p3")], "gw.toml")}
    assert "rules.packs[0](electricity.over_current_a).point" in strict
    assert "rules.packs[0](electricity.over_current).point" in strict


def test_two_loads_of_the_same_packs_are_equal_and_a_changed_pack_is_not(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """`reload` compares `[rules]` of the running and the re-read config to decide on a restart:
    with packs the two used to differ (a loaded pack compared by identity), so every reload and
    remote config change with packs restarted the service. A change of a param, of a local pack
    file or of a shipped pack updated on disk between the loads still counts."""
    shipped = tmp_path / "shipped"
    shutil.copytree(PACKS_DIR, shipped)
    monkeypatch.setattr(rules_config, "PACKS_DIR", shipped)  # a shipped pack an update may rewrite
    local = tmp_path / "mine.toml"
    local.write_text(
        'id = "mine"\ndescription = "d"\nsource = "s"\n[params]\nlimit = 5\n'
        '[[rules]]\nid = "high"\nkind = "threshold"\npoint = "p"\nabove = "$limit"\n'
    )
    table = {
        "packs": [
            {"name": "smoke-fire", "points": {"smoke": "smoke_alarm"}},
            {"name": "mine", "path": str(local), "params": {"limit": 7}},
        ]
    }

    def load() -> RulesConfig:
        return RulesConfig.model_validate(table)

    running = load()
    assert load() == running
    table["packs"][1]["params"] = {"limit": 8}
    assert load() != running
    table["packs"][1]["params"] = {"limit": 7}
    local.write_text(local.read_text().replace('description = "d"', 'description = "changed"'))
    assert load() != running  # the expanded rules are the same: the pack file is not
    local.write_text(local.read_text().replace('description = "changed"', 'description = "d"'))
    assert load() == running
    smoke = shipped / "smoke-fire.toml"
    smoke.write_text(smoke.read_text().replace("fault_hold_s = 60", "fault_hold_s = 90"))
    assert load() != running


def _source_rule_names() -> list[str]:
    """The `rule` every event source outside the rule engine stamps on its alarms."""
    from citynerve.gateway.bus.events import FAULT_RULE, OFFLINE
    from citynerve.gateway.operator import OPERATOR_RULE
    from citynerve.gateway.pipeline._pipeline import RULE_FAULT_RULE
    from citynerve.gateway.remoteconfig.manager import CONFIG_RULE
    from citynerve.gateway.uplink.certexpiry import EXPIRY_RULE
    from citynerve.gateway.uplink.tlsrotate import CREDENTIALS_RULE
    from citynerve.gateway.wiring import BUS_FAULT_RULE

    return [
        OFFLINE.rule, FAULT_RULE, BUS_FAULT_RULE, RULE_FAULT_RULE, CONFIG_RULE, CREDENTIALS_RULE,
        EXPIRY_RULE, OPERATOR_RULE, "update", "panel:gst", "bthome.smoke",
    ]  # fmt: skip


@pytest.mark.parametrize("name", _source_rule_names())
def test_a_rule_id_that_is_a_sources_own_name_is_refused(name: str) -> None:
    """A rule named `operator` (or `bus.offline`, `panel:...`) would make that source's alarms the
    engine's: the registry marks them raised by a configured rule and clears them at a restart's
    reconcile when the engine does not hold them (an operator's maintenance alarm, a bus fault)."""
    (err,) = errors({"rules": [{"id": name, "kind": "boolean", "point": "p"}]})
    assert f"rule id {name!r} is the gateway's own" in err[1]
