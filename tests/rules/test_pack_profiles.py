"""Shipped rule packs reach the shipped profiles they are written for: profiles of one device class
share one point vocabulary, every event a pack raises for a class can be raised for every profile of
that class, and messages are built from the configured parameters."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from citynerve.gateway import shipped
from citynerve.gateway.config import Profile, read_toml
from citynerve.gateway.rules import PACKS_DIR, RulePack, Selector, load_pack

PROFILES = {p.stem: Profile.model_validate(read_toml(p)) for p in sorted(shipped.profiles().glob("*.toml"))}
PACKS = {p.stem: load_pack(p) for p in sorted(PACKS_DIR.glob("*.toml"))}
# Rule fields whose parameter a reader of the event needs to know (the limit and how long it held).
SHOWN = ("above", "below", "hold_s", "window_s", "after_s", "slots", "slot_s", "hours")


def test_every_profile_has_a_class_and_every_pack_names_its_classes() -> None:
    assert all(p.device_class for p in PROFILES.values()), [
        i for i, p in PROFILES.items() if not p.device_class
    ]
    classes = {p.device_class for p in PROFILES.values()}
    for pack in PACKS.values():
        assert pack.classes, pack.id
        assert set(pack.classes) <= classes, (pack.id, set(pack.classes) - classes)


def _binds(rule: dict[str, object], profile: Profile) -> bool:
    point = rule.get("point")
    return not point or point in profile.points


@pytest.mark.parametrize(
    ("pack", "profile"),
    [
        (pack, profile)
        for pack in sorted(PACKS)
        for profile in sorted(PROFILES)
        if PROFILES[profile].device_class in PACKS[pack].classes
    ],
)
def test_pack_reaches_every_profile_of_its_classes(pack: str, profile: str) -> None:
    rp, prof = PACKS[pack], PROFILES[profile]
    rules = [r for r in rp.rules if prof.device_class in rp.rule_classes(r)]
    assert rules, f"pack {pack} has no rule for class {prof.device_class}"
    events: dict[str, list[dict[str, object]]] = {}
    for r in rules:
        events.setdefault(str(r.get("event", r["id"])), []).append(r)
    for event, alternatives in events.items():
        if all(r.get("optional") for r in alternatives):
            continue  # a point only some models have (a methane sensor, a tamper switch)
        bound = [r["id"] for r in alternatives if _binds(r, prof)]
        missing = [r.get("point") for r in alternatives if not r.get("optional")]
        assert bound, f"pack {pack}: event {event} reaches no point of {profile} (wants {missing})"
    # And every point a required rule names exists: the per-phase rules of a three-phase meter all bind.
    for r in rules:
        if not r.get("optional") and not _binds(r, prof):
            same = [o for o in rules if o.get("event") == r.get("event") and _binds(o, prof)]
            assert same, f"pack {pack}: rule {r['id']} point {r.get('point')!r} not in {profile}"


def test_the_electricity_pack_reaches_three_phase_meters_per_phase() -> None:
    rp = PACKS["electricity"]
    for profile in ("dlt645-three-phase", "modbus-power-meter-3ph"):
        prof = PROFILES[profile]
        bound = {r["id"] for r in rp.rules if prof.device_class in rp.rule_classes(r) and _binds(r, prof)}
        assert {f"over_current_{p}" for p in "abc"} <= bound, (profile, bound)
        assert {f"voltage_band_{p}" for p in "abc"} <= bound and "night_use" in bound


@pytest.mark.parametrize("pack", sorted(PACKS))
def test_messages_are_built_from_the_parameters(pack: str) -> None:
    rp: RulePack = PACKS[pack]
    for r in rp.rules:
        used = {str(v)[1:] for k, v in r.items() if k in SHOWN and re.fullmatch(r"\$\w+", str(v))}
        shown = set(re.findall(r"\$\{(\w+)", str(r.get("message", ""))))
        assert used <= shown, f"pack {pack}: rule {r['id']}: message does not show {sorted(used - shown)}"
        assert "over a minute" not in str(r.get("message", ""))


def test_changed_parameters_change_the_message() -> None:
    rules = PACKS["electricity"].expand(
        {"current_hold_s": 300, "voltage_low_v": 200.0}, {}, Selector(profiles=("dlt645-single-phase",))
    )
    by_id = {r.id: r for r in rules}
    assert by_id["electricity.over_current"].message == "current above 40 A (the breaker rating) for 300 s"
    assert "outside 200-235.4 V" in by_id["electricity.voltage_band_b"].message
    water = {r.id: r for r in PACKS["elderly-water"].expand({"no_use_window_s": 21600}, {}, Selector())}
    assert water["elderly-water.water_no_use_12h"].message.startswith(
        "less than 0.01 m3 of water used in 6 h"
    )


def test_pack_files_with_unknown_classes_are_refused(tmp_path: Path) -> None:
    path = tmp_path / "p.toml"
    path.write_text(
        'id = "p"\ndescription = "d"\nsource = "s"\nclasses = ["a"]\n'
        '[[rules]]\nid = "r"\nfor_classes = ["b"]\nkind = "boolean"\nevent = "e"\npoint = "x"\n'
    )
    with pytest.raises(ValueError, match="for_classes"):
        load_pack(path)
