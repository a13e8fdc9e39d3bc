"""`[gateway] tz` is the zone of every rule, pack, schedule and household in `[rules]` that does not
set its own: a site in Zurich that set its zone once does not judge "up by 08:30" in Shanghai's
hours because one pack kept its default."""

from __future__ import annotations

from pathlib import Path

from citynerve.gateway.config import load_config
from citynerve.gateway.rules.config import RoutineRule, RulesConfig
from citynerve.gateway.rules.site_zone import ZONED_KINDS, with_site_zone

ZURICH = "Europe/Zurich"
GATEWAY = """
[gateway]
id = "gw-1"
org = { city = "310100", district = "310106", street = "310106013" }
"""
RULES = """
[[rules.packs]]
name = "electricity"
[[rules.packs]]
name = "elderly-bed"
[[rules.schedules]]
id = "quiet"
start = "22:00"
end = "06:00"
[[rules.schedules]]
id = "quiet-shanghai"
start = "22:00"
end = "06:00"
tz = "Asia/Shanghai"
"""


def zones(cfg: RulesConfig) -> dict[str, str]:
    out = {s.id: s.tz for s in cfg.schedules}
    out.update({r.id: r.tz for r in cfg.all_rules() if hasattr(r, "tz")})
    out.update({h.id: h.tz for h in cfg.households})
    return out


def test_the_sites_zone_is_the_default_of_every_tz_in_rules(tmp_path: Path) -> None:
    path = tmp_path / "gw.toml"
    path.write_text(GATEWAY + f'tz = "{ZURICH}"\n' + RULES)
    rules = load_config(path).rules
    assert rules is not None
    found = zones(rules)
    assert found.pop("quiet-shanghai") == "Asia/Shanghai"  # set on purpose: kept
    assert "electricity.night_use" in found and "elderly-bed.not_up" in found
    assert set(found.values()) == {ZURICH}, found
    # Without [gateway] tz, Asia/Shanghai as before.
    path.write_text(GATEWAY + RULES)
    rules = load_config(path).rules
    assert rules is not None and set(zones(rules).values()) == {"Asia/Shanghai"}


def test_inline_rules_households_and_a_packs_own_tz() -> None:
    raw = {
        "packs": [{"name": "elderly-water", "params": {"tz": "Asia/Tokyo"}}, {"name": "manhole"}],
        "rules": [
            {"id": "up", "kind": "routine", "point": "in_bed", "mode": "up_by", "by": "08:30"},
            {"id": "hot", "kind": "threshold", "point": "temperature", "above": 60},
        ],
        "households": [{"id": "h-1", "bed": "bed-1"}, {"id": "h-2", "bed": "bed-2", "tz": "UTC"}],
        "schedules": "not a list: left for validation to report",
    }
    out = with_site_zone(raw, ZURICH)
    assert out["packs"][0]["params"] == {"tz": "Asia/Tokyo"} and "params" not in out["packs"][1]
    assert out["rules"][0]["tz"] == ZURICH and "tz" not in out["rules"][1]
    assert [h["tz"] for h in out["households"]] == [ZURICH, "UTC"]
    assert out["schedules"] == raw["schedules"] and "tz" not in raw["rules"][0]  # a copy
    del out["schedules"]
    cfg = RulesConfig.model_validate(out)
    routine = next(r for r in cfg.rules if r.id == "up")
    assert isinstance(routine, RoutineRule) and routine.tz == ZURICH
    assert {"routine", "anomaly", "consumption"} <= ZONED_KINDS
