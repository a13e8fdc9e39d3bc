"""Where a rule, a pack parameter, an action or a household expects a number, a TOML boolean is a
mistake: `citynerve config check` (a real process) refuses it with its key path. Pydantic took
`true` for 1: `hold_s = true` was a 1 s hold, a pack's `fault_hold_s = true` too, `above = true`
a threshold of 1. Ints still work (`hold_s = 5`)."""

from __future__ import annotations

from pathlib import Path

from tests.rules.test_action_targets import citynerve, gateway


def check(folder: Path, rules: str) -> tuple[int, list[str]]:
    path = gateway(folder, rules)
    code, out = citynerve("config", "check", str(path), cwd=folder)
    lines = out.replace("\n    ", " ").splitlines()
    return code, [line.strip().removeprefix(f"{path}: ") for line in lines if line.startswith("  ")]


def test_a_boolean_for_a_number_is_refused_with_its_key_path(tmp_path: Path) -> None:
    code, issues = check(
        tmp_path,
        """
        [[rules.rules]]
        id = "x"
        kind = "threshold"
        point = "alarm_state"
        above = true
        hold_s = true

        [[rules.rules]]
        id = "y"
        kind = "anomaly"
        point = "alarm_state"
        warmup = false
        hours = [true, 6]

        [[rules.packs]]
        name = "smoke-fire"
        params = { fault_hold_s = true }

        [[rules.actions]]
        id = "a"
        on = ["leak"]
        device = "riser-1"
        point = "valve"
        value = true
        min_interval_s = true
        """,
    )
    assert code == 2
    assert issues == [
        "rules.packs[0]: params.fault_hold_s: expected a number (the pack's default: 60), found the "
        "boolean true",
        "rules.rules[2] (id 'x').threshold.hold_s: expected a number, found the boolean true",
        "rules.rules[2] (id 'x').threshold.above: expected a number, found the boolean true",
        "rules.rules[3] (id 'y').anomaly.warmup: expected a number, found the boolean false",
        "rules.rules[3] (id 'y').anomaly.hours[0]: expected a number, found the boolean true",
        "rules.actions[0] (id 'a').min_interval_s: expected a number, found the boolean true",
    ], issues


def test_ints_and_floats_are_still_numbers(tmp_path: Path) -> None:
    code, issues = check(
        tmp_path,
        """
        [[rules.rules]]
        id = "x"
        kind = "threshold"
        point = "alarm_state"
        above = 1
        hold_s = 5
        clear_hold_s = 2.5

        [[rules.packs]]
        name = "smoke-fire"
        params = { fault_hold_s = 30 }
        """,
    )
    assert (code, issues) == (0, [])
